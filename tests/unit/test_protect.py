"""Protected paths, in every edit format, and the byte-for-byte properties of writing/restoring.

Each refusal has a positive control: the same edit of an ordinary file applies, so the format
itself would have written."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from labls.lab.editplan import EditPlan, restore, unified, write_atomically
from labls.lab.edits import plan_edit
from labls.lab.protect import Guard
from labls.sandbox.wire import to_wire

FORMATS = ("searchReplace", "whole", "udiff", "workspaceEdit")


def edit_replacing(ws: Path, rel: str, fmt: str, new: str = "pwned = True\n") -> dict[str, Any]:
    """An edit, in `fmt`, that replaces the whole text of `rel` (as named) with `new`."""
    path = ws / rel
    old = path.read_text() if path.exists() else None
    if fmt == "whole":
        return {"text": new, "path": rel}
    if fmt == "searchReplace":
        return {"text": f"{rel}\n<<<<<<< SEARCH\n{old or ''}=======\n{new}>>>>>>> REPLACE\n"}
    if fmt == "udiff":
        return {"text": unified(rel, old, new)}
    lines = (old or "").split("\n")
    end = {"line": len(lines) - 1, "character": len(lines[-1])}
    return {"edit": {"changes": {path.as_uri(): [
        {"range": {"start": {"line": 0, "character": 0}, "end": end}, "newText": new}]}}}


def plan(ws: Path, fmt: str, guard: Guard | None = None, **edit: Any) -> EditPlan:
    return plan_edit(ws, fmt, edit.get("text"), edit.get("path"), edit.get("edit"), guard=guard)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "train.py").write_text("LR = 0.1\n")
    (ws / "labls.toml").write_text('[run]\nnetwork = "none"\n')
    (ws / "sub").mkdir()
    (ws / "sub" / "labls.toml").write_text("[metric]\nname = 'loss'\n")
    (ws / "eval").mkdir()
    (ws / "eval" / "score.py").write_text("def score(y):\n    return y\n")
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    (ws / "g").symlink_to(".git")  # committed in the attack; a link into .git either way
    (ws / ".labls").mkdir()
    (ws / ".labls" / "results.json").write_text('{"loss": 1.0}\n')
    return ws


PROTECTED = [".git/config", "g/config", ".labls/results.json", "labls.toml", "sub/labls.toml",
             "eval/score.py"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("rel", PROTECTED)
def test_protected_paths_are_refused_in_every_format(ws: Path, fmt: str, rel: str) -> None:
    guard = Guard(ws, ws / ".labls", ["eval"])
    target = (ws / rel).resolve()
    before = target.read_bytes()
    result = plan(ws, fmt, guard, **edit_replacing(ws, rel, fmt))
    assert not result.ok
    assert result.failures[0].reason.startswith("protected"), result.failures[0].reason
    assert rel in result.failures[0].reason or rel == result.failures[0].path
    assert target.read_bytes() == before

    control = plan(ws, fmt, guard, **edit_replacing(ws, "train.py", fmt))
    assert control.ok, control.failures
    write_atomically(control)
    assert (ws / "train.py").read_text() == "pwned = True\n"


@pytest.mark.parametrize("fmt", ["searchReplace", "whole", "udiff"])
def test_creating_a_file_inside_protected_folders_is_refused(ws: Path, fmt: str) -> None:
    for rel in (".git/hooks/post-commit", "g/hooks/pre-commit", ".labls/runs/x/results.json"):
        result = plan(ws, fmt, **edit_replacing(ws, rel, fmt, "#!/bin/sh\ntouch /tmp/x\n"))
        assert not result.ok and result.failures[0].reason.startswith("protected"), rel
        assert not (ws / rel).exists()


def test_pyproject_stays_editable_but_its_labls_table_does_not(ws: Path) -> None:
    (ws / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1"\n\n'
                                       '[tool.labls.run]\nnetwork = "none"\n')
    bump = plan(ws, "searchReplace", text='pyproject.toml\n<<<<<<< SEARCH\nversion = "1"\n'
                '=======\nversion = "2"\n>>>>>>> REPLACE\n')
    assert bump.ok, bump.failures
    loosen = plan(ws, "searchReplace", text='pyproject.toml\n<<<<<<< SEARCH\nnetwork = "none"\n'
                  '=======\nnetwork = "host"\n>>>>>>> REPLACE\n')
    assert not loosen.ok and "tool.labls" in loosen.failures[0].reason
    add = plan(ws, "whole", path="pyproject.toml",
               text='[project]\nname = "x"\n[tool.labls]\ndataset_cache_root = "/root"\n')
    assert not add.ok
    broken = plan(ws, "whole", path="pyproject.toml", text='[project\n[tool.labls.run]\n')
    assert not broken.ok and "parse" in broken.failures[0].reason


SYMLINK_DIFF = """diff --git a/leak.txt b/leak.txt
new file mode 120000
index 0000000..1111111
--- /dev/null
+++ b/leak.txt
@@ -0,0 +1 @@
+{target}
\\ No newline at end of file
"""


def test_a_diff_creating_a_symlink_is_refused(ws: Path, tmp_path: Path) -> None:
    secret = tmp_path / "host-secret"
    secret.write_text("TOKEN=hunter2\n")
    diff = SYMLINK_DIFF.format(target=secret)
    # positive control: plain `git apply` makes the link, and reading it reads the host file
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "p.diff").write_text(diff)
    subprocess.run(["git", "apply", "p.diff"], cwd=scratch, check=True,
                   env={"GIT_DIR": str(scratch / ".no-git"), "PATH": "/usr/bin:/bin"})
    assert (scratch / "leak.txt").is_symlink()
    assert "hunter2" in (scratch / "leak.txt").read_text()

    result = plan(ws, "udiff", text=diff)
    assert not result.ok and "120000" in result.failures[0].reason
    assert "hunter2" not in repr(result.files()) + repr([to_wire(f) for f in result.failures])
    assert not (ws / "leak.txt").exists()


@pytest.mark.parametrize("header", ["rename from train.py\nrename to .git/config\n",
                                    "deleted file mode 100644\n",
                                    "old mode 100644\nnew mode 160000\n"])
def test_diff_headers_beyond_content_and_exec_bit_are_refused(ws: Path, header: str) -> None:
    diff = (f"diff --git a/train.py b/train.py\n{header}--- a/train.py\n+++ b/train.py\n"
            "@@ -1 +1 @@\n-LR = 0.1\n+LR = 0.2\n")
    result = plan(ws, "udiff", text=diff)
    assert not result.ok and "labls diffs change" in result.failures[0].reason
    assert (ws / "train.py").read_text() == "LR = 0.1\n"


def test_a_diff_may_set_the_executable_bit_and_may_not_delete(ws: Path) -> None:
    diff = ("diff --git a/train.py b/train.py\nold mode 100644\nnew mode 100755\n"
            "--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-LR = 0.1\n+LR = 0.2\n")
    result = plan(ws, "udiff", text=diff)
    assert result.ok, result.failures
    write_atomically(result)
    assert (ws / "train.py").stat().st_mode & 0o100
    deleting = plan(ws, "udiff", text="--- a/train.py\n+++ /dev/null\n@@ -1 +0,0 @@\n-LR = 0.2\n")
    assert not deleting.ok and "delete" in deleting.failures[0].reason
    assert (ws / "train.py").exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_binary_target_is_a_failure_not_an_error(ws: Path, fmt: str) -> None:
    (ws / "weights.bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    edit = edit_replacing(ws, "train.py", fmt)  # shaped on a text file, aimed at the binary
    if fmt == "workspaceEdit":
        uri = (ws / "train.py").as_uri()
        edit["edit"]["changes"] = {(ws / "weights.bin").as_uri(): edit["edit"]["changes"][uri]}
    else:
        edit = {k: (v.replace("train.py", "weights.bin") if isinstance(v, str) else v)
                for k, v in edit.items()}
    result = plan(ws, fmt, **edit)
    assert not result.ok and "binary" in result.failures[0].reason, result.failures
    assert (ws / "weights.bin").read_bytes() == b"\x89PNG\r\n\x1a\n\x00\xff\xfe"


def test_crlf_files_keep_their_endings_and_restore_byte_for_byte(ws: Path) -> None:
    original = b"LR = 0.1\r\nEPOCHS = 3\r\n"
    (ws / "win.py").write_bytes(original)
    (ws / "win.py").chmod(0o751)
    # positive control: the old way (text mode read, text write) turns CRLF into LF
    text = (ws / "win.py").read_text()
    assert "\r" not in text
    result = plan(ws, "searchReplace",
                  text="win.py\n<<<<<<< SEARCH\nLR = 0.1\n=======\nLR = 0.2\n>>>>>>> REPLACE\n")
    assert result.ok, result.failures
    write_atomically(result)
    assert (ws / "win.py").read_bytes() == b"LR = 0.2\r\nEPOCHS = 3\r\n"
    assert restore(result) == []
    assert (ws / "win.py").read_bytes() == original
    assert (ws / "win.py").stat().st_mode & 0o777 == 0o751


def test_restore_leaves_a_file_someone_else_changed_meanwhile(ws: Path) -> None:
    result = plan(ws, "whole", path="train.py", text="LR = 0.2\n")
    write_atomically(result)
    (ws / "train.py").write_text("LR = 0.5  # the user's own edit\n")
    assert restore(result) == ["train.py"]
    assert (ws / "train.py").read_text() == "LR = 0.5  # the user's own edit\n"


def test_an_edit_through_an_inner_symlink_writes_the_real_file(ws: Path) -> None:
    (ws / "alias.py").symlink_to("train.py")
    result = plan(ws, "whole", path="alias.py", text="LR = 0.3\n")
    assert result.ok and list(result.new) == ["train.py"]
    write_atomically(result)
    assert (ws / "alias.py").is_symlink() and (ws / "train.py").read_text() == "LR = 0.3\n"


def test_the_users_config_dir_inside_the_workspace_is_protected(ws: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(ws / "dotconfig"))
    result = plan(ws, "whole", path="dotconfig/labls/trusted.json", text="{}")
    assert not result.ok and "user's own labls config" in result.failures[0].reason
    control = plan(ws, "whole", path="dotconfig/other/settings.json", text="{}")
    assert control.ok
