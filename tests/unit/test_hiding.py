"""Where the files a run must not see are: the patterns' rules, and the walk's record of folders
(re-read only when their stat changes, never trusted for a folder changed just now)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from labls.sandbox import hiding
from labls.sandbox.hiding import Patterns, find_hidden


@pytest.mark.parametrize(("rel", "is_dir", "hide", "hidden"), [
    (".env", False, (), True),
    ("deep/down/.env.local", False, (), True),
    ("keys/server.pem", False, (), True),
    ("home/.ssh/id_ed25519.pub", False, (), True),
    ("id_utils.py", False, (), False),  # ssh keys, not every id_*
    ("envs/.environment", False, (), False),
    ("private", True, ("private/",), True),
    ("private", False, ("private/",), False),  # a trailing / names folders only
    ("a/private", True, ("private/",), True),  # no other / : at any depth
    ("a/data/raw", True, ("data/raw",), False),  # with a / : anchored at the top
    ("data/raw", True, ("/data/raw",), True),
    ("data/x/y.sqlite", False, ("data/*.sqlite",), False),  # * stays within a folder
    ("data/x/y.sqlite", False, ("data/**/*.sqlite",), True),
    ("data/y.sqlite", False, ("data/**/*.sqlite",), True),
    ("run3.log", False, ("run[0-9].log",), True),
    ("runx.log", False, ("run[!x].log",), False),
])
def test_patterns_follow_gitignores_rules(rel, is_dir, hide, hidden) -> None:
    assert Patterns(hide).hides(rel, is_dir) is hidden


def test_a_file_below_a_hidden_folder_is_hidden() -> None:
    patterns = Patterns(("private/",))
    assert patterns.hides_path("private/plan.md")
    assert patterns.hides_path("a/private/b/c.txt")
    assert not patterns.hides_path("public/plan.md")


def layout(ws: Path) -> Path:
    state = ws / ".labls"
    for rel, text in {"src/model.py": "x\n", "src/.env": "KEY=1\n", "node_modules/m/x.js": "",
                      "node_modules/m/deploy.key": "k\n", "data/private/a.csv": "1\n",
                      ".git/config": "", ".labls/runs/x": ""}.items():
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_text(text)
    return state


def test_the_walk_finds_secrets_at_any_depth_and_hides_git_and_the_state_dir(tmp_path) -> None:
    state = layout(tmp_path)
    found = find_hidden(tmp_path, state, ["private/"])
    assert set(found) == {".git", ".labls", "src/.env", "node_modules/m/deploy.key",
                          "data/private"}


def test_a_folder_is_read_again_when_it_changes(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(hiding, "_RACY_NS", 0)  # every folder old enough to remember
    state = layout(tmp_path)
    assert "src/new.pem" not in find_hidden(tmp_path, state, [])
    assert (state / hiding.RECORD_NAME).is_file()
    (tmp_path / "src" / "new.pem").write_text("secret\n")
    (tmp_path / "node_modules" / "n").mkdir()
    (tmp_path / "node_modules" / "n" / ".netrc").write_text("machine x\n")
    found = find_hidden(tmp_path, state, [])
    assert {"src/new.pem", "node_modules/n/.netrc"} <= set(found)
    (tmp_path / "src" / "new.pem").rename(tmp_path / "src" / "new.txt")
    assert "src/new.pem" not in find_hidden(tmp_path, state, [])


def test_other_patterns_do_not_reuse_the_record(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(hiding, "_RACY_NS", 0)
    state = layout(tmp_path)
    find_hidden(tmp_path, state, [])
    assert "src/model.py" in find_hidden(tmp_path, state, ["*.py"])


def forge(state: Path, ws: Path, keep_key: bool) -> None:
    """Rewrite the record to say `src/` holds no secret, with `src`'s true stat or another."""
    path = state / hiding.RECORD_NAME
    data = json.loads(path.read_text())
    key, _, folders = data["folders"]["src"]
    if not keep_key:
        key = [key[0] + 1, key[1], key[2]]
    data["folders"]["src"] = [key, [], folders]
    path.write_text(json.dumps(data))


def test_a_record_that_does_not_match_the_folders_stat_is_not_believed(tmp_path,
                                                                      monkeypatch) -> None:
    monkeypatch.setattr(hiding, "_RACY_NS", 0)
    state = layout(tmp_path)
    find_hidden(tmp_path, state, [])
    forge(state, tmp_path, keep_key=False)
    assert "src/.env" in find_hidden(tmp_path, state, [])
    # control: the same lie with the folder's true stat is believed, so the test sees a miss
    forge(state, tmp_path, keep_key=True)
    assert "src/.env" not in find_hidden(tmp_path, state, [])


def test_a_folder_changed_just_now_is_never_remembered(tmp_path) -> None:
    state = layout(tmp_path)
    find_hidden(tmp_path, state, [])  # every folder is seconds old: nothing remembered
    assert not (state / hiding.RECORD_NAME).exists()
    old = 1_000_000_000
    for folder in (tmp_path, tmp_path / "src"):
        os.utime(folder, ns=(old, old))  # mtime alone: ctime stays now, still too recent
    find_hidden(tmp_path, state, [])
    assert not (state / hiding.RECORD_NAME).exists()


def test_an_unreadable_record_means_a_full_walk(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(hiding, "_RACY_NS", 0)
    state = layout(tmp_path)
    for junk in ("{", "[]", '{"version": 1, "patterns": [], "folders": {"src": 3}}'):
        (state / hiding.RECORD_NAME).write_text(junk)
        assert "src/.env" in find_hidden(tmp_path, state, [])
