"""The one configuration model of labls.

Layers are merged in order, later wins: built-in defaults → the user's own config file
(`$XDG_CONFIG_HOME/labls/config.toml`) → `[tool.labls]` in the workspace's `pyproject.toml` or
`labls.toml` → `initializationOptions` → `workspace/didChangeConfiguration` (or CLI flags).
Every layer is the user's but the workspace file, which the repository (and the agent working
in it) wrote: unless the user trusted it (`trust.py`), it may only tighten what the layers
before it gave; each loosening key is skipped with a problem saying so.
TOML uses snake_case and the wire uses camelCase; both spellings are accepted at every layer.
A bad value never raises: the field keeps its previous value and a `ConfigProblem` names the key
and the reason, for the server to show the user.

This module lives in the sandbox layer so the engine, the lab and the server read one model; it
has no LSP imports.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import tomlcache, trust


@dataclass
class RunConfig:
    timeout_sec: float = 300.0
    max_timeout_sec: float = 3600.0  # the ceiling for any run's budget, asked by anyone
    kill_grace_sec: float = 5.0
    network: str = "none"
    isolation: str = "auto"
    python: str = "auto"
    gpus: str | list[int] = "auto"
    max_concurrent: int = 0
    memory_mb: int = 0  # 0: three quarters of the machine's memory
    max_processes: int = 1024
    disk_mb: int = 4096  # what the run's folders may grow by; 0: no cap
    env: list[str] = field(default_factory=list)
    hide: list[str] = field(default_factory=list)  # globs a run must not see, beside secrets
    keep: int = 50  # run folders kept whole (newest first, plus kept experiments'); 0: all
    stop_on_nan: bool = True  # a watched metric printed NaN / inf: the run is stopped
    nan_grace_steps: int = 0  # ... after this many more non-finite values of it
    unsaved: str = "warn"  # a script with unsaved editor changes: "warn", "buffer", "refuse"


@dataclass
class MetricConfig:
    name: str = "val_bpb"
    goal: str = "minimize"
    min_delta: float = 0.0
    require_provenance: bool = False  # a keep needs provenance `verified` even without a stamp
    watch: list[str] = field(default_factory=list)  # watched for NaN / inf besides `name`


@dataclass
class DatasetDecl:
    """A user-declared dataset: a folder under the cache root and the files it must hold."""

    path: str
    files: list[str]


@dataclass
class LoopConfig:
    script: str = "train.py"
    model: str = "openai/gpt-4o-mini"
    repair_attempts: int = 2
    baseline_repeats: int = 1
    rebaseline_every: int = 0  # re-run the baseline after this many keeps; 0: never
    prepare: str = ""  # a script run once before a loop; the one run that may write datasets


@dataclass
class EditConfig:
    protect: list[str] = field(default_factory=list)  # globs no edit may touch (an evaluator)


@dataclass
class Config:
    dataset_cache_root: str = "/opt/datasets"
    state_dir: str = ".labls"
    run: RunConfig = field(default_factory=RunConfig)
    metric: MetricConfig = field(default_factory=MetricConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    edit: EditConfig = field(default_factory=EditConfig)
    datasets: dict[str, DatasetDecl] = field(default_factory=dict)

    def state_path(self, workspace: Path) -> Path:
        return (workspace / self.state_dir).resolve()

    def watched_metrics(self) -> frozenset[str]:
        """The metrics whose NaN / inf stops a run (none with `run.stop_on_nan` off)."""
        if not self.run.stop_on_nan:
            return frozenset()
        return frozenset([self.metric.name, *self.metric.watch])


@dataclass(frozen=True)
class ConfigProblem:
    key: str
    reason: str
    outcome: str = "keeping the previous value"

    def __str__(self) -> str:
        return f"labls config: `{self.key}` {self.reason}; {self.outcome}"


# --- validators: each returns the clean value or raises ValueError with the reason -------------


def _positive_number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"must be a number, got {type(v).__name__} {v!r}")
    if not v > 0 or v != v or v == float("inf"):
        raise ValueError(f"must be a positive finite number, got {v!r}")
    return float(v)


def _non_negative_number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or v != v or v < 0:
        raise ValueError(f"must be a number >= 0, got {v!r}")
    return float(v)


def _non_negative_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"must be a whole number >= 0, got {v!r}")
    return v


def _choice(*allowed: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if v not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}; got {v!r}")
        return str(v)

    return check


def _non_empty_str(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f"must be a non-empty string, got {v!r}")
    return v


def _absolute_path(v: Any) -> str:
    if not isinstance(v, str) or not v.startswith("/"):
        raise ValueError(f"must be an absolute path, got {v!r}")
    return v


def _gpus(v: Any) -> str | list[int]:
    if v == "auto":
        return "auto"
    if isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                                   for i in v):
        return list(v)
    raise ValueError(f'must be "auto" or a list of GPU indices, got {v!r}')


def _env_names(v: Any) -> list[str]:
    if not isinstance(v, list) or not all(
        isinstance(n, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n) for n in v
    ):
        raise ValueError(f"must be a list of environment variable names, got {v!r}")
    return list(v)


def _metric_names(v: Any) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(n, str) and n.strip() for n in v):
        raise ValueError(f"must be a list of metric names, got {v!r}")
    return [n.strip() for n in v]


def _subfolder(v: str) -> str:
    parts = Path(v).parts
    if not v.startswith("/") and (not parts or all(p == "." for p in parts)):
        raise ValueError(f"must name a folder of its own, not the workspace itself; got {v!r}")
    return v


def _boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"must be true or false, got {v!r}")
    return v


def _globs(v: Any) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(g, str) and g.strip() and not
                                           g.startswith("/") and ".." not in Path(g).parts
                                           for g in v):
        raise ValueError(f"must be a list of workspace-relative glob patterns, got {v!r}")
    return [g.strip() for g in v]


def _datasets(v: Any) -> dict[str, DatasetDecl]:
    if not isinstance(v, Mapping):
        raise ValueError("must be a table of name → {path, files}")
    out: dict[str, DatasetDecl] = {}
    for name, spec in v.items():
        if not isinstance(spec, Mapping):
            raise ValueError(f"entry {name!r} must be a table with `files`")
        files = spec.get("files")
        if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
            raise ValueError(f"entry {name!r} needs `files`, a non-empty list of relative paths")
        path = spec.get("path", name)
        if not isinstance(path, str) or Path(path).is_absolute() or ".." in Path(path).parts:
            raise ValueError(f"entry {name!r}: `path` must be relative to the cache root")
        out[str(name)] = DatasetDecl(path=path, files=list(files))
    return out


VALIDATORS: dict[str, Callable[[Any], Any]] = {
    "dataset_cache_root": lambda v: _absolute_path(os.path.expanduser(_non_empty_str(v))),
    "state_dir": lambda v: _subfolder(_non_empty_str(v)),
    "datasets": _datasets,
    "run.timeout_sec": _positive_number,
    "run.max_timeout_sec": _positive_number,
    "run.kill_grace_sec": _non_negative_number,
    "run.network": _choice("none", "host"),
    "run.isolation": _choice("auto", "bwrap", "unshare", "none"),
    "run.python": lambda v: v if v == "auto" else _absolute_path(v),
    "run.gpus": _gpus,
    "run.max_concurrent": _non_negative_int,
    "run.memory_mb": _non_negative_int,
    "run.max_processes": _non_negative_int,
    "run.disk_mb": _non_negative_int,
    "run.env": _env_names,
    "run.hide": _globs,
    "run.keep": _non_negative_int,
    "run.stop_on_nan": _boolean,
    "run.nan_grace_steps": _non_negative_int,
    "run.unsaved": _choice("warn", "buffer", "refuse"),
    "metric.name": _non_empty_str,
    "metric.goal": _choice("minimize", "maximize"),
    "metric.min_delta": _non_negative_number,
    "metric.require_provenance": _boolean,
    "metric.watch": _metric_names,
    "loop.script": _non_empty_str,
    "loop.model": _non_empty_str,
    "loop.repair_attempts": _non_negative_int,
    "loop.baseline_repeats": _non_negative_int,
    "loop.rebaseline_every": _non_negative_int,
    "loop.prepare": lambda v: v if v == "" else _non_empty_str(v),
    "edit.protect": _globs,
}
_SECTIONS = {"run", "metric", "loop", "edit"}


def snake_case(key: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).lower()


def flatten(layer: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A layer's settings by dotted snake_case key (`run.network`), as merged."""
    flat: dict[str, Any] = {}
    for raw_key, value in layer.items():
        key = prefix + snake_case(str(raw_key))
        if not prefix and key in _SECTIONS and isinstance(value, Mapping):
            flat.update(flatten(value, key + "."))
        else:
            flat[key] = value
    return flat


def merge(base: Config, layer: Mapping[str, Any] | None,
          untrusted: str | None = None) -> tuple[Config, list[ConfigProblem]]:
    """Return a new Config with `layer` applied over `base`, plus the problems found. With
    `untrusted` (why the layer is not trusted), a value that loosens is skipped."""
    cfg = copy.deepcopy(base)
    problems: list[ConfigProblem] = []
    if layer is None:
        return cfg, problems
    if not isinstance(layer, Mapping):
        return cfg, [ConfigProblem("(settings)", f"must be an object, got {type(layer).__name__}")]
    for key, value in flatten(layer).items():
        validator = VALIDATORS.get(key)
        if validator is None:
            problems.append(ConfigProblem(key, "is not a labls setting"))
            continue
        try:
            clean = validator(value)
        except ValueError as exc:
            problems.append(ConfigProblem(key, str(exc)))
            continue
        section, _, name = key.rpartition(".")
        holder = getattr(cfg, section) if section else cfg
        if untrusted and not trust.tightens(key, getattr(holder, name), clean):
            problems.append(ConfigProblem(key, f"= {clean!r} would loosen the sandbox or change "
                                               f"the judgement, and {untrusted}"))
            continue
        setattr(holder, name, clean)
    return cfg, problems


def workspace_source(workspace: Path) -> tuple[Path | None, dict[str, Any], list[ConfigProblem]]:
    """The workspace's config file, its labls table, and problems reading it: labls.toml
    (which wins if both exist) or the `[tool.labls]` table of pyproject.toml."""
    labls_toml = workspace / "labls.toml"
    pyproject = workspace / "pyproject.toml"
    source = labls_toml if labls_toml.is_file() else pyproject if pyproject.is_file() else None
    if source is None:
        return None, {}, []
    try:
        data = tomlcache.load(source)
    except (OSError, ValueError) as exc:  # (UnicodeDecodeError and TOMLDecodeError among them)
        return source, {}, [ConfigProblem(source.name, f"could not be read ({exc})")]
    if source == pyproject:
        tool = data.get("tool", {})
        table = tool.get("labls", {}) if isinstance(tool, dict) else {}
        data = table if isinstance(table, dict) else {}
        if not data:
            return None, {}, []
    return source, data, []


def read_user_layer(workspace: Path) -> tuple[dict[str, Any], list[ConfigProblem]]:
    """The user's own config file, if it exists and lies outside the workspace."""
    path = trust.user_config_path()
    if not path.is_file():
        return {}, []
    if path.resolve().is_relative_to(workspace.resolve()):
        return {}, [ConfigProblem(str(path), "lies inside the workspace, so the repository "
                                             "could write it: it is not read as the user's")]
    try:
        return tomlcache.load(path), []
    except (OSError, ValueError) as exc:
        return {}, [ConfigProblem(str(path), f"could not be read ({exc})")]


def _untrusted_because(workspace: Path, source: Path, table: dict[str, Any]) -> str | None:
    if trust.store_path().resolve().is_relative_to(workspace.resolve()):
        return (f"the trust records {trust.store_path()} lie inside the workspace, where the "
                "repository could write them")
    state = trust.status(source, table)
    if state == "trusted":
        return None
    how = f"`labls trust` in {workspace} trusts it"
    if state == "changed":
        return f"{source.name} changed since you trusted it (review it; {how} again)"
    return f"{source.name} is not trusted ({how})"


def files_stamp(workspace: Path) -> tuple[tuple[str, int, int], ...]:
    """(path, mtime, size) of every file the config is read from, to tell when to re-read."""
    stamp = []
    for path in (workspace / "labls.toml", workspace / "pyproject.toml",
                 trust.user_config_path(), trust.store_path()):
        try:
            st = path.stat()
            stamp.append((str(path), st.st_mtime_ns, st.st_size))
        except OSError:
            stamp.append((str(path), 0, -1))
    return tuple(stamp)


def load(
    workspace: Path, *overrides: Mapping[str, Any] | None
) -> tuple[Config, list[ConfigProblem]]:
    """Defaults → the user's file → the workspace file (tightening only, unless trusted) →
    each override in order (the editor's settings, CLI flags)."""
    user, problems = read_user_layer(workspace)
    cfg, more = merge(Config(), user)
    problems += more
    source, table, more = workspace_source(workspace)
    problems += more
    if source is not None:
        cfg, more = merge(cfg, table, _untrusted_because(workspace, source, table))
        problems += more
    for override in overrides:
        cfg, more = merge(cfg, override)
        problems += more
    if cfg.run.timeout_sec > cfg.run.max_timeout_sec:
        problems.append(ConfigProblem("run.timeout_sec", f"= {cfg.run.timeout_sec:g} is above "
                                      f"the ceiling run.max_timeout_sec = "
                                      f"{cfg.run.max_timeout_sec:g}", "using the ceiling"))
        cfg.run.timeout_sec = cfg.run.max_timeout_sec
    return cfg, problems


WORKSPACE_MARKERS = ("labls.toml", "pyproject.toml", ".git")


def find_workspace(start: Path) -> Path:
    """The workspace a command run in `start` means: the nearest folder at or above it holding
    `labls.toml`, `pyproject.toml` or `.git` (as git finds its repository), else `start`."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if any((folder / marker).exists() for marker in WORKSPACE_MARKERS):
            return folder
    return start
