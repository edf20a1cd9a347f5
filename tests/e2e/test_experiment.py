"""Experiment steps on a real git repository: keep, discard and crash in one ledger."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from labls.lab.commits import StepRefused
from labls.lab.experiment import Experiment, results_tsv
from labls.sandbox.config import Config, merge
from labls.sandbox.engine import Engine

TRAIN = "LR = {lr}\nloss = abs(LR - 0.3) + 1.0\nprint(f'loss: {{loss:.4f}}')\n"


def git(ws: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(ws), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def sr(old: str, new: str) -> dict[str, str]:
    return {"format": "searchReplace",
            "text": f"train.py\n<<<<<<< SEARCH\n{old}\n=======\n{new}\n>>>>>>> REPLACE\n"}


@pytest.fixture
def experiment(tmp_path: Path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "train.py").write_text(TRAIN.format(lr=0.1))
    git(ws, "init", "-q")
    git(ws, "add", ".")
    git(ws, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    cfg, problems = merge(Config(), {"metric": {"name": "loss", "goal": "minimize",
                                                "min_delta": 0.01}, "run": {"kill_grace_sec": 1}})
    assert not problems
    engine = Engine(ws, cfg)

    def wait(run_id: str):
        return engine.wait(run_id)

    yield ws, Experiment(engine, cfg, wait)
    engine.close()


def test_keep_discard_crash_in_one_ledger(experiment) -> None:
    ws, exp = experiment
    start = git(ws, "rev-parse", "HEAD")

    kept = exp.step("raise LR to 0.25", sr("LR = 0.1", "LR = 0.25"), "train.py")
    assert kept.verdict == "keep", kept.reason
    assert kept.baseline is not None and kept.baseline.metrics["loss"] == pytest.approx(1.2)
    assert kept.run is not None and kept.run.metrics["loss"] == pytest.approx(1.05)
    assert kept.commit == git(ws, "rev-parse", "HEAD") != start
    message = git(ws, "log", "-1", "--format=%B")
    assert "raise LR to 0.25" in message and "loss: 1.05" in message

    worse = exp.step("LR to 1.0", sr("LR = 0.25", "LR = 1.0"), "train.py")
    assert worse.verdict == "discard"
    assert git(ws, "rev-parse", "HEAD") == kept.commit  # HEAD did not move
    assert "LR = 0.25" in (ws / "train.py").read_text()  # restored
    assert worse.discarded_ref == f"refs/labls/discarded/{worse.run.run_id}"
    assert "LR = 1.0" in git(ws, "show", f"{worse.discarded_ref}:train.py")  # code not lost

    crash = exp.step("typo", sr("LR = 0.25", "LR = 0.25 +"), "train.py")
    assert crash.verdict == "crash" and crash.run is not None and crash.run.state == "failed"
    assert "SyntaxError" in crash.reason
    assert "LR = 0.25\n" in (ws / "train.py").read_text()
    assert crash.discarded_ref
    assert "LR = 0.25 +" in git(ws, "show", f"{crash.discarded_ref}:train.py")

    nomatch = exp.step("stale edit", sr("LR = 9", "LR = 8"), "train.py")
    assert nomatch.verdict == "crash" and nomatch.failures and nomatch.run is None

    assert git(ws, "status", "--porcelain", "--untracked-files=no") == ""
    ledger = exp.ledger.rows()
    assert [e["status"] for e in reversed(ledger)] == ["keep", "keep", "discard", "crash", "crash"]
    assert ledger[1]["diff"].count("+LR = 0.25 +") == 1  # the crash's diff is in the registry
    tsv = results_tsv(ledger).splitlines()
    assert tsv[0] == "commit\tmetric\tmemory_gb\tstatus\tdescription"
    assert tsv[1].startswith(start[:7]) and tsv[1].endswith("keep\tbaseline")
    assert tsv[2].startswith(kept.commit[:7]) and "1.050000" in tsv[2]


def test_dirty_or_non_git_workspace_is_refused(experiment, tmp_path: Path) -> None:
    ws, exp = experiment
    (ws / "train.py").write_text("print('loss: 0')\n")
    with pytest.raises(StepRefused, match="uncommitted"):
        exp.step("x", sr("a", "b"), "train.py")
    git(ws, "checkout", "--", "train.py")
    (ws / ".git").rename(ws / ".git-away")
    with pytest.raises(StepRefused, match="not a git repository"):
        exp.step("x", sr("a", "b"), "train.py")


def test_code_experiment_judged_by_pytest_pass_rate(tmp_path: Path) -> None:
    """A step that runs pytest (`-m pytest`) and keeps a fix that raises the pass rate."""
    ws = tmp_path / "ws"
    (ws / "tests").mkdir(parents=True)
    (ws / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    (ws / "tests" / "test_calc.py").write_text(
        "from calc import add\n\ndef test_add():\n    assert add(2, 2) == 4\n\n"
        "def test_zero():\n    assert add(0, 0) == 0\n")
    git(ws, "init", "-q")
    git(ws, "add", ".")
    git(ws, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    cfg, _ = merge(Config(), {"metric": {"name": "pass_rate", "goal": "maximize"}})
    engine = Engine(ws, cfg)
    try:
        exp = Experiment(engine, cfg, lambda run_id: engine.wait(run_id))
        edit = {"format": "searchReplace",
                "text": "calc.py\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n"
                        ">>>>>>> REPLACE\n"}
        result = exp.step("fix add", edit, "-m pytest", args=["-q", "-p", "no:cacheprovider"])
    finally:
        engine.close()
    assert result.baseline is not None and result.baseline.metrics["pass_rate"] == 0.5
    assert result.run is not None and result.run.metrics["pass_rate"] == 1.0
    assert result.run.metrics["tests_passed"] == 2 and result.verdict == "keep"


def test_noisy_baseline_spread_guards_keep(tmp_path: Path) -> None:
    """Re-running the baseline measures its noise; a change within it is not kept."""
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "train.py").write_text(
        "import random\nLR = 0.1\nprint(f'loss: {1.0 + random.random() * 0.2:.4f}')\n")
    git(ws, "init", "-q")
    git(ws, "add", ".")
    git(ws, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    cfg, _ = merge(Config(), {"metric": {"name": "loss"}, "loop": {"baseline_repeats": 4}})
    engine = Engine(ws, cfg)
    try:
        exp = Experiment(engine, cfg, lambda run_id: engine.wait(run_id))
        result = exp.step("comment only", {"format": "searchReplace", "text":
                          "train.py\n<<<<<<< SEARCH\nLR = 0.1\n=======\nLR = 0.1  # same\n"
                          ">>>>>>> REPLACE\n"}, "train.py")
        baseline_entry = exp.ledger.rows()[-1]
    finally:
        engine.close()
    assert len(result.baseline_runs) == 4
    assert baseline_entry["description"] == "baseline" and baseline_entry["spread"] > 0
    assert result.verdict == "discard" or (result.comparison is not None and abs(
        result.comparison.delta or 0) > baseline_entry["spread"])
