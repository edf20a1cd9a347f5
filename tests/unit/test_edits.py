from __future__ import annotations

from pathlib import Path

import pytest

from labls.lab.editplan import EditError, write_atomically
from labls.lab.edits import apply_text_edits, plan_edit

SR = "{path}\n```python\n<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n```\n"


def sr(path: str, search: str, replace: str) -> str:
    return SR.format(path=path, search=search, replace=replace)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    (tmp_path / "train.py").write_text("import torch\n\nLR = 0.1\n\ndef main():\n    lr = LR\n"
                                       "    return lr\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "model.py").write_text("WIDTH = 64\nDEPTH = 2\n")
    return tmp_path


def test_search_replace_several_files(ws: Path) -> None:
    text = ("Raise the learning rate and widen the model.\n\n" + sr("train.py", "LR = 0.1\n",
            "LR = 0.3\n") + "\n" + sr("pkg/model.py", "WIDTH = 64\n", "WIDTH = 128\n"))
    plan = plan_edit(ws, "searchReplace", text)
    assert plan.ok and set(plan.new) == {"train.py", "pkg/model.py"}
    write_atomically(plan)
    assert "LR = 0.3" in (ws / "train.py").read_text()
    assert (ws / "pkg/model.py").read_text() == "WIDTH = 128\nDEPTH = 2\n"
    assert [f["hunks"] for f in plan.files()] == [1, 1]


def test_one_bad_block_changes_nothing_and_names_the_nearest_lines(ws: Path) -> None:
    before = {p: p.read_text() for p in ws.rglob("*.py")}
    text = sr("train.py", "LR = 0.1\n", "LR = 0.2\n") + sr("pkg/model.py", "DEPTH = 3\n",
                                                            "DEPTH = 4\n")
    plan = plan_edit(ws, "searchReplace", text)
    assert not plan.ok and len(plan.failures) == 1
    failure = plan.failures[0]
    assert failure.path == "pkg/model.py" and "DEPTH = 3" in failure.block
    assert "2  DEPTH = 2" in failure.nearest
    assert {p: p.read_text() for p in ws.rglob("*.py")} == before


def test_ambiguous_search_is_refused(ws: Path) -> None:
    (ws / "dup.py").write_text("x = 1\nx = 1\n")
    plan = plan_edit(ws, "searchReplace", sr("dup.py", "x = 1\n", "x = 2\n"))
    assert not plan.ok


def test_aider_matcher_tolerates_shifted_indentation(ws: Path) -> None:
    pytest.importorskip("aider")
    plan = plan_edit(ws, "searchReplace", sr("train.py", "lr = LR\nreturn lr\n",
                                             "lr = LR * 2\nreturn lr\n"))
    assert plan.ok, plan.failures
    assert "    lr = LR * 2\n    return lr\n" in plan.new["train.py"]


@pytest.mark.parametrize("path", ["../outside.py", "/etc/passwd", "link/x.py"])
def test_paths_outside_the_workspace_are_refused(ws: Path, tmp_path_factory, path: str) -> None:
    outside = tmp_path_factory.mktemp("outside")
    (ws / "link").symlink_to(outside)
    plan = plan_edit(ws, "searchReplace", sr(path, "", "print('pwned')\n"))
    reason = plan.failures[0].reason
    assert not plan.ok and "workspace" in reason, reason
    with pytest.raises(EditError):
        plan_edit(ws, "whole", "x", path=path)
    assert not list(outside.iterdir())


def test_empty_search_creates_a_file(ws: Path) -> None:
    plan = plan_edit(ws, "searchReplace", sr("new/util.py", "", "def f():\n    return 1\n"))
    assert plan.ok and plan.old["new/util.py"] is None
    write_atomically(plan)
    assert (ws / "new/util.py").read_text().startswith("def f")


UDIFF = (  # context lines of blank source lines are a single space
    "--- a/train.py\n+++ b/train.py\n@@ -1,4 +1,4 @@\n import torch\n \n-LR = 0.1\n+LR = 0.05\n \n"
)


def test_udiff_applies_and_a_stale_one_is_refused(ws: Path) -> None:
    plan = plan_edit(ws, "udiff", UDIFF)
    assert plan.ok and "LR = 0.05" in plan.new["train.py"]
    (ws / "train.py").write_text((ws / "train.py").read_text().replace("torch", "jax"))
    stale = plan_edit(ws, "udiff", UDIFF)
    assert not stale.ok and stale.failures[0].path == "train.py"
    assert "patch" in stale.failures[0].reason and "import jax" in stale.failures[0].nearest
    assert "import jax" in (ws / "train.py").read_text()  # nothing written


def test_whole_and_workspace_edit_with_utf16(ws: Path) -> None:
    plan = plan_edit(ws, "whole", "print('hi')\n", path="train.py")
    assert plan.ok and plan.new["train.py"] == "print('hi')\n"
    (ws / "u.py").write_text('s = "😀x"\n')
    uri = (ws / "u.py").resolve().as_uri()
    edit = {"changes": {uri: [{"range": {"start": {"line": 0, "character": 7},
                                          "end": {"line": 0, "character": 8}}, "newText": "y"}]}}
    plan = plan_edit(ws, "workspaceEdit", edit=edit)
    assert plan.ok and plan.new["u.py"] == 's = "😀y"\n'  # the emoji counts as two units


def test_text_edits_apply_from_last_to_first() -> None:
    edits = [{"range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 1}},
              "newText": "A"},
             {"range": {"start": {"line": 1, "character": 0}, "end": {"line": 1, "character": 1}},
              "newText": "BB"}]
    assert apply_text_edits("a\nb\n", edits) == "A\nBB\n"


def test_malformed_requests(ws: Path) -> None:
    with pytest.raises(EditError, match="unknown format"):
        plan_edit(ws, "sed", "s/a/b/")
    with pytest.raises(EditError, match="needs `path`"):
        plan_edit(ws, "whole", "x")
    assert "no SEARCH/REPLACE block" in plan_edit(ws, "searchReplace", "hello").failures[0].reason
