"""The `labls` command line as a user types it: the workspace found from a subfolder, module
runs, distinct exit codes, run ids by prefix or `last`, JSON listings, a closed pipe, and the
verbs it shares with the servers (compare, edit, prompt, cancel)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

LABLS = [sys.executable, "-m", "labls.server.cli"]


def labls(cwd: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LABLS, *args], cwd=cwd, capture_output=True, text=True,
                          input=stdin, timeout=120)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    (tmp_path / "labls.toml").write_text("[run]\ntimeout_sec = 120\n")  # (tightens: no trust)
    (tmp_path / "src").mkdir()
    (tmp_path / "train.py").write_text("import sys\nprint('val_bpb:', 1.0 + len(sys.argv))\n")
    (tmp_path / "slow.py").write_text("import time\ntime.sleep(30)\n")
    (tmp_path / "crash.py").write_text("raise SystemExit(3)\n")
    (tmp_path / "my dir").mkdir()
    (tmp_path / "my dir" / "spaced.py").write_text("print('val_bpb: 7')\n")
    (tmp_path / "probe_mod.py").write_text("import sys\nprint('val_bpb:', len(sys.argv))\n")
    return tmp_path


def test_a_run_from_a_subfolder_uses_the_workspace_above(ws) -> None:
    done = labls(ws / "src", "run", "../train.py", "a", "b")
    assert done.returncode == 0, done.stderr
    assert "val_bpb" in done.stdout and "4" in done.stdout  # argv: script, a, b
    assert not (ws / "src" / ".labls").exists() and (ws / ".labls").is_dir()
    listed = labls(ws / "src", "runs", "--json")
    summary = json.loads(listed.stdout.splitlines()[0])
    assert summary["script"] == "train.py" and summary["metrics"]["val_bpb"] == 4.0


def test_module_runs_and_paths_with_spaces(ws) -> None:
    done = labls(ws, "run", "--timeout", "60", "-m", "probe_mod", "-x", "--flag")
    assert done.returncode == 0, done.stderr
    record = json.loads(labls(ws, "show", "last", "--json").stdout)
    assert record["script"] == "-m probe_mod" and record["args"] == ["-x", "--flag"]
    assert record["metrics"]["val_bpb"] == 3.0  # argv[0] plus its two arguments
    spaced = labls(ws, "run", "my dir/spaced.py")
    assert spaced.returncode == 0, spaced.stdout + spaced.stderr


def test_exit_codes_say_how_a_run_ended(ws) -> None:
    assert labls(ws, "run", "crash.py").returncode == 1  # failed
    assert labls(ws, "run", "--timeout", "1", "slow.py").returncode == 3  # timed out
    refused = labls(ws, "run", "../outside.py")
    assert refused.returncode == 2 and "inside the workspace" in refused.stderr


def test_cancel_reaches_a_run_of_another_labls_process(ws) -> None:
    """`labls cancel` in one terminal stops the `labls run` of another: that run ends
    `cancelled` (its exit code 4) and the cancel exits 0; again, or for no run, it refuses."""
    with subprocess.Popen([*LABLS, "run", "--timeout", "60", "slow.py"], cwd=ws, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as runner:
        try:
            assert runner.stderr is not None
            progress = runner.stderr.readline()  # once a second while the run goes
            assert progress.startswith("["), progress
            done = labls(ws, "cancel", "last")
            assert done.returncode == 0, done.stdout + done.stderr
            assert "cancelled" in done.stdout
            assert runner.wait(timeout=60) == 4
        finally:
            runner.kill()
    again = labls(ws, "cancel", "last")
    assert again.returncode == 1 and "already ended: cancelled" in again.stderr
    assert labls(ws, "cancel", "nope").returncode == 2


def test_runs_by_prefix_and_last(ws) -> None:
    labls(ws, "run", "train.py")
    labls(ws, "run", "train.py", "x")
    ids = [json.loads(line)["runId"] for line in labls(ws, "runs", "--json").stdout.splitlines()]
    last = json.loads(labls(ws, "show", "last", "--json").stdout)
    assert last["runId"] == ids[0]
    by_prefix = json.loads(labls(ws, "show", ids[1][:-2], "--json").stdout)
    assert by_prefix["runId"] == ids[1]
    ambiguous = labls(ws, "show", ids[0][:8])
    assert ambiguous.returncode == 2 and "start of 2 run ids" in ambiguous.stderr
    compared = json.loads(labls(ws, "compare", "last").stdout)
    assert compared["runId"] == ids[0] and compared["baselineId"] == ids[1]
    assert compared["verdict"] == "regression"  # 3.0 after 2.0, minimized


def test_a_closed_pipe_ends_quietly(ws) -> None:
    """`labls runs | head`: the reader may be gone before labls writes (here `true`, gone at
    once); labls ends with 141, as a shell reports SIGPIPE, and no traceback."""
    labls(ws, "run", "train.py")
    command = " ".join(LABLS) + " runs | true; echo labls=${PIPESTATUS[0]}"
    shell = subprocess.run(command, shell=True, executable="/bin/bash", cwd=ws,
                           capture_output=True, text=True, timeout=120)
    assert "Traceback" not in shell.stderr and "BrokenPipe" not in shell.stderr, shell.stderr
    assert "labls=141" in shell.stdout, shell.stdout


def test_edit_from_stdin_and_prompt(ws) -> None:
    line = "print('val_bpb:', 1.0 + len(sys.argv))"
    block = (f"train.py\n<<<<<<< SEARCH\n{line}\n=======\n{line.replace('1.0', '2.0')}\n"
             ">>>>>>> REPLACE\n")
    done = labls(ws, "edit", "-", stdin=block)
    assert done.returncode == 0 and json.loads(done.stdout)["via"] == "disk", done.stderr
    assert "2.0 + len" in (ws / "train.py").read_text()
    missed = labls(ws, "edit", "-", stdin=block)  # the SEARCH text is gone now
    assert missed.returncode == 1 and json.loads(missed.stdout)["ok"] is False
    protected = labls(ws, "edit", "--format", "whole", "--path", "labls.toml", "-",
                      stdin="run.network = 'host'\n")
    assert protected.returncode == 1 and "protected" in protected.stdout
    prompt = labls(ws, "prompt", "network_disabled_guidance")
    assert prompt.returncode == 0 and "FileNotFoundError" in prompt.stdout
    bad = labls(ws, "prompt", "no_such_template")
    assert bad.returncode == 2 and "labls prompt" in bad.stderr


def test_every_option_has_help() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from labls.server.cli import build_parser

    parser = build_parser()
    missing = []
    subparsers = next(a for a in parser._actions if a.dest == "verb")
    for verb, sub in subparsers.choices.items():  # type: ignore[union-attr]
        for action in sub._actions:
            if action.dest != "help" and not action.help and not action.choices:
                missing.append(f"{verb} {action.option_strings or action.dest}")
    assert not missing, missing
