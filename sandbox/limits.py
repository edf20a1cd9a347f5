"""Resource limits for a run, set on its first process before it becomes the run (no
`preexec_fn`: the server has threads), and inherited by everything the run starts.

- Process count: a `pids` cgroup when this process may create one (root on cgroup v1 or v2),
  joined by the launch guard (`lifeline.py`) before anything of the run starts; otherwise
  `RLIMIT_NPROC`, which holds for non-root users (the kernel does not apply it to root).
- Memory: `RLIMIT_AS` on CPU runs only (it breaks CUDA's address-space reservations).
- File size: `RLIMIT_FSIZE`, so a runaway writer gets `EFBIG` rather than filling the disk.

The rlimits are set with `prlimit(2)` on the waiting standby process, not with a `prlimit`
command in front of the run: one exec fewer on every launch.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PIDS_ROOTS = (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup"))


class PidsCgroup:
    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, name: str, max_pids: int) -> PidsCgroup | None:
        for root in PIDS_ROOTS:
            max_file = "pids.max"
            if root == Path("/sys/fs/cgroup") and not (root / "cgroup.controllers").exists():
                continue  # not a cgroup2 root
            if root == Path("/sys/fs/cgroup") and "pids" not in (
                root / "cgroup.subtree_control"
            ).read_text():
                continue
            if not os.access(root, os.W_OK):
                continue
            path = root / "labls" / name
            try:
                path.mkdir(parents=True, exist_ok=True)
                (path / max_file).write_text(str(max_pids))
            except OSError:
                continue
            return cls(path)
        return None

    def set_max(self, max_pids: int) -> None:
        with contextlib.suppress(OSError):
            (self.path / "pids.max").write_text(str(max_pids))

    def members(self) -> list[int]:
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def hit_limit(self) -> bool:
        with contextlib.suppress(OSError, ValueError):
            events = (self.path / "pids.events").read_text()
            return any(int(line.split()[1]) > 0 for line in events.splitlines()
                       if line.startswith("max"))
        return False

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.rmdir()


def remove_stale_cgroups(limit: int = 8) -> int:
    """Remove up to `limit` empty cgroups named `<pid>-<hex>` left by engines that are gone
    (killed before they could remove their standby's). Bounded: each cgroup removal can wait
    for an RCU grace period and holds up other cgroup joins, a new run's among them."""
    removed = 0
    for root in PIDS_ROOTS:
        with contextlib.suppress(OSError):
            for entry in os.scandir(root / "labls"):
                owner = entry.name.split("-", 1)[0]
                if not owner.isdigit() or Path("/proc", owner).exists():
                    continue
                if removed >= limit:
                    return removed
                with contextlib.suppress(OSError):
                    os.rmdir(entry.path)  # refused while any process is still inside
                    removed += 1
    return removed


def apply_rlimits(pid: int, memory_mb: int, max_processes: int, file_size_mb: int,
                 nproc: bool) -> None:
    """Lower the limits of process `pid` (soft and hard), which all its children inherit."""
    import resource

    wanted = [(resource.RLIMIT_FSIZE, file_size_mb * 1024 * 1024)]
    if memory_mb:
        wanted.append((resource.RLIMIT_AS, memory_mb * 1024 * 1024))
    if nproc and max_processes:
        wanted.append((resource.RLIMIT_NPROC, max_processes))
    for which, limit in wanted:
        hard = resource.prlimit(pid, which)[1]
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)  # never above what this machine already allows
        if limit:
            resource.prlimit(pid, which, (limit, limit))
