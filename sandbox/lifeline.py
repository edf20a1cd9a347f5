"""A run never outlives the engine that launched it, even an engine killed with SIGKILL.

A killed engine runs no cleanup of its own, so two ties are set up before the run starts:

- The guard, an argv prefix: `setpriv --pdeathsig KILL` arms the kernel to kill the run's first
  process when the engine's launching thread dies, and the `sh` after it checks that the engine
  is still its parent, which closes the window between the fork and the arming. The guard also
  joins the run's pids cgroup. bwrap and `unshare --kill-child` pass that death on to everything
  in their PID namespace.
- The watchdog, a tiny `sh` in a session of its own, reading a pipe whose only writer is the
  engine. It learns the run's process group; when the pipe closes without a `done` line, the
  engine died, and it SIGKILLs the group and the cgroup's members. This covers what the guard
  cannot: a wrapper's own start-up race (bwrap's sandbox init arms its death signal only after
  its clone, so an engine dying in between left that init and the run behind).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess

from .limits import PidsCgroup

# $1: the engine's pid, $2: the cgroup's procs file or "", then the command.
_GUARD = ('[ "$PPID" = "$1" ] || exit 125; [ -z "$2" ] || echo $$ > "$2" || exit 125; '
          'shift 2; exec "$@"')

# stdin: the run's process group, then `done` when the engine has finished with it. $1: the
# cgroup's procs file or "". (dash's kill takes no `--`.)
_WATCHDOG = (
    'read pgid || exit 0; read line && exit 0; kill -KILL "-$pgid" 2>/dev/null; '
    '[ -z "$1" ] || kill -KILL $(cat "$1") 2>/dev/null; exit 0'
)


def _procs(cgroup: PidsCgroup | None) -> str:
    return str(cgroup.path / "cgroup.procs") if cgroup else ""


def guard_prefix(cgroup: PidsCgroup | None, parent: int | None = None) -> list[str]:
    """The argv prefix that ties the run's life to `parent` (this process). It must be started
    from a thread that outlives the run: death signals follow the launching thread."""
    guard = ["/bin/sh", "-c", _GUARD, "labls-guard", str(parent or os.getpid()), _procs(cgroup)]
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *guard] if setpriv else guard


class Watchdog:
    """Kills a run's process group (and cgroup) if this process dies before `stand_down`."""

    def __init__(self, cgroup: PidsCgroup | None = None) -> None:
        read_end, self._write_end = os.pipe()
        try:
            self.proc = subprocess.Popen(
                ["/bin/sh", "-c", _WATCHDOG, "labls-watchdog", _procs(cgroup)],
                stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True, close_fds=True)
        finally:
            os.close(read_end)

    def watch(self, pgid: int) -> None:
        with contextlib.suppress(OSError):
            os.write(self._write_end, f"{pgid}\n".encode())

    def stand_down(self) -> None:
        """The run is over and cleaned up: the watchdog exits without killing anything."""
        with contextlib.suppress(OSError):
            os.write(self._write_end, b"done\n")
        os.close(self._write_end)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
