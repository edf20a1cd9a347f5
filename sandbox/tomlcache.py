"""TOML files parsed once per content: `load(path)` is `tomllib.loads` of the file's text, read
from a small JSON cache when that exact text was parsed before.

`labls run` reads the workspace's labls.toml (or pyproject.toml) before its run can start, and
importing tomllib costs ~9 ms there (its regular expressions compile at import); a cache hit
costs a file read. The key is the whole text, so a hit returns exactly what parsing would.
Values JSON cannot hold (TOML dates and times) are not cached. The cache is a best effort:
missing, corrupt or unwritable, it is ignored. One file per TOML file, under
`$XDG_CACHE_HOME/labls/toml/` (default `~/.cache/labls/toml/`).
"""

from __future__ import annotations

import contextlib
import json
import os
import zlib
from pathlib import Path


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "labls" / "toml"


def load(path: Path) -> dict[str, object]:
    """The parsed file; raises OSError, UnicodeDecodeError or tomllib.TOMLDecodeError (a
    ValueError) as tomllib would."""
    text = path.read_text(encoding="utf-8")
    key = str(path.resolve())
    entry = cache_dir() / f"{zlib.crc32(key.encode()):08x}.json"
    with contextlib.suppress(OSError, ValueError):
        cached = json.loads(entry.read_text(encoding="utf-8"))
        if cached.get("path") == key and cached.get("text") == text:
            data = cached["data"]
            if isinstance(data, dict):
                return data
    import tomllib

    data = tomllib.loads(text)
    _store(entry, {"path": key, "text": text, "data": data})
    return data


def _store(entry: Path, value: dict[str, object]) -> None:
    try:
        encoded = json.dumps(value)
    except (TypeError, ValueError):  # a TOML date or time: parsed again next time
        return
    tmp = entry.with_name(f".{entry.name}.{os.getpid()}.tmp")
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(encoded, encoding="utf-8")
        os.replace(tmp, entry)  # readers see the old entry or the new one, never half of one
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
