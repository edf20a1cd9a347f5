"""The launch guard: a run never outlives the process that launched it, even when that process
dies in the instant between the fork and the kernel's death signal being armed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labls.sandbox.lifeline import Launcher, Standby, Watchdog, launch_script


def _alive(marker: str) -> list[str]:
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    return out.stdout.split()


def _sleeper(marker: str) -> list[str]:
    return [sys.executable, "-c", "import time; time.sleep(60)", marker]


def _script(tmp: Path, argv: list[str], env: dict[str, str] | None = None) -> Path:
    script = tmp / "launch.sh"
    script.write_text(launch_script(argv, env or {"PATH": "/usr/bin:/bin"}, tmp, tmp / "log.txt"))
    return script


def _launcher(marker: str, tmp: Path, guarded: bool, then: str) -> subprocess.Popen[bytes]:
    """A stand-in engine: launches a sleeper through a standby (or a plain Popen), then `then`."""
    script = _script(tmp, _sleeper(marker))
    code = (
        "import subprocess, sys, time\n"
        "from labls.sandbox.lifeline import Standby\n"
        f"if {guarded}:\n"
        f"    Standby(None).launch({str(script)!r})\n"
        "else:\n"
        f"    subprocess.Popen({_sleeper(marker)!r})\n"
        f"{then}\n"
    )
    return subprocess.Popen([sys.executable, "-c", code])


def _wait_gone(marker: str, seconds: float) -> list[str]:
    deadline = time.monotonic() + seconds
    while _alive(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _alive(marker)


def test_standby_runs_the_script_in_its_folder_with_its_env_and_log(tmp_path: Path) -> None:
    code = "import os; print(os.getcwd(), os.environ['ONLY'], sorted(os.environ))"
    env = {"ONLY": "a b'c", "LANG": "C.UTF-8"}
    script = _script(tmp_path, [sys.executable, "-c", code, "it's"], env)
    standby = Standby(None)
    assert standby.launch(script)
    assert standby.proc.wait(10) == 0
    standby.watchdog.stand_down()
    assert (tmp_path / "log.txt").read_text() == f"{tmp_path} a b'c ['LANG', 'ONLY']\n"


def test_standby_refuses_when_its_parent_is_not_the_launcher(tmp_path: Path) -> None:
    standby = Standby(None, parent=1)
    standby.launch(_script(tmp_path, [sys.executable, "-c", "print('ran')"]))
    assert standby.proc.wait(10) == 125
    standby.watchdog.stand_down()
    assert not (tmp_path / "log.txt").exists()


def test_discarded_standby_runs_nothing(tmp_path: Path) -> None:
    standby = Standby(None)
    standby.discard()
    assert standby.proc.returncode == 125
    assert standby.watchdog.proc.returncode == 0  # its watchdog stood down with it


def test_launcher_keeps_one_ready_and_replaces_what_it_hands_out(tmp_path: Path) -> None:
    launcher = Launcher(lambda: None)
    try:
        first = launcher.take()
        second = launcher.take()
        assert first.proc.pid != second.proc.pid
        assert first.launch(_script(tmp_path, [sys.executable, "-c", "print('one')"]))
        assert first.proc.wait(10) == 0
        first.watchdog.stand_down()
        second.discard()
    finally:
        launcher.close()
    with pytest.raises(RuntimeError):
        launcher.take()


def test_run_dies_with_a_killed_launcher(tmp_path: Path) -> None:
    marker = f"labls-guard-killed-{os.getpid()}"
    launcher = _launcher(marker, tmp_path, guarded=True, then="time.sleep(60)")
    deadline = time.monotonic() + 10
    while len(_alive(marker)) < 2 and time.monotonic() < deadline:  # the launcher and the sleeper
        time.sleep(0.05)
    assert len(_alive(marker)) >= 2, "the sleeper never started: the check would prove nothing"
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    assert _wait_gone(marker, 3) == []


def test_launcher_dying_right_after_the_launch_leaves_nothing(tmp_path: Path) -> None:
    """The launcher exits the moment it has handed over; unguarded, the sleeper survives (the
    positive control), guarded it never does, however the race falls."""
    control = f"labls-guard-control-{os.getpid()}"
    _launcher(control, tmp_path, guarded=False, then="import os; os._exit(0)").wait()
    time.sleep(0.5)
    survivors = _alive(control)
    for pid in survivors:
        os.kill(int(pid), signal.SIGKILL)
    assert survivors, "an unguarded child should outlive its launcher"
    for attempt in range(10):
        marker = f"labls-guard-race-{os.getpid()}-{attempt}"
        _launcher(marker, tmp_path, guarded=True, then="import os; os._exit(0)").wait()
        time.sleep(0.3)  # past the standby's start, so a survivor would be seen
        assert _wait_gone(marker, 3) == [], f"attempt {attempt}: the run outlived its launcher"


def _forking_sleeper(marker: str) -> list[str]:
    """Two processes in one group, both holding `marker`: what pdeathsig alone cannot catch."""
    return [sys.executable, "-c", "import os, time; os.fork(); time.sleep(60)", marker]


def _watched_launcher(marker: str, watched: bool) -> subprocess.Popen[bytes]:
    code = (
        "import subprocess, sys, time\n"
        "from labls.sandbox.lifeline import Watchdog\n"
        f"dog = Watchdog() if {watched} else None\n"
        f"run = subprocess.Popen({_forking_sleeper(marker)!r}, start_new_session=True)\n"
        "dog and dog.watch(run.pid)\n"
        "time.sleep(60)\n"
    )
    return subprocess.Popen([sys.executable, "-c", code])


def _kill_when_started(launcher: subprocess.Popen[bytes], marker: str) -> None:
    deadline = time.monotonic() + 10
    while len(_alive(marker)) < 3 and time.monotonic() < deadline:  # launcher + two sleepers
        time.sleep(0.05)
    assert len(_alive(marker)) >= 3, "the sleepers never started: the check would prove nothing"
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()


def test_watchdog_kills_the_process_group_of_a_dead_engine() -> None:
    control = f"labls-dog-control-{os.getpid()}"
    _kill_when_started(_watched_launcher(control, watched=False), control)
    time.sleep(0.5)
    survivors = _alive(control)
    for pid in survivors:
        os.kill(int(pid), signal.SIGKILL)
    assert len(survivors) == 2, "unwatched, both sleepers should outlive the launcher"
    marker = f"labls-dog-{os.getpid()}"
    _kill_when_started(_watched_launcher(marker, watched=True), marker)
    assert _wait_gone(marker, 3) == []


def test_watchdog_stands_down_when_the_run_is_over() -> None:
    marker = f"labls-dog-done-{os.getpid()}"
    dog = Watchdog()
    run = subprocess.Popen(_sleeper(marker), start_new_session=True)
    try:
        dog.watch(run.pid)
        dog.stand_down()
        assert dog.proc.returncode == 0
        time.sleep(0.2)
        assert run.poll() is None, "standing down must not kill anything"
    finally:
        run.kill()
        run.wait()
