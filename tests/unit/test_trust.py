"""A workspace file may tighten by itself and loosen only once the user trusts it, as it reads.

Each refusal has its positive control: the same file, trusted, does take effect."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from labls.sandbox.config import Config, load

LOOSENING = """dataset_cache_root = "/root"
[run]
isolation = "none"
network = "host"
env = ["AWS_SECRET_ACCESS_KEY"]
timeout_sec = 3000
max_timeout_sec = 99999
memory_mb = 0
python = "/usr/bin/python3"
[metric]
name = "loss"
goal = "maximize"
min_delta = 0.0
[loop]
model = "openai/attacker-endpoint"
baseline_repeats = 0
"""
LOOSENED_KEYS = {"dataset_cache_root", "run.isolation", "run.network", "run.env",
                 "run.max_timeout_sec", "run.python", "metric.name", "metric.goal",
                 "loop.model", "loop.baseline_repeats"}


def labls(ws: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "labls.server.cli", *args], cwd=ws,
                          capture_output=True, text=True)


def test_an_untrusted_file_cannot_loosen_and_a_trusted_one_can(tmp_path: Path) -> None:
    (tmp_path / "labls.toml").write_text(LOOSENING)
    cfg, problems = load(tmp_path)
    defaults = Config()
    assert cfg.run.isolation == "auto" and cfg.run.network == "none" and cfg.run.env == []
    assert cfg.dataset_cache_root == defaults.dataset_cache_root
    assert (cfg.metric.name, cfg.metric.goal) == (defaults.metric.name, "minimize")
    assert cfg.run.max_timeout_sec == defaults.run.max_timeout_sec
    assert cfg.loop.model == defaults.loop.model and cfg.run.python == "auto"
    assert cfg.run.timeout_sec == 3000  # a budget under the ceiling is the workspace's to set
    refused = {p.key for p in problems if "not trusted" in p.reason}
    assert refused == LOOSENED_KEYS, problems
    assert all("labls trust" in str(p) for p in problems if p.key in refused)

    done = labls(tmp_path, "trust")  # positive control: the same file, trusted
    assert done.returncode == 0, done.stderr
    assert "run.network" in done.stdout
    cfg, problems = load(tmp_path)
    assert not problems, problems
    assert (cfg.run.isolation, cfg.run.network, cfg.run.env) == ("none", "host",
                                                                 ["AWS_SECRET_ACCESS_KEY"])
    assert (cfg.dataset_cache_root, cfg.metric.goal, cfg.run.max_timeout_sec) == (
        "/root", "maximize", 99999)


def test_a_file_changed_after_trust_is_untrusted_again(tmp_path: Path) -> None:
    (tmp_path / "labls.toml").write_text('[run]\nnetwork = "host"\nisolation = "none"\n')
    assert labls(tmp_path, "trust").returncode == 0
    assert load(tmp_path)[0].run.network == "host"
    (tmp_path / "labls.toml").write_text('[run]\nnetwork = "host"\nisolation = "none"\n'
                                         'env = ["GITHUB_TOKEN"]\n')
    cfg, problems = load(tmp_path)
    assert (cfg.run.network, cfg.run.isolation, cfg.run.env) == ("none", "auto", [])
    assert {p.key for p in problems} == {"run.network", "run.isolation", "run.env"}
    assert all("changed since you trusted it" in p.reason for p in problems)
    assert labls(tmp_path, "trust", "--revoke").returncode == 0


def test_tightening_needs_no_trust(tmp_path: Path) -> None:
    (tmp_path / "labls.toml").write_text(
        '[run]\nmemory_mb = 512\nmax_processes = 64\ntimeout_sec = 30\nmax_timeout_sec = 60\n'
        'kill_grace_sec = 1\nisolation = "bwrap"\n[metric]\nmin_delta = 0.05\n'
        'require_provenance = true\n[loop]\nbaseline_repeats = 3\n[edit]\nprotect = ["eval.py"]\n')
    cfg, problems = load(tmp_path)
    assert not problems, problems
    assert (cfg.run.memory_mb, cfg.run.max_processes, cfg.run.max_timeout_sec) == (512, 64, 60)
    assert cfg.metric.min_delta == 0.05 and cfg.metric.require_provenance
    assert cfg.loop.baseline_repeats == 3 and cfg.edit.protect == ["eval.py"]


def test_the_user_file_is_trusted_and_the_workspace_tightens_it(tmp_path: Path,
                                                               user_config_home: Path) -> None:
    user_config_home.mkdir(parents=True)
    (user_config_home / "config.toml").write_text(
        '[run]\nmemory_mb = 4096\nenv = ["HF_TOKEN", "WANDB_API_KEY"]\n[metric]\nname = "acc"\n'
        'goal = "maximize"\n')
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "labls.toml").write_text('[run]\nmemory_mb = 8192\nenv = ["HF_TOKEN"]\n'
                                   '[metric]\ngoal = "minimize"\n')
    cfg, problems = load(ws)
    assert cfg.run.memory_mb == 4096  # raising the user's cap is loosening
    assert cfg.run.env == ["HF_TOKEN"]  # a subset of the user's allow-list tightens
    assert (cfg.metric.name, cfg.metric.goal) == ("acc", "maximize")
    assert {p.key for p in problems} == {"run.memory_mb", "metric.goal"}
    # the editor's settings (and CLI flags) are the user's: they may loosen
    cfg, problems = load(ws, {"run": {"memoryMb": 16384}})
    assert cfg.run.memory_mb == 16384


def test_a_user_config_inside_the_workspace_is_not_the_users(tmp_path: Path,
                                                            monkeypatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".config"))
    (tmp_path / ".config" / "labls").mkdir(parents=True)
    (tmp_path / ".config" / "labls" / "config.toml").write_text('[run]\nnetwork = "host"\n')
    cfg, problems = load(tmp_path)
    assert cfg.run.network == "none" and "inside the workspace" in str(problems[0])


def test_trust_of_pyproject_covers_only_the_labls_table(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1"\n'
                                             '[tool.labls.run]\nnetwork = "host"\n')
    assert labls(tmp_path, "trust").returncode == 0
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "2"\n'
                                             '[tool.labls.run]\nnetwork = "host"\n')
    assert load(tmp_path)[0].run.network == "host"


def test_the_budget_never_exceeds_the_ceiling(tmp_path: Path) -> None:
    cfg, problems = load(tmp_path, {"run": {"timeoutSec": 7200}})
    assert cfg.run.timeout_sec == cfg.run.max_timeout_sec == 3600
    assert "using the ceiling" in str(problems[0])
    cfg, problems = load(tmp_path, {"run": {"timeoutSec": 7200, "maxTimeoutSec": 9000}})
    assert cfg.run.timeout_sec == 7200 and not problems


def test_trust_with_nothing_to_trust_says_so(tmp_path: Path) -> None:
    done = labls(tmp_path, "trust")
    assert done.returncode == 2 and "nothing to trust" in done.stderr


def test_trust_records_inside_the_workspace_do_not_count(tmp_path: Path, monkeypatch) -> None:
    """A dotfiles repository holding ~/.config: its trust records are the agent's to write."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "dotconfig"))
    (tmp_path / "labls.toml").write_text('[run]\nnetwork = "host"\n')
    assert labls(tmp_path, "trust").returncode == 0
    cfg, problems = load(tmp_path)
    assert cfg.run.network == "none" and "inside the workspace" in problems[0].reason
    # positive control: the same records outside the workspace count
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path.parent / f"{tmp_path.name}-config"))
    assert labls(tmp_path, "trust").returncode == 0
    assert load(tmp_path)[0].run.network == "host"


def test_the_state_dir_must_be_a_folder_of_its_own(tmp_path: Path) -> None:
    for bad in (".", "./", "./."):
        (tmp_path / "labls.toml").write_text(f'state_dir = "{bad}"\n')
        cfg, problems = load(tmp_path)
        assert cfg.state_dir == ".labls" and problems[0].key == "state_dir"
    (tmp_path / "labls.toml").write_text('state_dir = "../elsewhere"\n')
    cfg, problems = load(tmp_path)  # outside the workspace loosens: it needs trust
    assert cfg.state_dir == ".labls" and "not trusted" in problems[0].reason
