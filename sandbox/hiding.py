"""What a run must not see in its work folder, and where it is in the workspace.

Hidden: `.git`, the state dir, the secret files (`SECRET_PATTERNS`) and the trusted `run.hide`
patterns, wherever they are, tracked, untracked or ignored. Patterns follow gitignore's rules
(no negation): one without a `/` but a trailing one names a file or folder at any depth, one
with a `/` is anchored at the workspace's top (`*` stays within a folder, `**` crosses them),
a trailing `/` names folders only, and a hidden folder hides all below it.

Finding them is a walk of the workspace's folders, which in an ML workspace (an un-ignored
venv, `node_modules`, datasets) is tens of thousands of entries: 30-50 ms at every launch.
`find_hidden` remembers each folder it read (`hidden.json` in the state dir) with its stat:
adding, removing or renaming an entry changes a folder's ctime, which no program can set, so a
folder whose stat is unchanged holds the same names, and only the folders that changed are read
again. A folder changed in the last seconds is never remembered (a timestamp's granularity
could hide a change made just after the read). The record is the engine's, inside the state
dir a run cannot see and an edit cannot write; a forged one would have to guess inode numbers
and ctimes, and a wrong or unreadable one only costs a full walk.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import stat
import time
from pathlib import Path
from typing import NamedTuple

SECRET_PATTERNS = (".env", ".env.*", "*.pem", "*.key", ".netrc", ".pgpass", ".git-credentials",
                   "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*")  # ssh keys, not id_*.py
RECORD_NAME = "hidden.json"
_RACY_NS = 2_000_000_000  # a folder changed this recently is read again next time
_VERSION = 1


def _translate(pattern: str) -> str:
    """A pattern as a regex over a workspace-relative path: gitignore's `*` and `?` within a
    folder, `**` across them, `[...]` classes."""
    out, i = [], 0
    while i < len(pattern):
        close = pattern.find("]", i + 2) if pattern[i] == "[" else -1
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] in "*?":
            out.append("[^/]*" if pattern[i] == "*" else "[^/]")
            i += 1
        elif close > 0:  # a class: `[!...]` negates, as in fnmatch
            body = pattern[i + 1:close]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace(
                "\\", "\\\\") + "]")
            i = close + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


class Patterns:
    """The secret patterns plus `run.hide`, compiled into one regex for files and one for
    folders (which a trailing `/` pattern also names)."""

    def __init__(self, hide: tuple[str, ...]) -> None:
        self.patterns = hide
        files: list[str] = []
        folders_only: list[str] = []
        for raw in (*SECRET_PATTERNS, *hide):
            pattern = raw.rstrip("/")
            if not pattern:
                continue
            regex = (_translate(pattern.lstrip("/")) if "/" in pattern  # anchored at the top
                     else "(?:.*/)?" + _translate(pattern))  # a name at any depth
            (folders_only if raw.endswith("/") else files).append(regex)
        self._file = re.compile("(?s:%s)\\Z" % ("|".join(files) or "(?!)"))
        self._folder = re.compile("(?s:%s)\\Z" % ("|".join(files + folders_only) or "(?!)"))

    def hides(self, rel: str, is_dir: bool) -> bool:
        """Workspace path `rel` itself is named by a pattern."""
        return (self._folder if is_dir else self._file).match(rel) is not None

    def hides_path(self, rel: str) -> bool:
        """`rel` (a file) or one of the folders above it is named by a pattern."""
        parts = rel.split("/")
        return (any(self.hides("/".join(parts[:i]), True) for i in range(1, len(parts)))
                or self.hides(rel, False))


def matching(rel: str, patterns: list[str] | tuple[str, ...]) -> str | None:
    """The first pattern naming workspace path `rel` in `edit.protect`'s simpler rules (`*`
    crosses folders; a folder's pattern covers everything below it)."""
    for pattern in patterns:
        if fnmatch.fnmatchcase(rel, pattern) or rel.startswith(pattern.rstrip("/") + "/"):
            return pattern
    return None


def find_hidden(workspace: Path, state_dir: Path, hide: list[str]) -> list[str]:
    """Workspace-relative paths to hide (folders stand for all below them): `.git`, the state
    dir, and every file or folder a pattern names. Reads again only the folders that changed
    since the last call (see the module's note)."""
    always = [".git"]
    inside_state = state_dir.is_relative_to(workspace) and state_dir != workspace
    if inside_state:
        always.append(state_dir.relative_to(workspace).as_posix())
    patterns = Patterns(tuple(hide))
    record_path = state_dir / RECORD_NAME
    known = _load(record_path, patterns.patterns) if inside_state else {}
    seen: dict[str, _Folder] = {}
    hidden = list(always)
    root_dev = os.lstat(workspace).st_dev
    now = time.time_ns()
    pending = [""]
    while pending:
        rel = pending.pop()
        try:
            st = os.lstat(workspace / rel)
        except OSError:
            continue  # gone meanwhile
        key = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
        entry = known.get(rel)
        if entry is not None and entry.key == key:
            names, folders = entry.names, entry.folders
        else:
            names, folders = _read(workspace, rel, patterns, set(always), root_dev)
        if now - max(st.st_mtime_ns, st.st_ctime_ns) > _RACY_NS:
            seen[rel] = _Folder(key, names, folders)
        prefix = f"{rel}/" if rel else ""
        hidden += [prefix + n for n in names]
        pending += [prefix + f for f in folders]
    if inside_state and seen != known:
        _save(record_path, patterns.patterns, seen)
    return hidden


def _read(workspace: Path, rel: str, patterns: Patterns, always: set[str],
          root_dev: int) -> tuple[list[str], list[str]]:
    """One folder's entries: the names it hides, and the folders below it to walk."""
    names: list[str] = []
    folders: list[str] = []
    prefix = f"{rel}/" if rel else ""
    try:
        entries = list(os.scandir(workspace / rel))
    except OSError:
        return names, folders
    for entry in entries:
        path = prefix + entry.name
        if path in always:
            continue
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
            # a folder on another filesystem is not in the view (its lower layer is one mount)
            walk = is_dir and entry.stat(follow_symlinks=False).st_dev == root_dev
        except OSError:
            continue
        if patterns.hides(path, is_dir):
            names.append(entry.name)
        elif walk:
            folders.append(entry.name)
    return sorted(names), sorted(folders)


class _Folder(NamedTuple):
    key: tuple[int, int, int]  # inode, mtime, ctime (ns)
    names: list[str]  # its entries a pattern names
    folders: list[str]  # its folders to walk


def _load(path: Path, patterns: tuple[str, ...]) -> dict[str, _Folder]:
    """The remembered folders, if the record is readable, of this version and these patterns."""
    try:
        data = json.loads(path.read_bytes())
        if data["version"] != _VERSION or data["patterns"] != list(patterns):
            return {}
        return {rel: _Folder((int(k[0]), int(k[1]), int(k[2])), [str(n) for n in names],
                             [str(f) for f in folders])
                for rel, (k, names, folders) in data["folders"].items()}
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return {}  # unreadable or another shape: a full walk


def _save(path: Path, patterns: tuple[str, ...], folders: dict[str, _Folder]) -> None:
    """Write the record atomically (two launches at once: the last one's stands, both true)."""
    if not path.parent.is_dir():
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}")
    try:
        tmp.write_text(json.dumps({"version": _VERSION, "patterns": list(patterns),
                                   "folders": folders}, separators=(",", ":")))
        os.chmod(tmp, stat.S_IRUSR | stat.S_IWUSR)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
