"""The one converter from labls's values to the wire (docs/PROTOCOL.md).

A dataclass becomes a JSON object of its fields, each named in camelCase unless the field's
metadata names it otherwise (`named("runId")`) or leaves it out (`named(None)`); a class whose
answer carries values computed from its fields returns them from a `wire_extra()` method. Enums
travel as their values, a non-finite float as null (strict JSON has no NaN), dicts and lists
element by element. A flat map of finite numbers and strings (a run's metrics, however many) is
passed as it is, never copied.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from enum import Enum
from typing import Any

_PLAIN = (str, int, float, bool, type(None))


def named(name: str | None) -> dict[str, str | None]:
    """Field metadata: the field's name on the wire, or None to leave it off the wire."""
    return {"wire": name}


def to_wire(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in fields(value):
            name = f.metadata.get("wire", camel_case(f.name))
            if name is not None:
                out[name] = to_wire(getattr(value, f.name))
        extra = getattr(value, "wire_extra", None)
        if extra is not None:
            out.update(to_wire(extra()))
        return out
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float):
        return value if value - value == 0.0 else None
    if isinstance(value, dict):
        if all(type(v) in _PLAIN and (type(v) is not float or v - v == 0.0)
               for v in value.values()):
            return value  # flat and finite (metrics, their sources): nothing to copy
        return {k: to_wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_wire(v) for v in value]
    return value


def camel_case(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)
