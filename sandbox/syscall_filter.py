"""The seccomp filter of every bwrap run: the system calls a training script never needs.

Built with Debian's libseccomp (`libseccomp.so.2`, the library its Python binding wraps; the
binding itself is compiled for Debian's interpreter, not for a venv's), exported as classic BPF
into a file, and handed to bwrap with `--seccomp FD`: bwrap loads it last, after its own mounts,
right before it execs the run, with `no_new_privs` set.

What it refuses (`EPERM`, as an unprivileged caller would get):
- the mount family, old API and new (`mount`, `umount2`, `pivot_root`, `chroot`, `fsopen`,
  `fsmount`, `move_mount`, `open_tree`, ...), `setns`, `unshare`, and `clone` with a
  namespace flag: no new view of the filesystem, no way into another namespace;
- kernel attack surface no experiment needs: `bpf`, `perf_event_open`, `keyctl` and the key
  calls, `userfaultfd`, `io_uring_*` (its operations bypass this filter), module loading,
  `kexec_*`, `open_by_handle_at` (the "shocker" escape), `reboot`, `swapon`, clock setting,
  `acct`, `quotactl`, `syslog`, `ioperm`/`iopl`;
- `ioctl(TIOCSTI)`: pushing input into a terminal the run does not own.
`clone3` answers `ENOSYS` (its flags sit behind a pointer a filter cannot read), so the C
library falls back to `clone`, whose flags it can. Calls of any other ABI (i386, x32) kill the
process: they would go around a filter written for x86-64 numbers.
"""

from __future__ import annotations

import ctypes
import errno
import os
import tempfile
import threading
from pathlib import Path

DENIED = (
    "mount", "umount", "umount2", "pivot_root", "chroot", "setns", "unshare",
    "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
    "open_tree_attr",
    "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "open_by_handle_at", "name_to_handle_at", "lookup_dcookie",
    "reboot", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd", "syslog",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "stime",
    "ioperm", "iopl", "vhangup", "nfsservctl", "uselib", "_sysctl",
)
CLONE_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000,
                         0x20000000, 0x40000000)  # NEWNS CGROUP UTS IPC USER PID NET
TIOCSTI = 0x5412

_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_CMP_MASKED_EQ = 7


def _errno_action(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


class FilterUnavailable(RuntimeError):
    """libseccomp is missing or refused to build the filter; the message says which."""


def _library() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError as exc:
        raise FilterUnavailable(
            f"libseccomp is not installed ({exc}): Debian/Ubuntu `apt-get install libseccomp2`"
        ) from exc
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def _add(lib: ctypes.CDLL, ctx: int, action: int, name: str,
         conditions: list[tuple[int, int, int]] | None = None) -> None:
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    if nr < 0:  # not a call of this architecture or of this libseccomp's table
        return
    conds = conditions or []
    array = (_ArgCmp * max(1, len(conds)))(
        *[_ArgCmp(arg, _SCMP_CMP_MASKED_EQ, mask, value) for arg, mask, value in conds])
    rc = lib.seccomp_rule_add_array(ctx, action, nr, len(conds), array)
    if rc < 0:
        raise FilterUnavailable(f"libseccomp refused the rule for {name}: {os.strerror(-rc)}")


def _export(path: Path) -> None:
    lib = _library()
    ctx = lib.seccomp_init(_SCMP_ACT_ALLOW)
    if not ctx:
        raise FilterUnavailable("seccomp_init failed")
    try:
        deny = _errno_action(errno.EPERM)
        for name in DENIED:
            _add(lib, ctx, deny, name)
        for flag in CLONE_NAMESPACE_FLAGS:
            _add(lib, ctx, deny, "clone", [(0, flag, flag)])
        _add(lib, ctx, _errno_action(errno.ENOSYS), "clone3")
        _add(lib, ctx, deny, "ioctl", [(1, 0xFFFFFFFF, TIOCSTI)])
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            rc = lib.seccomp_export_bpf(ctx, fd)
        finally:
            os.close(fd)
        if rc < 0:
            raise FilterUnavailable(f"seccomp_export_bpf failed: {os.strerror(-rc)}")
    finally:
        lib.seccomp_release(ctx)


_program: list[bytes] = []
_lock = threading.Lock()


def program() -> bytes:
    """The compiled filter (classic BPF, as `--seccomp` reads it), built once per process."""
    with _lock:
        if not _program:
            with tempfile.TemporaryDirectory(prefix="labls-seccomp-") as folder:
                path = Path(folder) / "filter.bpf"
                _export(path)
                _program.append(path.read_bytes())
        return _program[0]


def check() -> None:
    """Raise `FilterUnavailable` (naming the fix) unless the filter can be built here."""
    program()


def write(path: Path) -> Path:
    """The filter into a new file at `path` (a run's folder, which the run cannot reach)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(program())
    return path
