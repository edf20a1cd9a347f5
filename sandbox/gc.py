"""Run folders have a lifecycle: the newest `run.keep` runs keep their folders whole, and so does
the run of every kept experiment; the rest lose what they wrote (`work/`, `home/`, `probe/`,
their etc and launch files). Records stay in the registry, and each run's `log.txt` and
canonical `results.json` stay unless logs are asked for too.

The engine prunes after each run ends (`run.keep > 0`); `labls gc` shows what it would free,
with sizes, and frees it with `--yes`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

KEPT_FILES = ("log.txt", "results.json")


@dataclass
class Collectable:
    run_id: str
    paths: list[Path]
    size: int  # bytes (0 when not measured)


def _size(path: Path) -> int:
    """Disk use in bytes (blocks, so a sparse file counts what it takes)."""
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_blocks * 512
    total = 0
    for here, _dirs, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(here, name)).st_blocks * 512
    return total


def plan(state_dir: Path, keep: int, protected: set[str], newest_first: list[str],
         logs: bool = False, measure: bool = True) -> list[Collectable]:
    """What a collection would free: the folders of the runs the registry knows beyond the
    `keep` newest, but the `protected` ones (kept experiments, runs queued or going). A folder
    the registry does not know yet (a run another labls is starting) is never touched."""
    runs = state_dir / "runs"
    out = []
    for run_id in newest_first[keep:]:
        if run_id in protected:
            continue
        try:
            paths = [p for p in (runs / run_id).iterdir() if logs or p.name not in KEPT_FILES]
        except (FileNotFoundError, NotADirectoryError):  # freed already, or never made
            continue
        if paths:
            out.append(Collectable(run_id, paths,
                                   sum(_size(p) for p in paths) if measure else 0))
    return out


def collect(items: list[Collectable]) -> int:
    """Free them; returns how many paths were removed (a view still mounted is left)."""
    removed = 0
    for item in items:
        for path in item.paths:
            if os.path.ismount(path):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed += 1
    return removed
