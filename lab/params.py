"""The operations' arguments: one typed model per operation, for every front-end.

`structure` turns the raw JSON object a client sent (camelCase) into the model or raises
`LabError` naming the field and the reason (no silent coercion); `json_schema` derives the JSON
Schema an MCP client sees from the same model. The language server turns `LabError` into
-32602, the MCP server into a tool error, the CLI into exit code 2: one message for all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, TypeVar

import cattrs

from .errors import LabError

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


def structure(raw: Any, cls: type[T], command: str) -> T:
    """`raw` must be an object (None or absent: all defaults)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise LabError(f"{command}: arguments[0] must be an object, got {type(raw).__name__}")
    from labls.sandbox.config import snake_case  # not at import: keeps `initialize` bare

    snake = {snake_case(str(k)): v for k, v in raw.items()}
    try:
        return _converter.structure(snake, cls)
    except cattrs.ClassValidationError as exc:
        reasons = [_camelise(m) for m in cattrs.transform_error(exc, path="")]
        raise LabError(f"{command}: " + "; ".join(reasons)) from None
    except (TypeError, ValueError) as exc:
        raise LabError(f"{command}: {exc}") from None


def _camelise(message: str) -> str:
    from labls.sandbox.wire import camel_case

    # "invalid value for type, expected int @ .timeout_sec" → "... @ timeoutSec"
    return re.sub(r"@ \.?([\w.\[\]'\"]+)", lambda m: "@ field " + camel_case(m.group(1)),
                  message)


def invalid(command: str, field_name: str, reason: str) -> LabError:
    return LabError(f"{command}: field {field_name!r} {reason}")


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
    metrics_offset: int = 0  # the page of the metrics to answer: from this one (in order printed)
    metrics_limit: int | None = None  # this many (at most, and by default, PAGE_METRICS)


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


@dataclass
class HistoryParams:
    limit: int = 50


# --- JSON Schema for clients that read one (MCP tools' inputSchema) ------------------------------


def json_schema(cls: type) -> dict[str, Any]:
    """The JSON Schema of a params model: camelCase properties, the fields without a default
    required, no other property allowed (as `structure` forbids them)."""
    import dataclasses
    import typing

    from labls.sandbox.wire import camel_case

    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {}
    required = []
    for f in dataclasses.fields(cls):
        properties[camel_case(f.name)] = _schema_of(hints[f.name])
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(camel_case(f.name))
    schema: dict[str, Any] = {"type": "object", "properties": properties,
                              "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


def _schema_of(kind: Any) -> dict[str, Any]:
    import types
    import typing

    simple = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if kind in simple:
        return {"type": simple[kind]}
    if kind is Any:
        return {}
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (types.UnionType, typing.Union):
        options = [_schema_of(a) for a in args if a is not type(None)]
        nullable = type(None) in args
        if nullable:
            options.append({"type": "null"})
        return options[0] if len(options) == 1 else {"anyOf": options}
    if origin is list:
        return {"type": "array", "items": _schema_of(args[0])}
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema_of(args[1])}
    raise TypeError(f"no JSON Schema for {kind!r}")
