"""Who may set what: the user's own layers, and workspace files the user has trusted.

A workspace file (`labls.toml`, `[tool.labls]`) is written by whoever wrote the repository, and
an agent works in it: on its own it may only tighten. `tightens(key, before, after)` says
whether a value is at least as strict as the one the user's layers gave. To loosen, the user
trusts the file the way direnv trusts an `.envrc`: `labls trust` records a fingerprint of its
settings (and its path) in `$XDG_CONFIG_HOME/labls/trusted.json`; any change to those settings
makes it untrusted again until the user re-trusts it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

_ISOLATION_RANK = {"none": 0, "unshare": 1, "auto": 2, "bwrap": 2}


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "labls"


def user_config_path() -> Path:
    return config_dir() / "config.toml"


def store_path() -> Path:
    return config_dir() / "trusted.json"


# --- tightening ----------------------------------------------------------------------------------


def _cap(before: Any, after: Any) -> bool:
    """A limit where 0 means "no cap" (or the machine's default): lower and non-zero tightens."""
    return bool(after == before or (after > 0 and (before == 0 or after <= before)))


def _inside_relative(before: Any, after: Any) -> bool:
    path = Path(str(after))
    return after == before or (not path.is_absolute() and ".." not in path.parts
                               and ".git" not in path.parts)


RULES: dict[str, Callable[[Any, Any], bool]] = {
    "run.isolation": lambda b, a: _ISOLATION_RANK[a] >= _ISOLATION_RANK[b],
    "run.network": lambda b, a: a == "none" or a == b,
    "run.env": lambda b, a: set(a) <= set(b),
    "run.memory_mb": _cap,
    "run.max_processes": _cap,
    "run.disk_mb": _cap,
    "run.max_concurrent": _cap,
    "run.max_timeout_sec": lambda b, a: a <= b,
    "run.kill_grace_sec": lambda b, a: a <= b,
    "run.python": lambda b, a: a == b,
    "run.gpus": lambda b, a: a == b or (isinstance(a, list) and (b == "auto" or set(a) <= set(b))),
    "dataset_cache_root": lambda b, a: a == b,
    "state_dir": _inside_relative,
    "metric.name": lambda b, a: a == b,
    "metric.goal": lambda b, a: a == b,
    "metric.min_delta": lambda b, a: a >= b,
    "metric.require_provenance": lambda b, a: a >= b,
    "loop.model": lambda b, a: a == b,
    "loop.prepare": lambda b, a: a == b,
    "loop.baseline_repeats": lambda b, a: a >= b,
    "edit.protect": lambda b, a: set(a) >= set(b),
    "run.hide": lambda b, a: set(a) >= set(b),
}
# Every other setting (`run.timeout_sec` within the ceiling, `datasets`, `loop.script`, ...)
# neither loosens the sandbox nor changes the judgement: a workspace file sets it freely.


def tightens(key: str, before: Any, after: Any) -> bool:
    rule = RULES.get(key)
    return True if rule is None else rule(before, after)


# --- the user's trust in workspace files -----------------------------------------------------


def fingerprint(source: Path, settings: dict[str, Any]) -> str:
    blob = json.dumps({"path": str(source.resolve()), "settings": settings}, sort_keys=True,
                      default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _load_store() -> dict[str, str]:
    try:
        data = json.loads(store_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def status(source: Path, settings: dict[str, Any]) -> str:
    """`trusted`, `changed` (trusted once, different now) or `untrusted`."""
    recorded = _load_store().get(str(source.resolve()))
    if recorded is None:
        return "untrusted"
    return "trusted" if recorded == fingerprint(source, settings) else "changed"


def record(source: Path, settings: dict[str, Any] | None) -> None:
    """Trust `source` with exactly these settings (None: forget it)."""
    store = _load_store()
    key = str(source.resolve())
    if settings is None:
        store.pop(key, None)
    else:
        store[key] = fingerprint(source, settings)
    path = store_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".trusted.", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(store, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
