"""Command arguments: structure the raw JSON object into typed params, or fail with -32602.

pygls's own structuring of annotated command arguments gives an opaque "While structuring X"
message; here every failure names the field (in the camelCase the client sent) and the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, TypeVar

import cattrs
from pygls.exceptions import JsonRpcInvalidParams

T = TypeVar("T")

_converter = cattrs.Converter(forbid_extra_keys=True)


def _strict(kind: type, *accepted: type) -> None:
    """No silent coercion: "5" is not a number and 5 is not a string."""

    def hook(value: Any, _: Any) -> Any:
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, accepted):
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__} {value!r}")
        return kind(value)

    _converter.register_structure_hook(kind, hook)


_strict(str, str)
_strict(int, int)
_strict(float, int, float)
_strict(bool, bool)


def _gpus(value: Any, _: Any) -> int | list[int] | None:
    """`gpus`: how many (an int >= 0) or which (a list of indices)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, list) and all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value):
        return list(value)
    raise TypeError(f"expected a GPU count or a list of GPU indices, got {value!r}")


_converter.register_structure_hook(int | list[int] | None, _gpus)


def _strings(value: Any, _: Any) -> list[str]:
    """A list of strings, never a string iterated into characters."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"expected a list of strings, got {value!r}")
    return list(value)


_converter.register_structure_hook_func(lambda t: t == list[str], _strings)


def structure(args: tuple[Any, ...], cls: type[T], command: str) -> T:
    """`arguments` must be a one-element list holding an object (or empty, for all-default)."""
    if len(args) == 0:
        raw: Any = {}
    elif len(args) == 1:
        raw = args[0]
    else:
        raise JsonRpcInvalidParams(
            f"{command}: arguments must be a list holding one object, got {len(args)} elements"
        )
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise JsonRpcInvalidParams(
            f"{command}: arguments[0] must be an object, got {type(raw).__name__}"
        )
    from labls.sandbox.config import snake_case  # not at import: keeps `initialize` bare

    snake = {snake_case(str(k)): v for k, v in raw.items()}
    try:
        return _converter.structure(snake, cls)
    except cattrs.ClassValidationError as exc:
        reasons = [_camelise(m) for m in cattrs.transform_error(exc, path="")]
        raise JsonRpcInvalidParams(f"{command}: " + "; ".join(reasons)) from None
    except (TypeError, ValueError) as exc:
        raise JsonRpcInvalidParams(f"{command}: {exc}") from None


def _camelise(message: str) -> str:
    from labls.sandbox.config import camel_case

    # "invalid value for type, expected int @ .timeout_sec" → "... @ timeoutSec"
    return re.sub(r"@ \.?([\w.\[\]'\"]+)", lambda m: "@ field " + camel_case(m.group(1)),
                  message)


def invalid(command: str, field_name: str, reason: str) -> JsonRpcInvalidParams:
    return JsonRpcInvalidParams(f"{command}: field {field_name!r} {reason}")


# --- the params of each command ------------------------------------------------------------------


@dataclass
class Empty:
    pass


@dataclass
class PromptRenderParams:
    template: str
    vars: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunStartParams:
    script: str
    args: list[str] = field(default_factory=list)
    timeout_sec: float | None = None
    gpus: int | list[int] | None = None
    env: dict[str, str] = field(default_factory=dict)
    label: str = ""
    wait: bool = False


@dataclass
class RunIdParams:
    run_id: str


@dataclass
class RunGetParams:
    run_id: str
    fields: list[str] | None = None  # the record's fields to answer (camelCase); all if None


@dataclass
class RunListParams:
    limit: int = 50
    state: str | None = None


@dataclass
class RunCompareParams:
    run_id: str
    baseline_id: str | None = None


@dataclass
class EditApplyParams:
    format: str
    text: str | None = None
    path: str | None = None
    edit: dict[str, Any] | None = None
    dry_run: bool = False


@dataclass
class ExperimentStepParams:
    hypothesis: str
    edit: dict[str, Any]
    script: str | None = None
    timeout_sec: float | None = None
    args: list[str] = field(default_factory=list)


@dataclass
class LoopStartParams:
    iterations: int = 3
    time_budget_sec: float | None = None
    model: str | None = None
    program: str | None = None
    script: str | None = None
    prepare: str | None = None
    prepare_timeout_sec: float = 600.0


@dataclass
class LoopIdParams:
    loop_id: str
