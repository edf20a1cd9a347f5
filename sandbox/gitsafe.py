"""Git as labls runs it: no program the repository (or its config) names is ever started.

A repository's `.git/config` and `.gitattributes` can make plain git commands run programs:
`core.fsmonitor` on `git status`, hooks on `git commit`, clean/smudge filters on `git add`,
textconv and external diff drivers on `git diff`, and `core.sshCommand`, pagers and editors.
Every git call labls makes goes through `git()` here, which
- overrides each such setting on the command line (`-c` wins over every config file): hooks
  point at an empty folder, `core.fsmonitor` is off, every configured filter, merge or
  credential program is set to nothing and every textconv driver to `cat`; labls never asks
  git for a diff (it writes its own with difflib), so external diff programs never start;
- treats pathspecs literally (`GIT_LITERAL_PATHSPECS=1`), so a file named `:(top)*` is that
  file and not "everything";
- drops every `GIT_*` variable of labls's own environment except the few it sets itself, so an
  inherited `GIT_CONFIG_PARAMETERS` or `GIT_DIR` cannot redirect it.
User hooks are therefore not run by labls either; checks before a keep are labls's to run.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

# Settings whose value is a program (or turns one on); matched against lower-cased names.
_PROGRAM_KEYS = re.compile(
    r"^(?:filter\..+\.(?:clean|smudge|process)"
    r"|merge\..+\.driver|mergetool\..+\.cmd|difftool\..+\.cmd"
    r"|credential(?:\..+)?\.helper"
    r"|core\.(?:fsmonitor|sshcommand|editor|pager|askpass|gitproxy|alternaterefscommand)"
    r"|sequence\.editor|gpg(?:\..+)?\.program"
    r"|remote\..+\.(?:receivepack|uploadpack|vcs)|uploadpack\.packobjectshook)$")
_FIXED = ("core.fsmonitor=false", "core.pager=cat", "core.editor=false",
          "core.sshCommand=false", "commit.gpgSign=false",
          "tag.gpgSign=false", "protocol.ext.allow=never", "core.untrackedCache=false")
_KEPT_ENV = {"GIT_INDEX_FILE"}  # set by labls itself for throwaway indexes

_EMPTY_HOOKS: str | None = None


class GitError(RuntimeError):
    """A git command labls ran failed; the message holds the command and git's words."""


def _empty_hooks_dir() -> str:
    global _EMPTY_HOOKS
    if _EMPTY_HOOKS is None or not os.path.isdir(_EMPTY_HOOKS):
        _EMPTY_HOOKS = tempfile.mkdtemp(prefix="labls-no-hooks-")
    return _EMPTY_HOOKS


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("GIT_") or k in _KEPT_ENV}
    env.update(GIT_LITERAL_PATHSPECS="1", GIT_TERMINAL_PROMPT="0")
    env.update(extra or {})
    return env


def overrides(workspace: Path | None) -> list[str]:
    """`-c key=value` arguments that switch off every program-running setting in effect."""
    args: list[str] = []
    for item in (*_FIXED, f"core.hooksPath={_empty_hooks_dir()}"):
        args += ["-c", item]
    if workspace is not None:
        listed = subprocess.run(
            ["git", *args, "-C", str(workspace), "config", "--list", "--name-only", "-z"],
            capture_output=True, env=clean_env(), check=False)
        names = {n for n in listed.stdout.decode("utf-8", "replace").split("\0") if n}
        for name in sorted(names):
            if _PROGRAM_KEYS.match(name.lower()):
                args += ["-c", f"{name}="]
            elif name.lower().startswith("diff.") and name.lower().endswith(".textconv"):
                args += ["-c", f"{name}=cat"]  # an empty one is "cannot run"; cat is identity
    return args


def git(workspace: Path, *args: str, env: dict[str, str] | None = None, check: bool = True,
        input_text: str | None = None) -> str:
    """Run `git -C workspace <args>` safely; its stdout, stripped."""
    done = run(workspace, *args, env=env, input_text=input_text)
    if check and done.returncode != 0:
        shown = " ".join(a if len(a) < 80 else a[:77] + "..." for a in args)
        raise GitError(f"git {shown}: {done.stderr.strip()}")
    return done.stdout.strip()


def run(workspace: Path, *args: str, env: dict[str, str] | None = None,
        input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *overrides(workspace), "-C", str(workspace), *args],
                          capture_output=True, text=True, env=clean_env(env),
                          input=input_text, check=False)


def run_bytes(workspace: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """As `run`, for output that is not text (`-z` lists of paths in any encoding)."""
    return subprocess.run(["git", *overrides(workspace), "-C", str(workspace), *args],
                          capture_output=True, env=clean_env(), check=False)


def clone(source: str, into: Path) -> None:
    """`git clone` of a repository given by path or URL, with no repository program run."""
    done = subprocess.run(["git", *overrides(None), "clone", "-q", "--no-recurse-submodules",
                           source, str(into)], capture_output=True, text=True,
                          env=clean_env(), check=False)
    if done.returncode != 0:
        raise GitError(f"git clone {source}: {done.stderr.strip()}")
