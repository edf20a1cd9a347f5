"""labls's git operations on a step's workspace, all through `gitsafe` (no repository program).

- `ensure_ready`: a git repository with a commit and clean tracked files;
- `refuse_a_tracked_state_dir`: a repository may not ship labls's records;
- `keep`: a commit of exactly the bytes that ran, HEAD plus the plan, built in a throwaway index
  and put in place by one `update-ref` (nothing moves if any git call fails).
- `set_aside`: the same tree committed off-branch under `refs/labls/discarded/<runId>`.
Messages reach git through a file: a hypothesis of any length, a NUL as `\\0`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from labls.sandbox import gitsafe

from .editplan import EditPlan

LABLS_AUTHOR = ("-c", "user.name=labls", "-c", "user.email=labls@localhost")


class StepRefused(Exception):
    """The workspace is not in a state where a step can run (not git, or dirty)."""


def git(workspace: Path, *args: str, env: dict[str, str] | None = None,
        check: bool = True) -> str:
    try:
        return gitsafe.git(workspace, *args, env=env, check=check)
    except gitsafe.GitError as exc:
        raise StepRefused(str(exc)) from None


def ensure_ready(workspace: Path, state_dir: Path) -> None:
    if not (workspace / ".git").exists():
        raise StepRefused(f"{workspace} is not a git repository: `git init` and commit first")
    if not git(workspace, "rev-parse", "--verify", "-q", "HEAD", check=False):
        raise StepRefused("the repository has no commit yet: commit the experiment first")
    exclude = workspace / ".git" / "info" / "exclude"
    rel_state = os.path.relpath(state_dir, workspace)
    if not rel_state.startswith(".."):
        exclude.parent.mkdir(parents=True, exist_ok=True)
        lines = exclude.read_text().splitlines() if exclude.exists() else []
        if f"/{rel_state}/" not in lines:
            exclude.write_text("\n".join([*lines, f"/{rel_state}/"]) + "\n")
    dirty = git(workspace, "status", "--porcelain", "--untracked-files=no")
    if dirty:
        raise StepRefused("tracked files have uncommitted changes; commit or stash them first:\n"
                          + dirty)


def refuse_a_tracked_state_dir(workspace: Path, state_dir: Path) -> None:
    """A repository may not ship labls's records: a committed registry, ledger or step journal
    would forge the baseline or the files a recovery writes."""
    if not state_dir.is_relative_to(workspace.resolve()):
        return
    rel = os.path.relpath(state_dir, workspace.resolve())
    tracked = git(workspace, "ls-files", "--", rel, check=False)
    if tracked:
        raise StepRefused(f"the state dir {rel}/ holds files the repository tracks "
                          f"({tracked.splitlines()[0]}, ...): labls's records cannot come "
                          "from a repository; remove them from git (`git rm -r --cached "
                          f"{rel}`) and commit")


def _tree(workspace: Path, plan: EditPlan, index: dict[str, str], folder: Path) -> str:
    git(workspace, "read-tree", "HEAD", env=index)
    for n, rel in enumerate(plan.new):
        blob = folder / f"blob-{n}"
        blob.write_bytes(plan.encoded(rel))
        sha = git(workspace, "hash-object", "-w", "--no-filters", "--", str(blob))
        executable = plan.executable.get(rel, bool(plan.modes.get(rel, 0) & 0o100))
        git(workspace, "update-index", "--add", "--cacheinfo",
            f"{'100755' if executable else '100644'},{sha},{rel}", env=index)
    return git(workspace, "write-tree", env=index)


def _commit_tree(workspace: Path, plan: EditPlan, message: str) -> tuple[str, str]:
    """A commit of HEAD plus the plan, and the HEAD it is made on; nothing else moves."""
    with tempfile.TemporaryDirectory(prefix="labls-commit-") as tmp:
        folder = Path(tmp)
        head = git(workspace, "rev-parse", "HEAD")
        tree = _tree(workspace, plan, {"GIT_INDEX_FILE": str(folder / "index")}, folder)
        (folder / "message").write_text(message.replace("\0", "\\0"), encoding="utf-8")
        commit = git(workspace, *LABLS_AUTHOR, "commit-tree", tree, "-p", head,
                     "-F", str(folder / "message"))
    return commit, head


def keep(workspace: Path, plan: EditPlan, hypothesis: str, body: str, run_id: str) -> str:
    commit, head = _commit_tree(workspace, plan, message("labls", hypothesis, body))
    git(workspace, "update-ref", "-m", f"labls keep {run_id}", "HEAD", commit, head)
    git(workspace, "reset", "-q", "--", *plan.new)  # the index follows HEAD
    return commit


def set_aside(workspace: Path, plan: EditPlan, hypothesis: str, run_id: str, state: str) -> str:
    """Commit the edited tree off-branch; HEAD does not move."""
    ref = f"refs/labls/discarded/{run_id}"
    commit, _ = _commit_tree(workspace, plan, message("labls discarded", hypothesis,
                                                      f"run: {run_id} ({state})\n"))
    git(workspace, "update-ref", ref, commit)
    return ref


def message(prefix: str, hypothesis: str, body: str) -> str:
    """A commit message: a subject of one short line; the whole hypothesis in the body when it
    is longer than that."""
    first = " ".join(hypothesis.split())[:200] or "(no hypothesis)"
    whole = "" if first == hypothesis else f"{hypothesis}\n\n"
    return f"{prefix}: {first}\n\n{whole}{body}"
