"""Prompt templates as data (Jinja2 files in `templates/`) and one small `render()`.

StrictUndefined: a variable the template uses but nobody supplied is an error naming it, never
an empty string silently pasted into a prompt.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2


class PromptError(ValueError):
    """A template that does not exist, or a variable it needs that was not given."""


@cache
def template_names() -> list[str]:
    folder = resources.files(__package__).joinpath("templates")
    return sorted(
        p.name.removesuffix(".j2")
        for p in folder.iterdir()
        if p.name.endswith(".j2") and not p.name.startswith("_")
    )


@cache
def _environment() -> jinja2.Environment:
    import jinja2  # imported on first render: it is a third of the server's own start-up cost

    return jinja2.Environment(
        loader=jinja2.PackageLoader(__package__, "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(name: str, context: dict[str, Any]) -> str:
    names = template_names()
    if name not in names:
        raise PromptError(f"unknown template {name!r}; valid templates: {', '.join(names)}")
    import jinja2

    try:
        return _environment().get_template(f"{name}.j2").render(**context)
    except jinja2.UndefinedError as exc:
        raise PromptError(f"template {name!r} needs a variable that was not given: {exc}") from exc
