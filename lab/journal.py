"""A step's files in the state dir: its lock (one step at a time per workspace, across
processes) and its journal (what it wrote, kept on disk while the step runs, so that a step cut
short, the server killed mid-run, is undone by the next step with a ledger row saying so)."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .editplan import EditError, EditPlan, confine, restore_files, unified
from .protect import Guard


class StepLock:
    """One step at a time per workspace, across threads and processes (an flock)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "step.lock"

    @contextlib.contextmanager
    def held(self, wait: bool = True) -> Iterator[bool]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # (closing releases the lock)

    def busy(self) -> bool:
        with self.held(wait=False) as got:
            return not got


class Journal:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "step-journal.json"

    def begin(self, plan: EditPlan, hypothesis: str) -> None:
        files = {rel: {"old": _b64(plan.raw.get(rel)), "new": _b64(plan.encoded(rel)),
                       "mode": plan.modes.get(rel, 0o644),
                       "diff": unified(rel, plan.old.get(rel), plan.new[rel])}
                 for rel in plan.new}
        data = json.dumps({"hypothesis": hypothesis, "started_at": time.time(), "files": files})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".step-journal.")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def end(self) -> None:
        self.path.unlink(missing_ok=True)

    def undo(self, workspace: Path, guard: Guard) -> dict[str, Any] | None:
        """Undo an unfinished step, if one is recorded: its hypothesis, diff and the paths left
        (changed by someone since); None when there is nothing to undo. A journal names only
        what a step planned, so a path the guard protects (or one leading out) is never
        written from it, whoever wrote the file."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            files = {rel: (_unb64(f["old"]), _unb64(f["new"]) or b"", int(f["mode"]) & 0o777)
                     for rel, f in data["files"].items() if _writable(workspace, guard, rel)}
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.end()
            return {"hypothesis": "(unreadable step journal)", "diff": "", "left": [],
                    "error": str(exc)}
        left = restore_files(workspace, files)
        self.end()
        return {"hypothesis": str(data.get("hypothesis", "")), "left": left,
                "diff": "".join(str(f.get("diff", "")) for f in data["files"].values())}


def _writable(workspace: Path, guard: Guard, rel: str) -> bool:
    try:
        return confine(workspace, rel) == rel and guard.why(rel) is None
    except EditError:
        return False


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)
