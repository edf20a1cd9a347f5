"""Which datasets the cache root really holds.

The registry of known datasets is data (`datasets.toml`, torchvision's on-disk layouts); users add
their own under `[tool.labls.datasets]`. A scan never raises: an absent or unreadable root is
reported in the result, so a prompt can say "no datasets available" rather than crash.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from . import tomlcache
from .config import DatasetDecl
from .wire import named


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    path: str
    files: tuple[str, ...]
    example: str = ""


@dataclass
class DatasetStatus:
    name: str
    present: bool
    path: str
    files: list[str]
    bytes: int
    missing: list[str]
    example: str = field(default="", metadata=named(None))  # for prompts, not the wire


@dataclass
class CacheScan:
    cache_root: str
    root_exists: bool
    root_error: str | None = field(metadata=named("error"))
    datasets: list[DatasetStatus] = field(default_factory=list)

    @property
    def available(self) -> list[DatasetStatus]:
        return [d for d in self.datasets if d.present]

    @property
    def unavailable(self) -> list[DatasetStatus]:
        return [d for d in self.datasets if not d.present]

    def find(self, name: str) -> DatasetStatus | None:
        return next((d for d in self.datasets if d.name.lower() == name.lower()), None)


@cache
def builtin_specs() -> tuple[DatasetSpec, ...]:
    table: dict[str, Any] = tomlcache.load(Path(__file__).parent / "datasets.toml")
    return tuple(
        DatasetSpec(name, e["path"], tuple(e["files"]), e.get("example", ""))
        for name, e in table.items()
    )


def all_specs(declared: dict[str, DatasetDecl] | None = None) -> list[DatasetSpec]:
    specs = {s.name: s for s in builtin_specs()}
    for name, decl in (declared or {}).items():
        specs[name] = DatasetSpec(name, decl.path, tuple(decl.files))
    return list(specs.values())


def scan(cache_root: str, declared: dict[str, DatasetDecl] | None = None) -> CacheScan:
    root = Path(cache_root)
    result = CacheScan(cache_root=str(root), root_exists=root.is_dir(), root_error=None)
    if not root.exists():
        result.root_error = f"dataset cache root {root} does not exist"
    elif not root.is_dir():
        result.root_error = f"dataset cache root {root} is not a directory"
    elif not os.access(root, os.R_OK | os.X_OK):
        result.root_error = f"dataset cache root {root} is not readable"
    for spec in all_specs(declared):
        result.datasets.append(_status(root, spec, readable=result.root_error is None))
    return result


def _status(root: Path, spec: DatasetSpec, readable: bool) -> DatasetStatus:
    base = root / spec.path
    found: list[str] = []
    missing: list[str] = []
    size = 0
    for rel in spec.files:
        try:
            st = (base / rel).stat() if readable else None
        except OSError:
            st = None
        if st is not None and st.st_size > 0 and os.access(base / rel, os.R_OK):
            found.append(rel)
            size += st.st_size
        else:
            missing.append(rel)
    example = spec.example.format(root=str(root)) if spec.example else ""
    return DatasetStatus(spec.name, not missing, str(base), found, size, missing, example)


class DatasetIndex:
    """Which dataset holds a path (the longest dataset folder holding it), for many paths: the
    answer for a folder is kept, so the files of one folder (ImageNet's 1,300 per class) cost
    one search of the datasets."""

    def __init__(self, cache_root: str | Path, specs: list[DatasetSpec]) -> None:
        root = os.path.normpath(cache_root)
        self._bases = sorted(((os.path.join(root, s.path), s.name) for s in specs),
                             key=lambda base: -len(base[0]))  # the longest folder first
        self._exact = {base: name for base, name in reversed(self._bases)}
        self._folders: dict[str, str | None] = {}

    def owner(self, path: str) -> str | None:
        p = os.path.normpath(path)
        if p in self._exact:  # a dataset that is this very path
            return self._exact[p]
        folder = os.path.dirname(p)  # any other file: its folder's owner
        if folder not in self._folders:
            self._folders[folder] = next((name for base, name in self._bases if folder == base
                                          or folder.startswith(base + os.sep)), None)
        return self._folders[folder]
