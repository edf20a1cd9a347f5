"""The edit formats, each filling an `EditPlan` (`editplan.py`) that is written all or nothing.

Formats, keyed by a string as aider does: `searchReplace` (aider's SEARCH/REPLACE blocks, several
files per reply), `udiff` (checked and applied by `git apply` in a scratch copy, so a hunk whose
context does not match is refused, never misapplied), `whole` (a file's new text) and
`workspaceEdit` (an LSP WorkspaceEdit). A block that does not apply is data for the agent: the
file, the block, the reason and the nearest lines, so it can retry.

Paths are confined to the workspace (no absolute paths, no `..`, no symlink leading out) and
checked against the protected paths (`protect.py`).
"""

from __future__ import annotations

import difflib
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from labls.sandbox import gitsafe

from .editplan import EditError, EditPlan, Failure, Refused
from .protect import Guard

FORMATS = ("searchReplace", "udiff", "whole", "workspaceEdit")


def plan_edit(workspace: Path, fmt: str, text: str | None = None, path: str | None = None,
              edit: dict[str, Any] | None = None, guard: Guard | None = None,
              buffers: dict[str, tuple[str, int]] | None = None) -> EditPlan:
    """Every change the edit makes, in memory; `guard` says which paths are protected (by
    default `.git`, `.labls` and labls's config); `buffers`, the editor's open buffers, are
    what the edit applies to where the file is open."""
    plan = EditPlan(workspace, guard, buffers=dict(buffers or {}))
    try:
        if fmt == "searchReplace":
            _require(text, "text", fmt)
            _plan_search_replace(plan, text or "")
        elif fmt == "whole":
            _require(text, "text", fmt)
            _require(path, "path", fmt)
            rel = plan.target(path or "")
            plan.current(rel)
            plan.new[rel] = text or ""
        elif fmt == "udiff":
            _require(text, "text", fmt)
            _plan_udiff(plan, text or "")
        elif fmt == "workspaceEdit":
            if not isinstance(edit, dict):
                raise EditError("format workspaceEdit needs `edit`, an LSP WorkspaceEdit object")
            _plan_workspace_edit(plan, edit)
        else:
            raise EditError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    except Refused as refused:
        plan.failures.append(refused.failure)
    assert plan.guard is not None
    for rel, new_text in plan.new.items():
        why = plan.guard.config_change(rel, plan.old.get(rel), new_text)
        if why:
            plan.failures.append(Failure(rel, "", f"protected: {rel}: {why}; labls edits "
                                                   "never change it"))
    if not plan.new and not plan.failures:
        plan.failures.append(Failure("", (text or "")[:500], "the edit changes nothing"))
    return plan


def _require(value: Any, name: str, fmt: str) -> None:
    if value is None:
        raise EditError(f"format {fmt} needs `{name}`")


# --- SEARCH/REPLACE ------------------------------------------------------------------------------

BLOCK = re.compile(
    r"^(?P<path>[^\n]*?)\n(?:```[^\n]*\n)?<{5,9} SEARCH[^\n]*\n(?P<search>.*?)^={5,9}[ \t]*\n"
    r"(?P<replace>.*?)^>{5,9} REPLACE[^\n]*$", re.DOTALL | re.MULTILINE)


def parse_blocks(text: str) -> list[tuple[str, str, str]]:
    """(path, search, replace) for every block; the path is the line before the block (or the
    line before its fence), as aider writes them."""
    blocks = []
    last_path = ""
    for m in BLOCK.finditer(text):
        path = m.group("path").strip().strip("`*: ").strip()
        if path.startswith("```"):
            path = ""
        path = path or last_path
        last_path = path
        blocks.append((path, m.group("search"), m.group("replace")))
    return blocks


def _plan_search_replace(plan: EditPlan, text: str) -> None:
    blocks = parse_blocks(text)
    if not blocks:
        plan.failures.append(Failure("", text[:500], "no SEARCH/REPLACE block found: expected "
                                     "`path`, `<<<<<<< SEARCH`, old lines, `=======`, new "
                                     "lines, `>>>>>>> REPLACE`"))
        return
    for path, search, replace in blocks:
        block = f"{path}\n<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE"
        try:
            rel = plan.target(path)
            current = plan.current(rel)
        except EditError as exc:
            plan.failures.append(Failure(path, block, str(exc)))
            continue
        except Refused as refused:
            plan.failures.append(Failure(path, block, refused.failure.reason))
            continue
        if current is None:
            if search.strip():
                plan.failures.append(Failure(rel, block, "file does not exist"))
            else:
                plan.new[rel] = replace  # an empty SEARCH creates the file
            continue
        if not search.strip():
            plan.new[rel] = current + replace
            continue
        updated = replace_chunk(current, search, replace)
        if updated is None:
            plan.failures.append(Failure(rel, block, "SEARCH does not match the file exactly"
                                         + ("" if aider_available() else
                                            " (install labls[aider] for whitespace tolerance)"),
                                         nearest_lines(current, search)))
        else:
            plan.new[rel] = updated


def aider_available() -> bool:
    try:
        import importlib.util

        return importlib.util.find_spec("aider") is not None
    except ValueError:
        return False


def replace_chunk(whole: str, search: str, replace: str) -> str | None:
    """Exact match first; then aider's matcher (indentation shifts, `...` elisions)."""
    if whole.count(search) == 1:
        return whole.replace(search, replace, 1)
    if whole.count(search) > 1:
        return None  # ambiguous: refuse rather than guess
    if aider_available():
        from aider.coders.editblock_coder import replace_most_similar_chunk

        result = replace_most_similar_chunk(whole, search, replace)
        return result if result else None
    return None


def nearest_lines(whole: str, search: str, context: int = 2) -> str:
    """The window of the file most similar to `search`, with line numbers."""
    lines = whole.splitlines()
    wanted = search.splitlines() or [""]
    size = len(wanted)
    best, best_at = -1.0, 0
    for start in range(max(1, len(lines) - size + 1)):
        window = lines[start : start + size]
        score = difflib.SequenceMatcher(None, "\n".join(window), "\n".join(wanted)).ratio()
        if score > best:
            best, best_at = score, start
    lo, hi = max(0, best_at - context), min(len(lines), best_at + size + context)
    return "\n".join(f"{n + 1:5d}  {lines[n]}" for n in range(lo, hi))


# --- unified diffs -------------------------------------------------------------------------------

DIFF_PATH = re.compile(r"^(?:---|\+\+\+) (?:[ab]/)?(?P<path>[^\t\n]+)", re.MULTILINE)
# git's extended headers: only content changes of regular files, new files and the exec bit
MODE_LINE = re.compile(r"^(?:new file mode|new mode|old mode|deleted file mode|index \S+) "
                       r"?(?P<mode>\d{6})?\s*$", re.MULTILINE)
REFUSED_HEADERS = re.compile(r"^(?P<what>rename from|rename to|copy from|copy to|deleted file "
                             r"mode|GIT binary patch|Binary files )", re.MULTILINE)


def _plan_udiff(plan: EditPlan, text: str) -> None:
    paths = sorted({m.group("path").strip() for m in DIFF_PATH.finditer(text)} - {"/dev/null"})
    if not paths:
        plan.failures.append(Failure("", text[:500], "no `---`/`+++` file headers found"))
        return
    header = REFUSED_HEADERS.search(text)
    bad_mode = next((m.group("mode") for m in MODE_LINE.finditer(text)
                     if m.group("mode") and m.group("mode") not in ("100644", "100755")), None)
    if header or bad_mode:
        what = (f"a `{header.group('what').strip()}` header" if header else
                f"file mode {bad_mode} (a symlink, submodule or special file)")
        plan.failures.append(Failure(paths[0], text[:500], f"the diff has {what}: labls diffs "
                                     "change the text of regular files, create them, and set "
                                     "or clear the executable bit; nothing else"))
        return
    try:
        rels = [plan.target(p) for p in paths]
        for rel in rels:
            plan.current(rel)
    except EditError as exc:
        plan.failures.append(Failure("", text[:500], str(exc)))
        return
    except Refused as refused:
        plan.failures.append(Failure(refused.failure.path, text[:500], refused.failure.reason))
        return
    named: dict[str, str] = dict(zip(paths, rels, strict=True))
    if any(p != r for p, r in named.items()):  # through an in-workspace symlink: its real path
        def real(m: re.Match[str]) -> str:
            path: str = m.group("path") or ""
            return m.group(0).replace(path, named.get(path.strip(), path))

        text = DIFF_PATH.sub(real, text)
    with tempfile.TemporaryDirectory(prefix="labls-udiff-") as tmp:
        scratch = Path(tmp)
        for rel in rels:
            old = plan.old.get(rel)
            if old is not None:
                (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
                (scratch / rel).write_text(old, encoding="utf-8", newline="")
                (scratch / rel).chmod(plan.modes[rel] & 0o777)
        patch = scratch / ".labls.patch"
        patch.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        strip = "-p1" if re.search(r"^--- (a/|/dev/null)", text, re.MULTILINE) else "-p0"
        check = _git_apply(scratch, ["--check", "--verbose", strip, str(patch)])
        if check.returncode != 0:
            plan.failures.append(_diff_failure(plan, rels[0], text, check.stderr))
            return
        done = _git_apply(scratch, [strip, str(patch)])
        if done.returncode != 0:
            plan.failures.append(Failure(rels[0], text[:2000], done.stderr.strip()))
            return
        for rel in rels:
            target = scratch / rel
            if target.is_symlink() or (target.exists() and not target.is_file()):
                plan.failures.append(Failure(rel, text[:500], "the diff makes a symlink or a "
                                             "special file; labls edits write regular files"))
                return
            if not target.exists():
                if plan.old.get(rel) is not None:
                    plan.failures.append(Failure(rel, text[:500], "the diff deletes the file; "
                                                 "labls edits do not delete files"))
                    return
                continue
            plan.new[rel] = target.read_bytes().decode("utf-8", "replace")
            executable = bool(target.stat().st_mode & 0o100)
            was = bool(plan.modes.get(rel, 0o644) & 0o100)
            if executable != was:
                plan.executable[rel] = executable


def _diff_failure(plan: EditPlan, first: str, text: str, stderr: str) -> Failure:
    reason = stderr.strip() or "git apply --check refused the diff"
    path, near = first, ""
    m = re.search(r"patch failed: ([^:]+):(\d+)", reason)
    if m:
        path = m.group(1)
        lines = (plan.old.get(path) or "").splitlines()
        line = int(m.group(2))
        near = "\n".join(f"{n + 1:5d}  {lines[n]}" for n in
                         range(max(0, line - 3), min(len(lines), line + 5)))
    return Failure(path, text[:2000], reason, near)


def _git_apply(cwd: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    env = gitsafe.clean_env({"GIT_DIR": str(cwd / ".no-git")})  # plain patch mode, no repo
    return subprocess.run(["git", *gitsafe.overrides(None), "apply", "--whitespace=nowarn",
                           *args], cwd=cwd, env=env, capture_output=True, text=True,
                          check=False)


# --- LSP WorkspaceEdit ---------------------------------------------------------------------------


def _plan_workspace_edit(plan: EditPlan, edit: dict[str, Any]) -> None:
    changes: list[tuple[str, list[dict[str, Any]]]] = []
    for uri, edits in (edit.get("changes") or {}).items():
        changes.append((uri, edits))
    for doc_edit in edit.get("documentChanges") or []:
        if "textDocument" not in doc_edit:
            plan.failures.append(Failure("", str(doc_edit)[:500],
                                         "only TextDocumentEdit entries are supported"))
            return
        changes.append((doc_edit["textDocument"]["uri"], doc_edit.get("edits", [])))
    for uri, edits in changes:
        if not uri.startswith("file://"):
            plan.failures.append(Failure(uri, "", "only file:// URIs are supported"))
            continue
        from urllib.parse import unquote, urlparse

        absolute = Path(unquote(urlparse(uri).path))
        try:
            rel = plan.target(os.path.relpath(absolute, plan.workspace.resolve()))
        except EditError as exc:
            plan.failures.append(Failure(uri, "", str(exc)))
            continue
        current = plan.current(rel) or ""
        try:
            plan.new[rel] = apply_text_edits(current, edits)
        except (KeyError, TypeError, ValueError) as exc:
            plan.failures.append(Failure(rel, str(edits)[:500], f"bad TextEdit: {exc}"))


def apply_text_edits(text: str, edits: list[dict[str, Any]]) -> str:
    """Apply LSP TextEdits (UTF-16 positions) from last to first, so offsets stay valid."""
    lines = text.splitlines(keepends=True)

    def offset(pos: dict[str, int]) -> int:
        line, character = int(pos["line"]), int(pos["character"])
        if line >= len(lines):
            return len(text)
        before = sum(len(x) for x in lines[:line])
        units = lines[line].encode("utf-16-le")[: character * 2].decode("utf-16-le", "ignore")
        return before + len(units)

    spans = sorted(((offset(e["range"]["start"]), offset(e["range"]["end"]), e["newText"])
                    for e in edits), reverse=True)
    for start, end, new in spans:
        if end < start:
            raise ValueError("range end before start")
        text = text[:start] + new + text[end:]
    return text
