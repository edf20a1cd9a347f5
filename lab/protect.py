"""Paths no edit may create, change or delete, whatever the format and however it is reached.

The agent is untrusted; these are the files that would let it change the rules or escape them:
- the repository itself: `.git/` (and a `.git` folder at any depth), found by real path, so a
  committed symlink `g -> .git` does not lead into it;
- labls's state dir (the registry, the runs' records and logs);
- labls's own config: every `labls.toml`, the `[tool.labls]` table of a `pyproject.toml` (the
  rest of that file stays editable), and the user's config dir should the workspace hold it;
- what the trusted config names in `edit.protect` (an evaluator, its data): glob patterns
  relative to the workspace, where `*` also crosses folders and a folder's name covers all
  below it.
`Guard.why(rel)` says why a path is protected, or None.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labls.sandbox import trust
from labls.sandbox.hiding import matching

CONFIG_NAMES = ("labls.toml",)


@dataclass
class Guard:
    workspace: Path
    state_dir: Path | None = None
    patterns: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workspace = self.workspace.resolve()
        self.state_dir = (self.state_dir or self.workspace / ".labls").resolve()
        self.git_dir = _git_dir(self.workspace)

    def why(self, rel: str) -> str | None:
        """`rel` as the edit names it; it is checked both as named and by its real path."""
        real = (self.workspace / rel).resolve()
        named = Path(rel)
        try:
            real_rel = real.relative_to(self.workspace)
        except ValueError:
            return "outside the workspace"
        if ".git" in named.parts or ".git" in real_rel.parts or (
                self.git_dir is not None and real.is_relative_to(self.git_dir)):
            return "inside the repository's .git"
        assert self.state_dir is not None
        if real.is_relative_to(self.state_dir):
            return "inside labls's state dir"
        if named.name in CONFIG_NAMES or real.name in CONFIG_NAMES:
            return "labls's config"
        if real.is_relative_to(trust.config_dir().resolve()):
            return "the user's own labls config (and the trust records)"
        pattern = self.listed(str(named)) or self.listed(str(real_rel))
        if pattern is not None:
            return f"protected by the trusted config (edit.protect {pattern!r})"
        return None

    def listed(self, rel: str) -> str | None:
        """The `edit.protect` pattern that names `rel`, if one does."""
        return matching(rel, self.patterns)

    def config_change(self, rel: str, old: str | None, new: str) -> str | None:
        """For a `pyproject.toml`: why the change is refused (its `[tool.labls]` changes)."""
        if Path(rel).name != "pyproject.toml":
            return None
        before = _labls_table(old) if old is not None else None
        after = _labls_table(new)
        if after == "unreadable" and before not in (None, "unreadable"):
            return "its [tool.labls] table would no longer parse"
        if before != after and not (before in (None, "unreadable") and after is None):
            return "it changes the [tool.labls] table, labls's config"
        return None


def _labls_table(text: str) -> Any:
    try:
        tool = tomllib.loads(text).get("tool", {})
    except tomllib.TOMLDecodeError:
        return "unreadable"
    return tool.get("labls") if isinstance(tool, dict) else None


def _git_dir(workspace: Path) -> Path | None:
    dot_git = workspace / ".git"
    if dot_git.is_file():  # a worktree or submodule: `gitdir: <path>`
        try:
            line = dot_git.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return None
        if line.startswith("gitdir:"):
            target = Path(line.split(":", 1)[1].strip())
            return (workspace / target).resolve() if not target.is_absolute() else target
        return None
    return dot_git.resolve() if dot_git.exists() else None
