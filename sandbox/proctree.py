"""Find and signal every process of a run's tree, however it was forked.

With a PID namespace (bwrap, unshare) killing the namespace's init takes everything inside with
it, double-forked daemons included. The cgroup, when there is one, lists every member even
without a namespace. `/proc` parent links cover the rest.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path


def process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (field 22 of /proc/pid/stat), to detect pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 :].split()[19].decode()


def owner_mark() -> str:
    """This process as `pid start`, for a file that says who owns something."""
    return f"{os.getpid()} {process_start(os.getpid())}"


def mark_alive(mark: str) -> bool:
    """Whether the process an `owner_mark` names still runs (not a new one with its pid)."""
    pid, _, start = mark.strip().partition(" ")
    return pid.isdigit() and process_start(int(pid)) == start


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_bytes()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces or parentheses
        fields = stat[stat.rfind(b")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
    return parents


def descendants(root: int) -> list[int]:
    """`root` and every process below it, parents before children."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _parents().items():
        children.setdefault(ppid, []).append(pid)
    order, queue = [], [root]
    while queue:
        pid = queue.pop(0)
        order.append(pid)
        queue.extend(children.get(pid, []))
    return order


def command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def signal_pids(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


# The processes labls puts around a run's code: they get SIGKILL, never the run's SIGTERM.
WRAPPERS = frozenset({"setpriv", "sh", "env", "bwrap", "unshare"})


def payload(root: int) -> list[int]:
    """The run's own processes below `root`, parents first, without the sandbox wrappers."""
    return [pid for pid in descendants(root) if command_name(pid) not in WRAPPERS]


def kill_tree(root: int, extra: list[int] | None = None) -> None:
    signal_pids(descendants(root)[::-1] + (extra or []), signal.SIGKILL)
