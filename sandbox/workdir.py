"""The fallback work folder (no copy-on-write view, `workview.py`): a copy of the workspace's
files, never shared between runs.

In a git repository the copied files are those git knows or would track (`git ls-files
--cached --others --exclude-standard`, as they are in the working tree, so uncommitted edits
run); elsewhere every file but the state dir, `.git`, `.venv` and caches. A copied file counts as
the run's output only if the run changed it (its mtime or size differ from the copy's).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from . import gitsafe
from .hiding import Patterns

SKIP_DIRS = {".git", ".venv", "venv", "__pycache__", "node_modules", ".mypy_cache",
             ".pytest_cache", ".ruff_cache"}


def workspace_files(workspace: Path, state_dir: Path) -> list[str]:
    if (workspace / ".git").exists():
        done = gitsafe.run_bytes(workspace, "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard")
        if done.returncode == 0:
            files = [f for f in done.stdout.decode("utf-8", "surrogateescape").split("\0") if f]
            return [f for f in files if not _inside(workspace / f, state_dir)]
    found = []
    for folder, dirs, names in os.walk(workspace):
        here = Path(folder)
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not _inside(here / d, state_dir)]
        found += [str((here / n).relative_to(workspace)) for n in names]
    return found


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder)
        return True
    except ValueError:
        return False


def populate(workspace: Path, state_dir: Path, work_dir: Path,
             hide: list[str] | None = None) -> dict[str, tuple[int, int]]:
    """Copy the workspace's files into the (new, empty) `work_dir`, but the secret files and
    `run.hide` patterns (as the copy-on-write view hides them). Returns each copy's (mtime,
    size) as made, so that what the run wrote is told apart from what was copied in."""
    if work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    root = workspace.resolve()
    copied: dict[str, tuple[int, int]] = {}
    hidden = Patterns(tuple(hide or ()))
    for rel in workspace_files(workspace, state_dir):
        if hidden.hides_path(rel):
            continue
        src = workspace / rel
        if not src.is_file() or not _inside(src, root):  # deleted, or a link out of the tree
            continue
        dst = work_dir / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
        st = os.lstat(dst)
        copied[rel] = (st.st_mtime_ns, st.st_size)
    return copied


def hand_over(folder: Path, uid: int) -> None:
    """Make `folder` and everything in it belong to `uid` (a root engine's run uid), never
    following a symlink."""
    os.lchown(folder, uid, uid)
    for here, dirs, names in os.walk(folder):
        for name in dirs + names:
            os.lchown(os.path.join(here, name), uid, uid)
