"""A run's work folder as a copy-on-write view of the workspace (a root engine, the hardened
sandbox): O(1) in the workspace's size, whatever it holds.

- The lower layer is the workspace itself, through an idmapped mount (`open_tree` +
  `mount_setattr(MOUNT_ATTR_IDMAP)`): its owner's files appear as the run's own uid, so the
  run may change them, and what it changes is copied up, never written through.
- The upper layer is the run's own folder (`work-upper/`, renamed `work/` once the view is
  unmounted): exactly what the run wrote, and the only disk a run's work folder costs.
  `wrote(rel)` answers from it, so "written by the run" no longer depends on mtimes.
- Hidden in the view, by whiteouts in the upper layer: `.git`, the state dir, secret files
  and the trusted `run.hide` patterns, wherever they are, tracked or not, ignored or not
  (`hiding.py` finds them).
Where this cannot be mounted (not root, an old kernel), the engine copies the workspace instead
(`workdir.populate`), applying the same hiding, and the record says which it was.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import stat
import subprocess
from pathlib import Path

from .hiding import find_hidden
from .observe import _MNT_DETACH, ObserverUnavailable, _check, _libc, track_view

_SYS_OPEN_TREE, _SYS_MOVE_MOUNT, _SYS_MOUNT_SETATTR = 428, 429, 442
_OPEN_TREE_CLONE, _OPEN_TREE_CLOEXEC = 1, 0o2000000
_AT_FDCWD, _AT_EMPTY_PATH = -100, 0x1000
_MOUNT_ATTR_IDMAP, _MOVE_MOUNT_F_EMPTY_PATH = 0x00100000, 4


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


class WorkView:
    """The overlay at `run_dir/work`; `close()` unmounts it and keeps what the run wrote."""

    def __init__(self, workspace: Path, state_dir: Path, run_dir: Path, run_uid: int,
                 hide: list[str]) -> None:
        self.mountpoint = run_dir / "work"
        self.upper = run_dir / "work-upper"
        self._lower = run_dir / "work-lower"
        self._scratch = run_dir / "work-ovl"
        self._mounted = False
        self._whiteouts: list[Path] = []
        for folder in (self.mountpoint, self.upper, self._lower, self._scratch):
            folder.mkdir(mode=0o700 if folder == self._scratch else 0o755)
        owner = workspace.stat()
        os.chown(self.upper, run_uid, run_uid)  # the view's root: the run's, 0755 (bwrap, as a
        # root without capabilities, enters it before it becomes the run's uid)
        try:
            self._idmapped_lower(workspace, owner.st_uid, owner.st_gid, run_uid)
            for rel in find_hidden(workspace, state_dir, hide):
                self._white_out(workspace, rel, run_uid)
            # volatile: no syncfs of the whole upper filesystem at mount and unmount (waiting
            # on every other writer's dirty pages, e.g. a checkpoint being saved meanwhile)
            options = (f"lowerdir={self._lower},upperdir={self.upper},"
                       f"workdir={self._scratch},volatile").encode()
            _check(_libc.mount(b"labls-work", bytes(self.mountpoint), b"overlay", 0, options),
                   f"mounting the work view at {self.mountpoint}")
            self._mounted = True
            track_view(str(self.mountpoint), True)
        except BaseException:
            self.close()
            raise
        finally:  # the overlay holds its lower layer; the mount point is not needed
            _libc.umount2(bytes(self._lower), _MNT_DETACH)

    def _idmapped_lower(self, workspace: Path, uid: int, gid: int, run_uid: int) -> None:
        """The workspace, not its submounts, at `work-lower`, its owner's files as `run_uid`."""
        holder = subprocess.Popen(["unshare", "--user", "sleep", "60"],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        tree = userns = -1
        try:
            proc = Path(f"/proc/{holder.pid}")
            for _ in range(1000):  # until unshare has made the namespace (a few ms)
                if os.readlink(proc / "ns" / "user") != os.readlink("/proc/self/ns/user"):
                    break
                os.sched_yield()
            (proc / "uid_map").write_text(f"{uid} {run_uid} 1\n")
            (proc / "setgroups").write_text("deny")
            (proc / "gid_map").write_text(f"{gid} {run_uid} 1\n")
            userns = os.open(proc / "ns" / "user", os.O_RDONLY | os.O_CLOEXEC)
            tree = _check(_libc.syscall(_SYS_OPEN_TREE, _AT_FDCWD, bytes(workspace),
                                        _OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC), "open_tree")
            attr = _MountAttr(_MOUNT_ATTR_IDMAP, 0, 0, userns)
            _check(_libc.syscall(_SYS_MOUNT_SETATTR, tree, b"", _AT_EMPTY_PATH,
                                 ctypes.byref(attr), ctypes.sizeof(attr)), "mount_setattr")
            _check(_libc.syscall(_SYS_MOVE_MOUNT, tree, b"", _AT_FDCWD, bytes(self._lower),
                                 _MOVE_MOUNT_F_EMPTY_PATH), "move_mount")
        except OSError as exc:
            raise ObserverUnavailable(exc.errno or 0, f"an idmapped workspace: {exc}") from exc
        finally:
            for fd in (tree, userns):
                if fd >= 0:
                    os.close(fd)
            holder.kill()
            holder.wait()

    def _white_out(self, workspace: Path, rel: str, run_uid: int) -> None:
        """A whiteout at `rel` in the upper layer (its folders made to match the lower's)."""
        parts = Path(rel).parts
        here = self.upper
        for i, part in enumerate(parts[:-1]):
            here = here / part
            if not here.exists():
                lower = workspace.joinpath(*parts[: i + 1])
                if not lower.is_dir() or lower.is_symlink():
                    return  # not a folder of the workspace: nothing below it to hide
                here.mkdir(mode=stat.S_IMODE(lower.stat().st_mode))
                os.chown(here, run_uid, run_uid)
        target = here / parts[-1]
        if not os.path.lexists(target):
            os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))
            self._whiteouts.append(target)

    def wrote(self, rel: str) -> bool:
        """The run itself wrote `rel` (it is in its own layer, not a whiteout)."""
        try:
            st = os.lstat(self.upper / rel)
        except OSError:
            return False
        return not (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0)

    def close(self) -> None:
        """Unmount the view (lazily: nothing can keep it busy); what the run wrote becomes the
        run folder's `work/`, without the whiteouts labls made to hide things."""
        if self._mounted:
            _libc.umount2(bytes(self.mountpoint), _MNT_DETACH)
            track_view(str(self.mountpoint), False)
            self._mounted = False
        for node in self._whiteouts:
            with contextlib.suppress(OSError):
                node.unlink()
        for folder in (self._lower, self.mountpoint):
            with contextlib.suppress(OSError):
                folder.rmdir()
        shutil.rmtree(self._scratch, ignore_errors=True)
        if self.upper.is_dir() and not self.mountpoint.exists():
            self.upper.rename(self.mountpoint)
            self.upper = self.mountpoint
