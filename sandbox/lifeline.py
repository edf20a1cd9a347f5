"""A run's first process: started ahead of need, tied to the engine's life, handed the run.

A killed engine runs no cleanup of its own, so two ties hold every run:

- The standby, the run's first process: `setpriv --pdeathsig KILL` arms the kernel to kill it
  when the engine's launcher thread dies, and the `sh` after it checks that the engine is still
  its parent, which closes the window between the fork and the arming. bwrap and
  `unshare --kill-child` pass that death on to everything in their PID namespace.
- The watchdog, a tiny `sh` in a session of its own, reading a pipe whose only writer is the
  engine. It learns the run's process group; when the pipe closes without a `done` line, the
  engine died, and it SIGKILLs the group and the cgroup's members. This covers what the
  death signal cannot: a wrapper's own start-up race (bwrap's sandbox init arms its death signal
  only after its clone, so an engine dying in between left that init and the run behind).

The standby is started before the run asks for it, because joining a cgroup v1 is slow: the
kernel waits for an RCU grace period, 10 to 20 ms here, on every join. A standby has paid that
(and the `setpriv` and `sh` execs) already, and its watchdog is started with it; a run hands it
a launch script and it `exec`s, with the rlimits the engine set on it (`prlimit(2)`). Death
signals follow the thread that forked, so every standby comes from one long-lived launcher
thread.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from .limits import RunCgroup, remove_stale_cgroups

STANDBY_MAX_PIDS = 64  # until a run takes the standby and sets its own `run.max_processes`


def standby_cgroup() -> RunCgroup | None:
    """Fresh pids and memory cgroups named after this process, or None where none can be made."""
    return RunCgroup.create(f"{os.getpid()}-{os.urandom(4).hex()}", STANDBY_MAX_PIDS)

# $1: the engine's pid, $2: the cgroups' procs files (spaced) or "". stdin: the launch script.
_STANDBY = ('[ "$PPID" = "$1" ] || exit 125; for f in $2; do echo $$ > "$f" || exit 125; done; '
            'read -r launch || exit 125; exec 0</dev/null; . "$launch"; exit 125')

# stdin: the run's process group (and its run folder, whose dataset and work views to unmount,
# if any), then `done` when
# the engine has finished with it (`done` alone for a standby that never ran). $1: the cgroups'
# procs files or "". (dash's kill takes no `--`.)
_WATCHDOG = (
    'read pgid view || exit 0; [ "$pgid" != done ] || exit 0; read line && exit 0; '
    'kill -KILL "-$pgid" 2>/dev/null; '
    '[ -z "$1" ] || kill -KILL $(cat $1) 2>/dev/null; '
    '[ -z "$view" ] || umount -l "$view/datasets" "$view/work" 2>/dev/null; exit 0'
)


def _procs(cgroup: RunCgroup | None) -> str:
    return " ".join(cgroup.procs_files()) if cgroup else ""


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Wait for a helper that was told to exit; kill it if it does not within 5 s."""
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def launch_script(argv: list[str], env: dict[str, str] | None, cwd: Path, log: Path,
                  fds: dict[int, tuple[str, Path]] | None = None) -> str:
    """The shell text a standby sources: into the work folder, output to the log (appending),
    then `exec` the run with exactly `env` (None: the standby's own, `PATH` alone) and the
    files of `fds` open on those descriptors, each with its redirection (`<`, `<>`)."""
    if env is not None:
        argv = ["/usr/bin/env", "-i", *(f"{name}={value}" for name, value in env.items()), *argv]
    opened = "".join(f" {fd}{mode}{shlex.quote(str(path))}"
                     for fd, (mode, path) in (fds or {}).items())
    return (f"cd -- {shlex.quote(str(cwd))} || exit 125\n"
            f"exec >>{shlex.quote(str(log))} 2>&1\n"
            f"exec {shlex.join(argv)}{opened}\n")


class Watchdog:
    """Kills a run's process group (and cgroup) if this process dies before `stand_down`."""

    def __init__(self, cgroup: RunCgroup | None = None) -> None:
        read_end, self._write_end = os.pipe()
        try:
            self.proc = subprocess.Popen(
                ["/bin/sh", "-c", _WATCHDOG, "labls-watchdog", _procs(cgroup)],
                stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True, close_fds=True)
        finally:
            os.close(read_end)

    def watch(self, pgid: int, view: Path | None = None) -> None:
        """Guard process group `pgid` (and unmount the views in run folder `view` if the
        engine dies)."""
        line = f"{pgid} {view}\n" if view is not None else f"{pgid}\n"
        if "\n" in line[:-1]:
            raise ValueError(f"a newline in the dataset view's path: {view!r}")
        with contextlib.suppress(OSError):
            os.write(self._write_end, line.encode())

    def stand_down(self) -> None:
        """The run is over and cleaned up: the watchdog exits without killing anything."""
        with contextlib.suppress(OSError):
            os.write(self._write_end, b"done\n")
        os.close(self._write_end)
        _reap(self.proc)


class Standby:
    """A started, armed process in its cgroup, waiting for the script that becomes the run, and
    the run's watchdog, started with it so neither fork is on the way to the run."""

    def __init__(self, cgroup: RunCgroup | None, parent: int | None = None) -> None:
        self.cgroup = cgroup
        guard = ["/bin/sh", "-c", _STANDBY, "labls-standby", str(parent or os.getpid()),
                 _procs(cgroup)]
        setpriv = shutil.which("setpriv")
        read_end, self._write_end = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [setpriv, "--pdeathsig", "KILL", "--", *guard] if setpriv else guard,
                stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                cwd="/", env={"PATH": "/usr/bin:/bin"}, start_new_session=True, close_fds=True)
        finally:
            os.close(read_end)
        try:  # second: the standby's cgroup join (the slow part) is already under way
            self.watchdog = Watchdog(cgroup)
        except OSError:
            os.close(self._write_end)
            _reap(self.proc)
            raise

    def launch(self, script: Path) -> bool:
        """Hand over the run: the standby sources `script`. False if it is gone."""
        if "\n" in str(script):
            raise ValueError(f"launch script path holds a newline: {script!r}")
        try:
            if self.proc.poll() is not None:
                return False
            os.write(self._write_end, f"{script}\n".encode())
            return True
        except OSError:
            return False
        finally:
            os.close(self._write_end)

    def discard(self) -> None:
        """Never used: it reads end-of-file, exits without running anything, and is reaped."""
        with contextlib.suppress(OSError):
            os.close(self._write_end)
        _reap(self.proc)
        self.watchdog.stand_down()
        if self.cgroup:
            self.cgroup.remove()


class Launcher:
    """Keeps one standby ready, all of them forked by one thread that lives as long as the
    engine (closing it stops that thread, and with it every run it started)."""

    def __init__(self, make_cgroup: Callable[[], RunCgroup | None] = standby_cgroup,
                 refill: bool = True) -> None:
        self._make_cgroup = make_cgroup
        self._refill = refill  # False: a single run (the CLI) needs no replacement started
        self._ready: Standby | None = None
        self._wanted = threading.Condition()
        self._jobs: list[threading.Event] = []  # pending spawns; set when one was made
        self._closed = False
        self._failure: OSError | None = None
        self._thread = threading.Thread(target=self._serve, name="labls-launcher", daemon=True)
        self._thread.start()
        self._spawn_async()

    def take(self) -> Standby:
        """The ready standby (or a new one, waiting for it); a replacement starts behind it
        unless the launcher was made with `refill=False`."""
        while True:
            with self._wanted:
                if self._closed:
                    raise RuntimeError("the engine is closed")
                standby, self._ready = self._ready, None
            if standby is None:
                self._spawn_async().wait()
                if self._failure is not None:
                    raise RuntimeError(f"cannot start the run's process: {self._failure}")
                continue
            if self._refill:
                self._spawn_async()
            if standby.proc.poll() is None:
                return standby
            standby.discard()

    def close(self) -> None:
        with self._wanted:
            self._closed = True
            standby, self._ready = self._ready, None
            self._wanted.notify_all()
        if standby:
            standby.discard()
        self._thread.join(timeout=5)

    def _spawn_async(self) -> threading.Event:
        done = threading.Event()
        with self._wanted:
            self._jobs.append(done)
            self._wanted.notify_all()
        return done

    def _serve(self) -> None:
        swept = False
        while True:
            with self._wanted:
                while not self._jobs and not self._closed:
                    self._wanted.wait()
                if self._closed:
                    for job in self._jobs:
                        job.set()
                    return
                job = self._jobs.pop(0)
                have = self._ready is not None
            if not have:
                try:
                    standby = Standby(self._make_cgroup())
                except OSError as exc:  # out of processes or memory: the waiting run fails
                    self._failure = exc
                    job.set()
                    continue
                self._failure = None
                with self._wanted:
                    if self._closed or self._ready is not None:
                        spare: Standby | None = standby
                    else:
                        self._ready, spare = standby, None
                if spare:
                    spare.discard()
            job.set()
            if not swept:  # once, after the first standby: cgroups of engines killed earlier
                swept = True
                remove_stale_cgroups()
