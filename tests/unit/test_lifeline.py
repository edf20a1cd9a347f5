"""The launch guard: a run never outlives the process that launched it, even when that process
dies in the instant between the fork and the kernel's death signal being armed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from labls.sandbox.lifeline import Watchdog, guard_prefix


def _alive(marker: str) -> list[str]:
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    return out.stdout.split()


def _sleeper(marker: str) -> list[str]:
    return [sys.executable, "-c", "import time; time.sleep(60)", marker]


def _launcher(marker: str, guarded: bool, then: str) -> subprocess.Popen[bytes]:
    """A stand-in engine: launches a sleeper (guarded or not), then runs `then`."""
    code = (
        "import subprocess, sys, time\n"
        "from labls.sandbox.lifeline import guard_prefix\n"
        f"prefix = guard_prefix(None) if {guarded} else []\n"
        f"subprocess.Popen(prefix + {_sleeper(marker)!r})\n"
        f"{then}\n"
    )
    return subprocess.Popen([sys.executable, "-c", code])


def _wait_gone(marker: str, seconds: float) -> list[str]:
    deadline = time.monotonic() + seconds
    while _alive(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _alive(marker)


def test_guard_runs_the_command_for_its_parent() -> None:
    done = subprocess.run([*guard_prefix(None), sys.executable, "-c", "print('ran')"],
                          capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (0, "ran\n")


def test_guard_refuses_when_its_parent_is_not_the_launcher() -> None:
    done = subprocess.run([*guard_prefix(None, parent=1), sys.executable, "-c", "print('ran')"],
                          capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (125, "")


def test_run_dies_with_a_killed_launcher() -> None:
    marker = f"labls-guard-killed-{os.getpid()}"
    launcher = _launcher(marker, guarded=True, then="time.sleep(60)")
    deadline = time.monotonic() + 10
    while len(_alive(marker)) < 2 and time.monotonic() < deadline:  # the launcher and the sleeper
        time.sleep(0.05)
    assert len(_alive(marker)) >= 2, "the sleeper never started: the check would prove nothing"
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    assert _wait_gone(marker, 3) == []


def test_launcher_dying_right_after_the_fork_leaves_nothing() -> None:
    """The launcher exits the moment Popen returns; unguarded, the sleeper survives (the
    positive control), guarded it never does, however the race falls."""
    control = f"labls-guard-control-{os.getpid()}"
    _launcher(control, guarded=False, then="import os; os._exit(0)").wait()
    time.sleep(0.5)
    survivors = _alive(control)
    for pid in survivors:
        os.kill(int(pid), signal.SIGKILL)
    assert survivors, "an unguarded child should outlive its launcher"
    for attempt in range(10):
        marker = f"labls-guard-race-{os.getpid()}-{attempt}"
        _launcher(marker, guarded=True, then="import os; os._exit(0)").wait()
        time.sleep(0.3)  # past the guard's start, so a survivor would be seen
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
