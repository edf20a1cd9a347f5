"""An edit as data: every file's new text planned in memory, then written all or nothing.

`EditPlan` holds each file's text as the agent sees it and its bytes as they were, so that
writing keeps its line endings and restoring is byte for byte; `confine` keeps paths inside the
workspace. The formats that fill a plan are in `edits.py`.
"""

from __future__ import annotations

import difflib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .protect import Guard


class EditError(ValueError):
    """The edit request itself is malformed (unknown format, missing text or path)."""


@dataclass
class Failure:
    path: str
    block: str
    reason: str
    nearest: str = ""


class Refused(Exception):
    """One path the edit may not touch (protected, binary): a failure, not a bad request."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.reason)
        self.failure = failure


@dataclass
class EditPlan:
    """New contents by workspace-relative path (old None: the file is new).

    Texts are as the agent sees them: a file whose lines all end in CRLF is read with LF and
    written back with CRLF; `raw` keeps every file's bytes so a restore is byte for byte."""

    workspace: Path
    guard: Guard | None = None
    old: dict[str, str | None] = field(default_factory=dict)
    new: dict[str, str] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    raw: dict[str, bytes | None] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)
    crlf: set[str] = field(default_factory=set)
    executable: dict[str, bool] = field(default_factory=dict)  # exec bit a diff set or cleared
    # the editor's open buffers (text, version) by path: an edit is planned against what the
    # user sees, unsaved changes included, and sent with the version it was planned on
    buffers: dict[str, tuple[str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.guard is None:
            self.guard = Guard(self.workspace)

    @property
    def ok(self) -> bool:
        return not self.failures and bool(self.new)

    def files(self) -> list[dict[str, Any]]:
        return [{"path": p, "hunks": count_hunks(self.old.get(p) or "", text),
                 "created": self.old.get(p) is None, "diff": unified(p, self.old.get(p), text)}
                for p, text in self.new.items()]

    def target(self, rel: str) -> str:
        """The real workspace-relative path `rel` names; EditError if it leads out, Refused if
        it is protected."""
        real = confine(self.workspace, rel)
        assert self.guard is not None
        why = self.guard.why(rel)  # (both as named and by its real path)
        if why:
            raise Refused(Failure(rel, "", f"protected: {rel} is {why}; labls edits never "
                                           "touch it"))
        return real

    def current(self, rel: str) -> str | None:
        """The file's text as this plan has it so far (earlier blocks already applied)."""
        if rel in self.new:
            return self.new[rel]
        if rel not in self.old and rel in self.buffers:
            self.old[rel] = self.buffers[rel][0]
            path = self.workspace / rel
            self.raw[rel] = path.read_bytes() if path.is_file() else None
            if path.is_file():
                self.modes[rel] = path.stat().st_mode & 0o7777
        if rel not in self.old:
            path = self.workspace / rel
            if path.exists() and not path.is_file():
                raise Refused(Failure(rel, "", f"{rel} is not a regular file"))
            if not path.exists():
                self.old[rel] = self.raw[rel] = None
                return None
            data = path.read_bytes()
            try:
                if b"\0" in data:
                    raise UnicodeDecodeError("utf-8", data, 0, 1, "a NUL byte")
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise Refused(Failure(rel, "", f"{rel} is binary or not UTF-8 text; labls "
                                               "edits text files only")) from None
            if b"\r\n" in data and data.count(b"\n") == data.count(b"\r\n"):
                self.crlf.add(rel)
                text = text.replace("\r\n", "\n")
            self.raw[rel] = data
            self.modes[rel] = path.stat().st_mode & 0o7777
            self.old[rel] = text
        return self.old[rel]

    def encoded(self, rel: str) -> bytes:
        """The bytes `rel` gets: its new text in the file's own line endings."""
        text = self.new[rel]
        if rel in self.crlf:
            text = text.replace("\r\n", "\n").replace("\n", "\r\n")
        return text.encode("utf-8")


def confine(workspace: Path, rel: str) -> str:
    """The real workspace-relative form of `rel`, or EditError if it leads outside."""
    raw = Path(rel.strip())
    if not rel.strip() or raw.is_absolute() or ".." in raw.parts or "\0" in rel:
        raise EditError(f"path {rel!r} must be relative to the workspace, without '..'")
    root = workspace.resolve()
    target = (root / raw).resolve()
    if not target.is_relative_to(root) or target == root:
        raise EditError(f"path {rel!r} leads outside the workspace (through a symlink)")
    return str(target.relative_to(root))


def count_hunks(old: str, new: str) -> int:
    matcher = difflib.SequenceMatcher(None, old.splitlines(), new.splitlines(), autojunk=False)
    return sum(1 for group in matcher.get_grouped_opcodes(0))


def unified(path: str, old: str | None, new: str) -> str:
    return "".join(difflib.unified_diff(
        (old or "").splitlines(keepends=True), new.splitlines(keepends=True),
        fromfile=f"a/{path}" if old is not None else "/dev/null", tofile=f"b/{path}"))


# --- writing ---------------------------------------------------------------------------------


def write_atomically(plan: EditPlan) -> None:
    """Every file to a temp beside it, then every rename: no half-written file is ever seen."""
    _replace_all(plan.workspace, {rel: (plan.encoded(rel), _mode_of(plan, rel))
                                  for rel in plan.new})


def _mode_of(plan: EditPlan, rel: str) -> int:
    mode = plan.modes.get(rel, 0o666 & ~_umask())
    if rel in plan.executable:
        mode = (mode | 0o111 & ~_umask()) if plan.executable[rel] else mode & ~0o111
    return mode


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _replace_all(workspace: Path, contents: dict[str, tuple[bytes, int]]) -> None:
    staged: list[tuple[Path, Path]] = []
    try:
        for rel, (data, mode) in contents.items():
            target = workspace / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".labls",
                                        dir=target.parent)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(name, mode)
            staged.append((Path(name), target))
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, target in staged:
        os.replace(tmp, target)


def restore(plan: EditPlan) -> list[str]:
    """Undo `plan` byte for byte (contents, line endings, mode); files it created are removed.
    A file changed since the plan wrote it (by the user, or an editor) is left as it is: the
    paths left are returned, never silently reverted."""
    return restore_files(plan.workspace, {rel: (plan.raw.get(rel), plan.encoded(rel),
                                                plan.modes.get(rel, 0o644)) for rel in plan.new})


def restore_files(workspace: Path, files: dict[str, tuple[bytes | None, bytes, int]]) -> list[str]:
    """For each path: (bytes before, bytes written, mode before); see `restore`."""
    left: list[str] = []
    back: dict[str, tuple[bytes, int]] = {}
    for rel, (old, written, mode) in files.items():
        target = workspace / rel
        try:
            now = target.read_bytes() if target.is_file() else None
        except OSError:
            now = None
        if now != written:
            if now != old:
                left.append(rel)
            continue
        if old is None:
            target.unlink(missing_ok=True)
        else:
            back[rel] = (old, mode)
    _replace_all(workspace, back)
    return left
