"""Resource limits for a run, set on its first process before it becomes the run (no
`preexec_fn`: the server has threads), and inherited by everything the run starts.

- Process count: a `pids` cgroup when this process may create one (root on cgroup v1 or v2),
  joined by the launch guard (`lifeline.py`) before anything of the run starts; otherwise
  `RLIMIT_NPROC`, which holds for non-root users (the kernel does not apply it to root).
- Memory: a `memory` cgroup for every run, CPU and GPU alike (default: three quarters of the
  machine's memory); its OOM kills are counted and reported as `oom`. On CPU runs a
  `run.memory_mb` the user set is also `RLIMIT_AS`, so an allocation that cannot fit fails
  as a `MemoryError` at its line (not on GPU runs: it breaks CUDA's address reservations).
  Without a memory cgroup (not root), `RLIMIT_AS` is all there is, and only on CPU runs.
- File size: `RLIMIT_FSIZE`, so a runaway writer gets `EFBIG` rather than filling the disk.

The rlimits are set with `prlimit(2)` on the waiting standby process, not with a `prlimit`
command in front of the run: one exec fewer on every launch.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
# per controller, the file of its limit and the file/key that counts hits (v1 names, v2 names)
_LIMIT_FILES = {"pids": ("pids.max", "pids.max"),
                "memory": ("memory.limit_in_bytes", "memory.max")}


def _controller_root(controller: str) -> Path | None:
    """Where this process may make a cgroup with `controller`: v1's own hierarchy, else a v2
    root that delegates it; None when neither is writable."""
    v1 = CGROUP_ROOT / controller
    if (v1 / "cgroup.procs").exists() and not (v1 / "cgroup.controllers").exists():
        return v1 if os.access(v1, os.W_OK) else None
    with contextlib.suppress(OSError):
        if controller in (CGROUP_ROOT / "cgroup.subtree_control").read_text().split() and (
                os.access(CGROUP_ROOT, os.W_OK)):
            return CGROUP_ROOT
    return None


class RunCgroup:
    """One run's cgroups, a folder per controller (pids, memory), all joined by its standby.

    A run holds no capability and these files belong to root, so it cannot leave them."""

    def __init__(self, paths: dict[str, Path]) -> None:
        self.paths = paths

    @classmethod
    def create(cls, name: str, max_pids: int) -> RunCgroup | None:
        paths = {}
        for controller in ("pids", "memory"):
            root = _controller_root(controller)
            if root is None:
                continue
            path = root / "labls" / name
            with contextlib.suppress(OSError):
                path.mkdir(parents=True, exist_ok=True)
                paths[controller] = path
        made = cls(paths) if paths else None
        if made and "pids" in paths:
            made.set_max(max_pids)
        return made

    @property
    def path(self) -> Path:
        """The first folder (whose `cgroup.procs` lists the run's processes)."""
        return next(iter(self.paths.values()))

    def procs_files(self) -> list[str]:
        return [str(path / "cgroup.procs") for path in self.paths.values()]

    def _limit_file(self, controller: str) -> Path | None:
        path = self.paths.get(controller)
        if path is None:
            return None
        v1, v2 = _LIMIT_FILES[controller]
        return path / (v1 if (path / v1).exists() else v2)

    def set_max(self, max_pids: int) -> None:
        if (limit := self._limit_file("pids")) is not None:
            with contextlib.suppress(OSError):
                limit.write_text(str(max_pids))

    def set_memory(self, limit_mb: int) -> bool:
        """Cap the run's memory (page cache and tmpfs included); False where no memory
        controller is available to this process."""
        if (limit := self._limit_file("memory")) is None:
            return False
        try:
            limit.write_text(str(limit_mb * 1024 * 1024))
            return True
        except OSError:
            return False

    @property
    def limits_memory(self) -> bool:
        return "memory" in self.paths

    def members(self) -> list[int]:
        found: dict[int, None] = {}
        for procs in self.procs_files():
            with contextlib.suppress(OSError, ValueError):
                found.update(dict.fromkeys(int(p) for p in Path(procs).read_text().split()))
        return list(found)

    def hit_limit(self) -> bool:
        """The pids limit refused a fork."""
        return self._count("pids", ("pids.events",), "max") > 0

    def oom_kills(self) -> int:
        """Processes of the run the kernel killed for going over the memory limit."""
        return self._count("memory", ("memory.oom_control", "memory.events"), "oom_kill")

    def _count(self, controller: str, files: tuple[str, ...], key: str) -> int:
        path = self.paths.get(controller)
        if path is None:
            return 0
        for name in files:
            with contextlib.suppress(OSError, ValueError, IndexError):
                for line in (path / name).read_text().splitlines():
                    if line.split()[0] == key:
                        return int(line.split()[1])
        return 0

    def remove(self) -> None:
        for path in self.paths.values():
            with contextlib.suppress(OSError):
                path.rmdir()


def default_memory_mb() -> int:
    """A run's memory limit when `run.memory_mb` is 0: three quarters of the machine's."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 3 // 4 // 1024
    return 0


def remove_stale_cgroups(limit: int = 8) -> int:
    """Remove up to `limit` empty cgroups named `<pid>-<hex>` left by engines that are gone
    (killed before they could remove their standby's). Bounded: each cgroup removal can wait
    for an RCU grace period and holds up other cgroup joins, a new run's among them."""
    removed = 0
    for controller in ("pids", "memory"):
        root = _controller_root(controller)
        if root is None:
            continue
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


def address_space_mb(gpu_run: bool, asked_mb: int) -> int:
    """The `RLIMIT_AS` of a run, 0 for none: only a CPU run whose user set `run.memory_mb`
    (CUDA reserves far more address space than it uses; the cgroup holds GPU runs)."""
    return 0 if gpu_run else asked_mb


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
