"""The rules hold against a hostile agent: steps on a real git repository with real runs.

Every defence has a positive control showing the attack works on plain git (or the old way)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from labls.lab.editplan import restore_files, unified, write_atomically
from labls.lab.edits import plan_edit
from labls.lab.experiment import Experiment
from labls.lab.journal import Journal, StepLock
from labls.lab.loop import AutoLoop, LoopSpec, LoopState
from labls.lab.prompting import repair_context
from labls.sandbox.config import Config, merge
from labls.sandbox.engine import Engine, RunRequest

TRAIN = "LR = {lr}\nloss = abs(LR - 0.3) + 1.0\nprint(f'loss: {{loss:.4f}}')\n"


def git(ws: Path, *args: str, check: bool = True) -> str:
    return subprocess.run(["git", "-C", str(ws), *args], capture_output=True, text=True,
                          check=check).stdout.strip()


def sr(path: str, old: str, new: str) -> dict[str, str]:
    return {"format": "searchReplace",
            "text": f"{path}\n<<<<<<< SEARCH\n{old}=======\n{new}>>>>>>> REPLACE\n"}


def lr(old: str, new: str) -> dict[str, str]:
    return sr("train.py", f"LR = {old}\n", f"LR = {new}\n")


def make_ws(root: Path, files: dict[str, str | bytes]) -> Path:
    ws = root / "ws"
    ws.mkdir(parents=True)
    for rel, content in files.items():
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            (ws / rel).write_bytes(content)
        else:
            (ws / rel).write_text(content)
    git(ws, "init", "-q")
    git(ws, "add", ".")
    git(ws, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    return ws


class Lab:
    def __init__(self, ws: Path, **settings: Any) -> None:
        layer = {"metric": {"name": "loss", "goal": "minimize", **settings.pop("metric", {})},
                 "run": {"kill_grace_sec": 1}, **settings}
        self.cfg, problems = merge(Config(), layer)
        assert not problems, problems
        self.ws = ws
        self.engine = Engine(ws, self.cfg)
        self.exp = Experiment(self.engine, self.cfg, lambda run_id: self.engine.wait(run_id))

    def exp_guard(self) -> Any:
        from labls.lab.experiment import guard_for

        return guard_for(self.ws, self.cfg)

    def ledger(self) -> list[dict[str, Any]]:
        return list(reversed(self.exp.ledger.rows()))


@pytest.fixture
def labs():
    made: list[Lab] = []

    def make(ws: Path, **settings: Any) -> Lab:
        made.append(Lab(ws, **settings))
        return made[-1]

    yield make
    for lab in made:
        lab.engine.close()


def test_a_symlink_into_git_cannot_plant_an_fsmonitor(tmp_path: Path, labs) -> None:
    ws = make_ws(tmp_path, {"train.py": TRAIN.format(lr=0.1)})
    (ws / "g").symlink_to(".git")
    git(ws, "add", "g")
    git(ws, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a link")
    marker = tmp_path / "pwned"
    hook = tmp_path / "monitor.sh"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)
    config = (ws / ".git" / "config").read_text()
    planted = config + f"[core]\n\tfsmonitor = {hook}\n"
    lab = labs(ws)
    result = lab.exp.step("tune git", {"format": "whole", "path": "g/config", "text": planted},
                          "train.py")
    assert result.verdict == "crash" and result.failures
    assert result.failures[0]["reason"].startswith("protected")
    assert (ws / ".git" / "config").read_text() == config

    # positive control: with the fsmonitor planted (as the edit would have), plain git runs it
    (ws / ".git" / "config").write_text(planted)
    git(ws, "status", "--porcelain")
    assert marker.exists()
    marker.unlink()
    # ... and labls's own git never does, through a whole step
    kept = lab.exp.step("LR 0.25", lr("0.1", "0.25"), "train.py")
    assert kept.verdict == "keep", kept.reason
    assert not marker.exists()


def test_a_file_named_like_pathspec_magic_commits_only_itself(tmp_path: Path, labs) -> None:
    ws = make_ws(tmp_path, {"train.py": TRAIN.format(lr=0.1)})
    (ws / "notes.txt").write_text("the user's untracked notes\n")
    # positive control: plain `git add -- ':(top)*'` takes every untracked file
    scratch = make_ws(tmp_path / "scratch", {"a.py": "x\n"})
    (scratch / "private.txt").write_text("mine\n")
    (scratch / ":(top)*").write_text("y\n")
    git(scratch, "add", "--", ":(top)*")
    assert "private.txt" in git(scratch, "diff", "--cached", "--name-only")

    lab = labs(ws)
    both = {"format": "udiff", "text": unified("train.py", TRAIN.format(lr=0.1),
                                               TRAIN.format(lr=0.25))
            + unified(":(top)*", None, "x = 1\n")}
    result = lab.exp.step("LR 0.25 and a strange file", both, "train.py")
    assert result.verdict == "keep", result.reason
    committed = git(ws, "show", "--name-only", "--format=", "HEAD").splitlines()
    assert sorted(committed) == [":(top)*", "train.py"]
    assert "notes.txt" in git(ws, "status", "--porcelain")  # still untracked, still the user's


def test_hypotheses_with_a_nul_or_of_200_kb_are_stored_whole(tmp_path: Path, labs) -> None:
    ws = make_ws(tmp_path, {"train.py": TRAIN.format(lr=0.1)})
    nul = "raise LR\0 to 0.25"
    huge = "widen everything " * 12_000  # ~200 KB
    # positive control: neither can be a git argument
    with pytest.raises(ValueError, match="null"):
        subprocess.run(["git", "-C", str(ws), "commit", "-m", nul], capture_output=True)
    with pytest.raises(OSError, match="Argument list too long"):
        subprocess.run(["git", "-C", str(ws), "commit", "-m", huge], capture_output=True)
    lab = labs(ws)
    first = lab.exp.step(nul, lr("0.1", "0.25"), "train.py")
    assert first.verdict == "keep", first.reason
    assert "raise LR\\0 to 0.25" in git(ws, "log", "-1", "--format=%B")
    second = lab.exp.step(huge, lr("0.25", "0.28"), "train.py")
    assert second.verdict == "keep", second.reason
    assert len(git(ws, "log", "-1", "--format=%s")) < 300  # a short subject, the rest in the body
    assert huge.strip() in git(ws, "log", "-1", "--format=%b")
    rows = lab.ledger()
    assert rows[1]["description"] == nul and rows[2]["description"] == huge
    assert git(ws, "status", "--porcelain", "--untracked-files=no") == ""


def test_an_edit_creating_an_ignored_file_is_refused_before_the_run(tmp_path: Path,
                                                                    labs) -> None:
    ws = make_ws(tmp_path, {"train.py": TRAIN.format(lr=0.1), ".gitignore": "*.log\n.env\n"})
    # positive control: git refuses to add an ignored file, which used to fail after the run
    (ws / "x.log").write_text("x\n")
    assert subprocess.run(["git", "-C", str(ws), "add", "--", "x.log"],
                          capture_output=True).returncode != 0
    (ws / "x.log").unlink()
    lab = labs(ws)
    edit = {"format": "searchReplace", "text": lr("0.1", "0.25")["text"] + "\n"
            + sr("debug.log", "", "noise\n")["text"]}
    result = lab.exp.step("LR and a log", edit, "train.py")
    assert result.verdict == "crash" and "git ignores" in result.reason
    assert result.run is None and not (ws / "debug.log").exists()
    assert "LR = 0.1\n" in (ws / "train.py").read_text()
    assert lab.ledger()[-1]["status"] == "crash" and "debug.log" in lab.ledger()[-1]["reason"]
    later = lab.exp.step("LR 0.25", lr("0.1", "0.25"), "train.py")  # the next step is not stuck
    assert later.verdict == "keep", later.reason


def test_a_discard_restores_crlf_and_modes_byte_for_byte(tmp_path: Path, labs) -> None:
    crlf = TRAIN.format(lr=0.1).replace("\n", "\r\n").encode()
    ws = make_ws(tmp_path, {"train.py": crlf})
    (ws / "train.py").chmod(0o755)
    git(ws, "add", "train.py")
    git(ws, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "exec")
    lab = labs(ws)
    worse = lab.exp.step("LR 1.0", lr("0.1", "1.0"), "train.py")
    assert worse.verdict == "discard", worse.reason
    assert (ws / "train.py").read_bytes() == crlf
    assert (ws / "train.py").stat().st_mode & 0o777 == 0o755
    assert b"LR = 1.0\r\n" in subprocess.run(
        ["git", "-C", str(ws), "show", f"{worse.discarded_ref}:train.py"],
        capture_output=True, check=True).stdout  # the tried code kept, in its own endings


def test_a_step_in_flight_holds_the_lock_and_never_reverts_the_users_edit(tmp_path: Path,
                                                                           labs) -> None:
    slow = ("import time\nprint('sleeping', flush=True)\n"
            "time.sleep(float(open('delay.txt').read()))\n" + TRAIN.format(lr=0.1))
    ws = make_ws(tmp_path, {"train.py": slow, "delay.txt": "0", "other.py": "A = 1\n"})
    lab = labs(ws)
    lab.exp.step("baseline first", lr("0.1", "0.1  # same"), "train.py")  # measures the baseline
    git(ws, "checkout", "--", ".")
    (ws / "delay.txt").write_text("3")
    git(ws, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "slower")
    lock = StepLock(lab.engine.state_dir)
    assert not lock.busy()
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(
        lab.exp.step("LR 1.0", lr("0.1", "1.0"), "train.py")))
    worker.start()
    deadline = time.monotonic() + 20
    while not lab.engine.active_ids():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert lock.busy()  # an edit.apply now answers `busy` (tests/e2e/test_edits_lsp.py)
    # (the run sees the workspace live: the user's save comes once its script is compiled)
    log = Path(lab.engine.get(lab.engine.active_ids()[0]).log_path)
    while "sleeping" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    edited = (ws / "train.py").read_text().replace("time.sleep", "time.sleep  # mine;")
    (ws / "train.py").write_text(edited)  # the user saves in their editor meanwhile
    worker.join(60)
    (result,) = results
    assert result.verdict == "discard"
    assert (ws / "train.py").read_text() == edited  # not silently reverted
    assert any("not reverted" in n and "train.py" in n for n in result.notes)
    assert not lock.busy()


def test_a_step_cut_short_is_undone_by_the_next_with_a_ledger_row(tmp_path: Path,
                                                                  labs) -> None:
    ws = make_ws(tmp_path, {"train.py": TRAIN.format(lr=0.1)})
    lab = labs(ws)
    plan = plan_edit(ws, "searchReplace", lr("0.1", "9.9")["text"])
    Journal(lab.engine.state_dir).begin(plan, "the step whose server was killed")
    write_atomically(plan)  # ... and the process died here, mid-run
    result = lab.exp.step("LR 0.25", lr("0.1", "0.25"), "train.py")
    assert result.verdict == "keep", result.reason
    first = lab.ledger()[0]
    assert first["status"] == "crash" and first["reason"].startswith("interrupted")
    assert first["description"] == "the step whose server was killed"
    assert "+LR = 9.9" in first["diff"]


def test_a_kept_run_needs_verified_provenance(tmp_path: Path, labs) -> None:
    stamped = TRAIN.format(lr=0.1) + ("print('DATASET_USED: MNIST')\n"
                                      "print('DATASET_USED: CIFAR10')\n")
    ws = make_ws(tmp_path, {"train.py": stamped})
    lab = labs(ws)
    result = lab.exp.step("LR 0.25", lr("0.1", "0.25"), "train.py")
    assert result.run is not None and result.run.provenance["verdict"] == "mismatch"
    assert result.comparison is not None and result.comparison.verdict == "improvement"
    assert result.verdict == "discard" and "provenance mismatch" in result.reason
    # positive control: the same improvement, with no stamp and no requirement, is kept
    plain = make_ws(tmp_path / "plain", {"train.py": TRAIN.format(lr=0.1)})
    assert labs(plain).exp.step("LR 0.25", lr("0.1", "0.25"), "train.py").verdict == "keep"
    # ... and with the trusted config requiring provenance, an unstamped run is not
    strict = make_ws(tmp_path / "strict", {"train.py": TRAIN.format(lr=0.1)})
    required = labs(strict, metric={"require_provenance": True}).exp.step(
        "LR 0.25", lr("0.1", "0.25"), "train.py")
    assert required.verdict == "discard" and "provenance unverified" in required.reason


NOISY = ("import random\nLR = {lr}\nloss = abs(LR - 0.3) * 10 + 1.0 + random.random() * 0.2\n"
         "print(f'loss: {{loss:.4f}}')\n")


def test_one_noise_rule_across_three_steps_with_a_keep_between(tmp_path: Path, labs) -> None:
    ws = make_ws(tmp_path, {"train.py": NOISY.format(lr=0.1)})
    lab = labs(ws, loop={"baseline_repeats": 3})
    first = lab.exp.step("LR 0.3", lr("0.1", "0.3"), "train.py")
    baseline = lab.ledger()[0]
    spread = baseline["spread"]
    assert baseline["repeats"] == 3 and 0 < spread < 0.2 and len(first.baseline_runs) == 3
    assert first.verdict == "keep", first.reason
    assert f"baseline spread {spread:g}" in first.reason and "median of 3" in first.reason
    second = lab.exp.step("a comment", sr("train.py", "import random\n",
                                          "import random  # same\n"), "train.py")
    third = lab.exp.step("another comment", sr("train.py", "print(f'loss: {loss:.4f}')\n",
                                                "print(f'loss: {loss:.4f}')  # still\n"),
                         "train.py")
    assert first.run is not None
    reference = first.run.metrics["loss"]
    for later in (second, third):
        assert later.baseline_runs == []  # the baseline is not re-measured
        assert f"baseline spread {spread:g}" in later.reason and "last kept run" in later.reason
        assert later.comparison is not None and later.run is not None
        assert later.comparison.baseline == pytest.approx(reference)
        # within the spread it is never a keep, whichever way the noise fell
        gain = reference - later.run.metrics["loss"]
        assert (later.verdict == "keep") == (gain > spread), (gain, spread, later.reason)
        if later.verdict == "keep":
            reference = later.run.metrics["loss"]
    keeps = [e for e in lab.ledger() if e["status"] == "keep"]
    assert [e["spread"] for e in keeps] == [spread] * len(keeps)  # carried by every keep


def test_a_changed_judgement_starts_a_new_baseline_visibly(tmp_path: Path, labs) -> None:
    ws = make_ws(tmp_path, {"train.py": TRAIN.format(lr=0.1)})
    lab = labs(ws)
    assert lab.exp.step("LR 0.25", lr("0.1", "0.25"), "train.py").verdict == "keep"
    before = lab.ledger()
    other = labs(ws, metric={"min_delta": 0.5})  # the user changed the judgement
    result = other.exp.step("LR 0.28", lr("0.25", "0.28"), "train.py")
    assert len(result.baseline_runs) == 1 and any("new baseline" in n for n in result.notes)
    assert result.verdict == "discard"  # 0.03 better is not 0.5 better
    assert other.ledger()[: len(before)] == before  # earlier rows are never rewritten


def test_rebaseline_every_measures_the_baseline_again(tmp_path: Path, labs) -> None:
    ws = make_ws(tmp_path, {"train.py": TRAIN.format(lr=0.1)})
    lab = labs(ws, loop={"rebaseline_every": 1})
    assert lab.exp.step("LR 0.2", lr("0.1", "0.2"), "train.py").verdict == "keep"
    again = lab.exp.step("LR 0.25", lr("0.2", "0.25"), "train.py")
    assert len(again.baseline_runs) == 1 and "measured again" in again.notes[0]
    # measured on the kept code (LR 0.2): loss 1.1, not the first baseline's 1.2
    assert again.comparison is not None and again.comparison.baseline == pytest.approx(1.1)


def test_a_loop_whose_thread_fails_ends_failed(tmp_path: Path, labs) -> None:
    ws = make_ws(tmp_path, {"train.py": b"\x89PNG\x00\xff binary, not a script"})
    lab = labs(ws)
    saved: list[str] = []
    state = LoopState("loop-test", LoopSpec(iterations=2, script="train.py"))
    loop = AutoLoop(lab.exp, state, lambda prompt, files: "", lambda s: saved.append(s.state))
    loop.start()
    loop.thread.join(30)
    assert state.state == "failed" and "UTF-8" in (state.error or ""), state.error
    assert saved[-1] == "failed"


def test_the_repair_prompt_quotes_tracked_files_only(tmp_path: Path, labs) -> None:
    ws = make_ws(tmp_path, {"train.py": "import helper\nraise SystemExit('x')\n",
                            ".gitignore": ".env\n", "helper.py": "X = 1\n"})
    (ws / ".env").write_text("OPENAI_API_KEY=sk-secret-123\nOTHER=1\n")
    lab = labs(ws)
    fake = ("Traceback (most recent call last):\n  File \".env\", line 1, in <module>\n"
            "    OPENAI_API_KEY=sk-secret-123\nValueError: fake\n")
    record = lab.engine.start(RunRequest("train.py"))
    record = lab.engine.wait(record.run_id)
    assert record is not None
    record.error = {"kind": "exception", "message": fake, "file": ".env", "line": 1}
    assert repair_context(record, ws)["source"] == ""
    record.error = {**record.error, "file": "/etc/passwd"}
    assert repair_context(record, ws)["source"] == ""
    # positive control: a tracked file at the same line is quoted
    record.error = {**record.error, "file": "helper.py"}
    assert "X = 1" in repair_context(record, ws)["source"]
    assert os.path.exists(ws / ".env")


def test_a_repository_venv_cannot_bind_a_host_folder_into_the_sandbox(tmp_path: Path,
                                                                        labs) -> None:
    """A cloned repository ships `.venv/bin/python` as a link to any executable (here a wrapper
    in a folder holding a secret, as a pip console script in ~/.local would be); the folder
    the interpreter lives in is bound into the sandbox, so only a real Python installation
    may be that folder."""
    import sys

    from labls.sandbox import isolation

    secret_dir = tmp_path / "secret"
    (secret_dir / "bin").mkdir(parents=True)
    (secret_dir / "token.txt").write_text("s3cr3t\n")
    runner = secret_dir / "bin" / "runner"
    runner.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    runner.chmod(0o755)
    probe = (f"import pathlib\np = pathlib.Path({str(secret_dir / 'token.txt')!r})\n"
             "print('leaked' if p.exists() else 'hidden')\nprint('loss: 1.0')\n")
    ws = make_ws(tmp_path, {"train.py": probe, ".venv/pyvenv.cfg": "home = /usr/bin\n"})
    (ws / ".venv" / "bin").mkdir()
    (ws / ".venv" / "bin" / "python").symlink_to(runner)
    venv_python = str(ws / ".venv" / "bin" / "python")
    # positive control: that interpreter's folders, as the sandbox would bind them
    assert secret_dir in isolation.interpreter_roots(venv_python)
    assert not isolation.is_python_installation(Path(venv_python))
    lab = labs(ws)
    assert lab.engine.python() == sys.executable
    record = lab.engine.wait(lab.engine.start(RunRequest("train.py")).run_id)
    assert record is not None and record.state == "succeeded", record.error
    assert "hidden" in record.log_tail and "leaked" not in record.log_tail


def test_a_repository_cannot_ship_the_ledger_or_a_step_journal(tmp_path: Path, labs) -> None:
    """A cloned repository with a committed `.labls/`: a forged baseline row would make every
    step a keep, and a forged journal would have the recovery write labls.toml."""
    ws = make_ws(tmp_path, {"train.py": TRAIN.format(lr=0.1), "labls.toml": "# mine\n"})
    forger = Lab(ws)  # the attacker's own labls, run before committing its state dir
    try:
        run = forger.engine.wait(forger.engine.start(RunRequest("train.py")).run_id)
        assert run is not None
        judge = forger.exp.judgement("train.py", [])
        forger.exp.ledger.add({"run_id": run.run_id, "status": "keep", "metric": 99.0,
                                  "description": "baseline", "repeats": 1, "spread": 0.0,
                                  "judge": judge, "created_at": time.time()})
        # positive control: that row is the baseline a step would be judged against
        assert forger.exp.ledger.kept(judge)[0]["metric"] == 99.0
    finally:
        forger.engine.close()
    (ws / ".labls" / "step-journal.json").write_text(
        '{"hypothesis": "x", "files": {"labls.toml": {"old": "W3J1bl0KbmV0d29yayA9ICJob3N0Igo=",'
        ' "new": "IyBtaW5lCg==", "mode": 420, "diff": ""}}}')
    git(ws, "add", "-f", ".labls")
    git(ws, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "ship the records")
    lab = labs(ws)
    with pytest.raises(Exception, match="holds files the repository tracks"):
        lab.exp.step("LR 0.25", lr("0.1", "0.25"), "train.py")
    assert (ws / "labls.toml").read_text() == "# mine\n"
    # positive control: those journal bytes, restored without the guard, loosen labls.toml
    scratch = tmp_path / "scratch-ws"
    scratch.mkdir()
    (scratch / "labls.toml").write_text("# mine\n")
    restore_files(scratch, {"labls.toml": (b'[run]\nnetwork = "host"\n', b"# mine\n", 0o644)})
    assert "host" in (scratch / "labls.toml").read_text()
    # and were the journal found anyway, it never writes a protected path
    undone = Journal(lab.engine.state_dir).undo(ws, lab.exp_guard())
    assert undone is not None and undone["left"] == []
    assert (ws / "labls.toml").read_text() == "# mine\n"


def test_a_new_evaluator_is_a_new_judgement(tmp_path: Path, labs) -> None:
    evaluate = "def score(loss):\n    return loss\n"
    ws = make_ws(tmp_path, {"train.py": TRAIN.format(lr=0.1), "eval/score.py": evaluate})
    lab = labs(ws, edit={"protect": ["eval"]})
    assert lab.exp.step("LR 0.2", lr("0.1", "0.2"), "train.py").verdict == "keep"
    same = lab.exp.step("LR 0.25", lr("0.2", "0.25"), "train.py")
    assert same.baseline_runs == []  # the same evaluator: the same baseline line
    (ws / "eval" / "score.py").write_text(evaluate + "# v2\n")  # the user commits a new one
    git(ws, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "evaluator v2")
    changed = lab.exp.step("LR 0.28", lr("0.25", "0.28"), "train.py")
    assert len(changed.baseline_runs) == 1 and any("new baseline" in n for n in changed.notes)
    judges = {e["judge"] for e in lab.ledger()}
    assert len(judges) == 2 and all('"evaluator": "' in j for j in judges)
