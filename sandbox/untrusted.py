"""Reading what a run left in its reach (probe files, `results.json`, its stack dump): every
such file is hostile input.

A run can put a FIFO (an open that never returns), a symlink to `/dev/zero` or to a host file,
a huge file, a line of gigabytes or a JSON document nested 10^5 deep where labls reads. Here
each costs that one input and a `Problem` naming it, never the record, the queue or the server:
- `read_bytes` walks the path below a trusted folder one component at a time with
  `O_NOFOLLOW` (no symlink anywhere on the way), opens `O_NONBLOCK`, accepts regular files
  only and reads at most `limit` bytes;
- `lines` yields at most `MAX_LINE` characters a line and drops longer ones;
- `loads` parses JSON of bounded depth (`MAX_DEPTH`); a number or a list where an object is
  due is the caller's to refuse.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .wire import named

MAX_FILE = 64 << 20
MAX_LINE = 64 << 10
MAX_DEPTH = 64


@dataclass(frozen=True)
class Problem:
    """One input of the run's that labls refused, for a warning on the record."""

    file: str
    reason: str = field(metadata=named(None))

    def wire_extra(self) -> dict[str, str]:
        return {"code": "hostile-input",
                "message": f"{self.file}: {self.reason}; this input was ignored"}


class Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def read_bytes(base: Path, rel: str, limit: int = MAX_FILE) -> bytes | None:
    """The bytes of `base/rel` (None if it does not exist); `Refused` if it is not a regular
    file reached without symlinks, or is larger than `limit`."""
    parts = [p for p in rel.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise Refused(f"not a plain relative path: {rel!r}")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(base, flags | os.O_DIRECTORY)
    except FileNotFoundError:
        return None
    try:
        for folder in parts[:-1]:
            try:
                next_fd = os.open(folder, flags | os.O_DIRECTORY, dir_fd=fd)
            except FileNotFoundError:
                return None
            except OSError as exc:  # ELOOP/ENOTDIR: a symlink or a file on the way
                raise Refused(f"{folder} is not a folder ({exc.strerror})") from exc
            os.close(fd)
            fd = next_fd
        try:
            file_fd = os.open(parts[-1], flags | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise Refused(f"cannot be opened safely ({exc.strerror})") from exc
    finally:
        os.close(fd)
    with os.fdopen(file_fd, "rb", buffering=0) as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise Refused("not a regular file (a FIFO, device or socket)")
        if info.st_size > limit:
            raise Refused(f"{info.st_size} bytes, more than the {limit} read")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise Refused(f"grew past the {limit} bytes read")
    return data


def lines(data: bytes) -> Iterator[str]:
    """Decoded lines of at most `MAX_LINE` characters; longer ones are skipped."""
    for raw in data.split(b"\n"):
        if len(raw) <= MAX_LINE:
            yield raw.decode("utf-8", "replace")


def loads(text: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """JSON of at most `max_depth` levels; `ValueError` otherwise (never `RecursionError`:
    the parser's own recursion limit stops a 10^5-deep document early)."""
    try:
        value = json.loads(text)
    except RecursionError as exc:
        raise ValueError("JSON nested too deep to parse") from exc
    raw = text.encode() if isinstance(text, str) else text
    # (a document has at most as many levels as it has opening brackets: most need no walk)
    if raw.count(b"[") + raw.count(b"{") > max_depth and _depth(value) > max_depth:
        raise ValueError(f"JSON nested deeper than {max_depth} levels")
    return value


def _depth(value: Any) -> int:
    """Nesting depth, without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item)
    return deepest
