from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from labls.sandbox.config import Config, load, merge
from labls.sandbox.wire import to_wire


def test_defaults_match_the_protocol_table() -> None:
    cfg = Config()
    assert cfg.dataset_cache_root == "/opt/datasets" and cfg.state_dir == ".labls"
    assert (cfg.run.timeout_sec, cfg.run.kill_grace_sec, cfg.run.network) == (300, 5, "none")
    assert (cfg.run.isolation, cfg.run.gpus, cfg.run.max_concurrent) == ("auto", "auto", 0)
    assert (cfg.metric.name, cfg.metric.goal, cfg.metric.min_delta) == ("val_bpb", "minimize", 0)


def test_camel_and_snake_case_both_accepted() -> None:
    cfg, problems = merge(Config(), {"datasetCacheRoot": "/d", "run": {"timeoutSec": 7,
                                     "max_concurrent": 2}, "metric": {"minDelta": 0.5}})
    assert not problems
    assert (cfg.dataset_cache_root, cfg.run.timeout_sec, cfg.run.max_concurrent) == ("/d", 7, 2)
    assert cfg.metric.min_delta == 0.5


def test_bad_values_keep_previous_and_name_the_key() -> None:
    base, _ = merge(Config(), {"run": {"timeout_sec": 30}})
    cfg, problems = merge(base, {"run": {"timeout_sec": -1, "gpus": "all", "env": ["A B"],
                                         "python": "python3"},
                                 "metric": {"goal": "up"}, "nonsense": 1, "run.x": 2})
    assert cfg.run.timeout_sec == 30 and cfg.run.gpus == "auto" and cfg.metric.goal == "minimize"
    keys = {p.key for p in problems}
    assert keys == {"run.timeout_sec", "run.gpus", "run.env", "run.python", "metric.goal",
                    "nonsense", "run.x"}
    assert all(p.key in str(p) for p in problems)


def test_paths_must_be_absolute() -> None:
    cfg, problems = merge(Config(), {"dataset_cache_root": "data", "run": {"python": "py"}})
    assert cfg.dataset_cache_root == "/opt/datasets" and cfg.run.python == "auto"
    assert {p.key for p in problems} == {"dataset_cache_root", "run.python"}
    cfg, _ = merge(Config(), {"dataset_cache_root": "~/datasets"})
    assert cfg.dataset_cache_root == os.path.expanduser("~/datasets")


def test_booleans_are_not_numbers() -> None:
    cfg, problems = merge(Config(), {"run": {"timeout_sec": True, "max_concurrent": False}})
    assert cfg.run.timeout_sec == 300 and cfg.run.max_concurrent == 0 and len(problems) == 2


def test_file_layers_and_precedence(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.labls]\nstate_dir = "s1"\n[tool.labls.run]\n'
                                             'timeout_sec = 10\nmemory_mb = 64\n')
    cfg, problems = load(tmp_path, {"run": {"timeoutSec": 20}}, {"run": {"memoryMb": 128}})
    assert not problems
    assert (cfg.state_dir, cfg.run.timeout_sec, cfg.run.memory_mb) == ("s1", 20, 128)
    (tmp_path / "labls.toml").write_text('state_dir = "s2"\n')  # labls.toml wins over pyproject
    cfg, _ = load(tmp_path)
    assert cfg.state_dir == "s2" and cfg.run.timeout_sec == 300


def test_unreadable_toml_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "labls.toml").write_text("this is [not toml")
    cfg, problems = load(tmp_path)
    assert cfg == Config() and problems and problems[0].key == "labls.toml"


def test_user_datasets_validated() -> None:
    cfg, problems = merge(Config(), {"datasets": {"mine": {"files": ["a.npy"]}}})
    assert not problems and cfg.datasets["mine"].path == "mine"
    _, problems = merge(Config(), {"datasets": {"bad": {"path": "../x", "files": ["a"]}}})
    assert problems and "relative" in problems[0].reason


def test_wire_form_is_camel_case() -> None:
    wire = to_wire(Config())
    assert wire["datasetCacheRoot"] == "/opt/datasets" and wire["run"]["timeoutSec"] == 300


def test_toml_cache_is_exact_and_best_effort(tmp_path: Path, monkeypatch) -> None:
    from labls.sandbox import tomlcache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "labls.toml").write_text('state_dir = "s1"\n')
    assert load(ws)[0].state_dir == "s1"
    [entry] = tomlcache.cache_dir().iterdir()
    cached = json.loads(entry.read_text())
    cached["data"]["state_dir"] = "from-cache"  # a hit returns the cached data, not a new parse
    entry.write_text(json.dumps(cached))
    assert load(ws)[0].state_dir == "from-cache"
    (ws / "labls.toml").write_text('state_dir = "s2"\n')  # same size, other text: parsed again
    assert load(ws)[0].state_dir == "s2"
    entry.write_text("{not json")
    assert load(ws)[0].state_dir == "s2"
    (ws / "labls.toml").write_text('state_dir = "s3"\nwhen = 2026-11-22\n')  # a date: no cache
    cfg, problems = load(ws)
    assert cfg.state_dir == "s3" and [p.key for p in problems] == ["when"]
    assert "s3" not in entry.read_text()
    monkeypatch.setenv("XDG_CACHE_HOME", str(ws / "labls.toml"))  # a file: nothing can be written
    assert load(ws)[0].state_dir == "s3"


def test_labls_run_reads_its_config_through_the_cache(tmp_path: Path) -> None:
    """`labls run` with a warm config cache never loads tomllib. (The engine's own modules
    load plainly, up front: lazily they saved `labls run` under 10 ms, and made the first run
    of a language server hold its loop for 100 ms while they loaded.)"""
    (tmp_path / "labls.toml").write_text('state_dir = "s"\n')
    code = ("import sys\nfrom pathlib import Path\nfrom labls.server import cli, cli_runs\n"
            "from labls.sandbox import config, engine\n"
            f"config.load(Path({str(tmp_path)!r}))\n"
            "slow = ('tomllib',)\n"
            "print(sorted(m for m in slow if m in sys.modules))\n")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, check=True).stdout.strip() for _ in range(2)]
    assert runs == ["['tomllib']", "[]"]  # the first run parsed and filled the cache
