"""What a run did, seen from outside its reach: dataset files it opened and read, and its
attempts to reach the network. The run can neither write nor erase these observations.

Dataset reads (when labls runs as root): the run does not see the dataset root itself but a
read-only overlayfs mounted by the engine for this run alone (lower layers: the root and an
empty folder), bound into the sandbox at the root's path. Being its own superblock, it can be
watched whole with fanotify (`FAN_MARK_FILESYSTEM`): every open and every read through it, by
any process of the run and any path (a symlink the run made, `cat`, C readers), is an event in
the engine's queue, and no process outside the run uses it. A file counts as read when a read
of it was seen (`FAN_ACCESS`); once seen, its inode is ignored, so a training loop's reads cost
one event per file. Pages read through `mmap` raise no event, so the engine also reads the
maps of the run's processes once a second: a file seen mapped counts as read (one mapped and
unmapped between two samples counts as opened only). A prepare step that may fill the cache
gets an upper layer owned by the run; what it wrote is copied into the cache afterwards
(regular files and folders only).

Network attempts: the run's network namespace holds only loopback, and its resolver points at an
unroutable address (`RESOLVER`), so every attempt to reach another host (a connect, a UDP send,
a DNS query) fails its route lookup, which the kernel counts per namespace (`OutNoRoutes` of
IPv4 and IPv6). The engine pins the namespace (a descriptor of `/proc/<sandbox pid>/ns/net`) and
reads the counters from a thread that joins it, after the run's processes are gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import shutil
import stat
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import proctree

RESOLVER = "192.0.2.53"  # TEST-NET-1: never routable, so a DNS query is a counted attempt
MAX_PATHS = 100_000  # paths kept per run; beyond that only the counts grow

_FAN_CLOEXEC, _FAN_NONBLOCK, _FAN_UNLIMITED_QUEUE = 0x1, 0x2, 0x10
_FAN_MARK_ADD, _FAN_MARK_IGNORED_MASK, _FAN_MARK_IGNORED_SURV_MODIFY = 0x1, 0x20, 0x40
_FAN_MARK_FILESYSTEM = 0x100
_FAN_ACCESS, _FAN_OPEN, _FAN_Q_OVERFLOW = 0x1, 0x20, 0x4000
_AT_FDCWD = -100
_MNT_DETACH = 2
_CLONE_NEWNET = 0x40000000
_EVENT = struct.Struct("IBBHQii")  # fanotify_event_metadata

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
_libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int,
                                ctypes.c_char_p]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


class ObserverUnavailable(OSError):
    """The outside observer cannot be set up here (not root, no overlayfs or fanotify)."""


def _check(rc: int, what: str) -> int:
    if rc < 0:
        code = ctypes.get_errno()
        raise ObserverUnavailable(code, f"{what}: {os.strerror(code)}")
    return rc


@dataclass
class DatasetReads:
    """Files under the dataset root the run opened, and those it read bytes from (as seen
    from outside the run). Paths are kept up to `MAX_PATHS`; the counts go on past it."""

    opened: list[str] = field(default_factory=list)
    read: list[str] = field(default_factory=list)
    opened_count: int = 0
    read_count: int = 0
    read_bytes: int = 0  # the sizes of the files read, all of them (one event per file)
    note: str = ""
    datasets: list[str] = field(default_factory=list)  # those of every file read, uncapped


class DatasetView:
    """The overlay a root engine mounts for one run, and the fanotify watch on it."""

    def __init__(self, root: Path, run_dir: Path, run_uid: int, writable: bool,
                 owner: Callable[[str], str | None]) -> None:
        self.root = root
        self._owner = owner  # a read file's dataset, for every file read (paths are capped)
        self._datasets: dict[str, None] = {}
        self.mountpoint = run_dir / "datasets"
        self._empty = run_dir / "datasets-empty"
        self._upper = run_dir / "datasets-upper" if writable else None
        self._work = run_dir / "datasets-work"
        self._fd = -1
        self._dev: str | None = None  # the view's device, as `/proc/<pid>/maps` writes it
        self._lock = threading.Lock()
        self._opened: dict[str, None] = {}
        self._read: dict[str, None] = {}
        self._opened_count = 0
        self._read_count = 0
        self._read_bytes = 0
        self._overflow = False
        self._stop_r, self._stop_w = os.pipe()
        self._thread: threading.Thread | None = None
        for folder in (self.mountpoint, self._empty):
            folder.mkdir(mode=0o755)
        if self._upper is not None:
            self._upper.mkdir(mode=0o755)
            self._work.mkdir(mode=0o700)
            os.chown(self._upper, run_uid, run_uid)  # the merged root shows the upper's owner
            options = f"lowerdir={root},upperdir={self._upper},workdir={self._work}"
            flags = 0
        else:
            options = f"lowerdir={root}:{self._empty}"
            flags = 1  # MS_RDONLY
        try:
            _check(_libc.mount(b"labls-datasets", bytes(self.mountpoint), b"overlay", flags,
                               options.encode()), f"mounting the dataset view at {self.mountpoint}")
            self._fd = _check(_libc.fanotify_init(
                _FAN_CLOEXEC | _FAN_NONBLOCK | _FAN_UNLIMITED_QUEUE, os.O_RDONLY | os.O_LARGEFILE),
                "fanotify_init")
            _check(_libc.fanotify_mark(self._fd, _FAN_MARK_ADD | _FAN_MARK_FILESYSTEM,
                                       _FAN_OPEN | _FAN_ACCESS, _AT_FDCWD,
                                       bytes(self.mountpoint)), "fanotify_mark")
        except BaseException:
            self.close()
            raise
        device = os.stat(self.mountpoint).st_dev
        self._dev = f"{os.major(device):02x}:{os.minor(device):02x}"
        track_view(str(self.mountpoint), True)
        self._thread = threading.Thread(target=self._follow, name="labls-datasets", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while True:
            ready, _, _ = select.select([self._fd, self._stop_r], [], [])
            self._drain()
            if self._stop_r in ready:
                self._drain()
                return

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self._fd, 64 * 1024)
            except OSError:  # BlockingIOError: the queue is empty
                return
            offset = 0
            while offset + _EVENT.size <= len(data):
                length, _ver, _res, _meta, mask, efd, _pid = _EVENT.unpack_from(data, offset)
                offset += length or _EVENT.size
                if mask & _FAN_Q_OVERFLOW:
                    self._overflow = True
                if efd >= 0:
                    try:
                        self._event(mask, efd)
                    finally:
                        os.close(efd)

    def _event(self, mask: int, efd: int) -> None:
        try:
            shown = os.readlink(f"/proc/self/fd/{efd}")
            st = os.fstat(efd)
        except OSError:
            return
        path = self._path_of(shown, st.st_ino) or str(self.root) + "/?"
        if self._mark(path, bool(mask & _FAN_ACCESS), st.st_size):
            # no more events for this file: a loop reading it in chunks costs one event
            _libc.fanotify_mark(self._fd, _FAN_MARK_ADD | _FAN_MARK_IGNORED_MASK
                                | _FAN_MARK_IGNORED_SURV_MODIFY, _FAN_OPEN | _FAN_ACCESS,
                                efd, None)

    def _mark(self, path: str, read: bool, size: int) -> bool:
        """Count `path` opened (and read, with its size); True when it is newly read. Called
        from the watcher thread and, for mappings, from the run's thread."""
        with self._lock:
            if path not in self._opened:
                self._opened_count += 1
                if len(self._opened) < MAX_PATHS:
                    self._opened[path] = None
            if not read or path in self._read:
                return False
            self._read_count += 1
            self._read_bytes += size
            if len(self._read) < MAX_PATHS:
                self._read[path] = None
            if (name := self._owner(path)) is not None:
                self._datasets[name] = None
            return True

    def _path_of(self, shown: str, inode: int) -> str | None:
        """The file under the dataset root that an event is about. The kernel names it as
        seen from the reader's namespace (`<root>/<rel>`), from ours (`<mountpoint>/<rel>`),
        or from the run's mount alone (`/<rel>`); the right reading is the one that leads to
        the same inode (overlayfs shows a lower file's own inode number)."""
        first = None
        for prefix in (str(self.root), str(self.mountpoint), ""):
            if not shown.startswith(prefix + "/"):
                continue
            candidate = str(self.root) + shown[len(prefix):]
            first = first or candidate
            with contextlib.suppress(OSError):
                if os.stat(candidate, follow_symlinks=False).st_ino == inode:
                    return candidate
        return first

    def sample_maps(self, pids: list[int]) -> None:
        """Files of the view mapped by the run's processes (`/proc/<pid>/maps`, read from
        outside): pages read through `mmap` raise no fanotify event, so a mapping seen here
        counts as a read. The engine calls this once a second; a mapping made and dropped
        between two samples is not seen."""
        if self._dev is None:
            return
        for pid in pids:
            with contextlib.suppress(OSError), open(f"/proc/{pid}/maps") as maps:
                for line in maps:
                    fields = line.split(maxsplit=5)
                    if len(fields) < 6 or fields[3] != self._dev:
                        continue
                    path = self._path_of(fields[5].rstrip("\n"), int(fields[4]))
                    if path is None or path in self._read or len(self._read) >= MAX_PATHS:
                        continue  # past the cap a mapping would recount
                    size = 0
                    with contextlib.suppress(OSError):
                        size = os.stat(path, follow_symlinks=False).st_size
                    self._mark(path, True, size)

    def finish(self) -> DatasetReads:
        """The run's processes are gone: read what is left of the queue and stop watching."""
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=30)
        note = "the event queue overflowed: some reads were not seen" if self._overflow else ""
        return DatasetReads(list(self._opened), list(self._read), self._opened_count,
                            self._read_count, self._read_bytes, note, list(self._datasets))

    def merge_writes(self) -> int:
        """Copy what a writable (prepare) run wrote into the real dataset root: regular files
        and folders, owned by this process; links, devices and deletions are dropped."""
        if self._upper is None:
            return 0
        copied = 0
        for here, dirs, names in os.walk(self._upper):
            rel = Path(here).relative_to(self._upper)
            for name in dirs:
                source = Path(here, name)
                if stat.S_ISDIR(source.lstat().st_mode):
                    (self.root / rel / name).mkdir(exist_ok=True)
            for name in names:
                source = Path(here, name)
                if stat.S_ISREG(source.lstat().st_mode):
                    shutil.copyfile(source, self.root / rel / name, follow_symlinks=False)
                    copied += 1
        return copied

    def close(self) -> None:
        """Stop watching, unmount and remove the view (lazily: nothing can keep it busy)."""
        if self._thread is not None and self._thread.is_alive():  # never finished: stop it
            with contextlib.suppress(OSError):
                os.write(self._stop_w, b"x")
            self._thread.join(timeout=30)
        for fd in (self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._stop_r = self._stop_w = -1
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        _libc.umount2(bytes(self.mountpoint), _MNT_DETACH)
        track_view(str(self.mountpoint), False)
        for folder in (self.mountpoint, self._empty):
            with contextlib.suppress(OSError):
                folder.rmdir()
        if self._upper is not None:
            shutil.rmtree(self._upper, ignore_errors=True)
            shutil.rmtree(self._work, ignore_errors=True)


def sweep_stale_views(state_dir: Path) -> int:
    """Unmount the dataset and work views of this state dir's runs that no live engine owns
    (their engine was killed before its watchdog could unmount them); returns how many."""
    prefix = f"{state_dir}/runs/"
    stale = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split(" ")
            point = fields[4] if len(fields) > 4 else ""
            if point.startswith(prefix) and point.endswith(("/datasets", "/work")):
                stale.append(point)
    owned = _live_views()
    stale = [p for p in stale if p not in owned and not _owner_alive(Path(p).parent)]
    for point in stale:
        _libc.umount2(point.encode(), _MNT_DETACH)
    return len(stale)


def _owner_alive(run_dir: Path) -> bool:
    """The run's folder names its engine's process (`owner`), and that process still runs:
    another labls (an editor's server, a `labls run`) owns the view."""
    try:
        return proctree.mark_alive((run_dir / "owner").read_text())
    except OSError:
        return False


_views_lock = threading.Lock()
_views: set[str] = set()


def track_view(mountpoint: str, mounted: bool) -> None:
    """Note a view this process mounted (or unmounted), so a sweep leaves it alone."""
    with _views_lock:
        (_views.add if mounted else _views.discard)(mountpoint)


def _live_views() -> set[str]:
    with _views_lock:
        return set(_views)


# --- network attempts ----------------------------------------------------------------------------

class NetworkCounter:
    """The run's network namespace, pinned, and its failed-route counters at the end."""

    def __init__(self, sandbox_pid: int) -> None:
        self._ns = os.open(f"/proc/{sandbox_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)

    def attempts(self) -> int | None:
        """Attempts to reach another host (None: the counters could not be read)."""
        found: list[int] = []

        def read() -> None:  # a thread of its own: setns moves only the calling thread
            if _libc.setns(self._ns, _CLONE_NEWNET) != 0:
                return
            found.append(_no_routes())

        thread = threading.Thread(target=read, name="labls-netns", daemon=True)
        thread.start()
        thread.join(timeout=10)
        os.close(self._ns)
        self._ns = -1
        return found[0] if found else None

    def close(self) -> None:
        if self._ns >= 0:
            os.close(self._ns)
            self._ns = -1


def _no_routes() -> int:
    total = 0
    with open("/proc/thread-self/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Ip:")]
    if len(rows) == 2:
        total += int(dict(zip(rows[0][1:], rows[1][1:], strict=False)).get("OutNoRoutes", 0))
    with contextlib.suppress(OSError), open("/proc/thread-self/net/snmp6") as f:
        for line in f:
            name, _, value = line.partition(" ")
            if name == "Ip6OutNoRoutes":
                total += int(value.strip() or 0)
    return total


class SandboxGate:
    """bwrap tells the engine its sandbox's pid (`--info-fd`) and waits (`--block-fd`) until
    the engine has pinned the sandbox's network namespace, so even a run that exits at once
    leaves its counters behind. Both are FIFOs in the run's folder, out of the run's reach."""

    INFO_FD, BLOCK_FD = 8, 7

    def __init__(self, run_dir: Path) -> None:
        self.info_path, self.block_path = run_dir / "info.fifo", run_dir / "block.fifo"
        for path in (self.info_path, self.block_path):
            os.mkfifo(path, 0o600)
        self._info = os.open(self.info_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self._block = os.open(self.block_path, os.O_RDWR | os.O_CLOEXEC)

    @property
    def fds(self) -> dict[int, tuple[str, Path]]:
        return {self.INFO_FD: ("<>", self.info_path), self.BLOCK_FD: ("<", self.block_path)}

    def open(self, pidfd: int, timeout: float = 10.0) -> NetworkCounter | None:
        """Wait for the sandbox's pid, pin its network namespace, let the sandbox go on.
        None when bwrap exited first (its error is in the run's log)."""
        import json
        import time

        deadline = time.monotonic() + timeout
        text = b""
        counter = None
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([self._info, pidfd], [], [],
                                            max(0.0, deadline - time.monotonic()))
                if self._info in ready:
                    with contextlib.suppress(BlockingIOError):
                        text += os.read(self._info, 4096)
                    with contextlib.suppress(ValueError):
                        pid = int(json.loads(text)["child-pid"])
                        counter = NetworkCounter(pid)
                        break
                if pidfd in ready:
                    break
        except (OSError, KeyError, TypeError):
            counter = None
        finally:
            with contextlib.suppress(OSError):
                os.write(self._block, b"go")
        return counter

    def close(self) -> None:
        for fd in (self._info, self._block):
            with contextlib.suppress(OSError):
                os.close(fd)
        for path in (self.info_path, self.block_path):
            with contextlib.suppress(OSError):
                path.unlink()
