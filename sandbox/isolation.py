"""Isolation backends: bubblewrap, `unshare`, or none, as an argv wrapped around the interpreter.

bwrap (the hardened sandbox, what `auto` means):
- no privilege: the run's processes hold no capability in any set, `no_new_privs` is set, and
  their host uid is not 0. As root, bwrap sets the sandbox up without a user namespace and
  `setpriv` then drops the run to a uid of its own (`RUN_UID_BASE` + n, no account has it);
  as a user, bwrap's user namespace maps the run to that user, with no capabilities and no
  further user namespaces;
- a seccomp filter (`syscall_filter.py`) for the calls a training script never needs;
- new PID, network, IPC, UTS and cgroup namespaces, `--die-with-parent`, a new session;
- an allow-listed filesystem on an empty root: `/usr` (and the `/bin`, `/lib*`, `/sbin`
  links), a few files of `/etc` (`ETC_ALLOWED`, and a generated passwd/group/hosts), the
  interpreter's prefix and venv, labls's harness, the dataset root read-only, the run's work,
  probe and home folders read-write, fresh `/tmp` and `/dev/shm`, a minimal `/dev` (plus the
  slot's GPU nodes), the run's own `/proc`, and of `/sys` only the CPU topology (and, on GPU
  runs, the PCI devices and modules CUDA reads). Nothing else of the host.
unshare (weaker, only when configured explicitly): new user, network and PID namespaces; the
filesystem is not hidden, and every run says so in its record.
none: only when chosen explicitly, and never with `network = "none"`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .records import ErrorKind


class RunRefused(Exception):
    """The run cannot be given the isolation it asks for; the message says what to do.

    `kind` is the record's error kind: `network` when the network could not be closed."""

    def __init__(self, message: str, kind: ErrorKind = ErrorKind.REFUSED) -> None:
        super().__init__(message)
        self.kind = kind


INSTALL_HINT = (
    "install bubblewrap and libseccomp (Debian/Ubuntu: `apt-get install bubblewrap "
    "libseccomp2`), or allow a weaker sandbox in your own config: "
    '`run.isolation = "unshare"` (hides no files), or `run.isolation = "none"` together with '
    '`run.network = "host"` to run without a sandbox'
)
WEAKER = {"unshare": "the unshare sandbox hides no files and keeps no seccomp filter",
          "none": "no sandbox: the run sees and can change everything this user can"}
RUN_UID_BASE = 1_900_000_000  # host uids of runs when labls is root: no account has them
RUN_UID_COUNT = 65536
SECCOMP_FD = 9  # the launch opens the compiled filter here for bwrap (dash: one digit only)
SYSTEM_LINKS = ("bin", "lib", "lib32", "lib64", "libx32", "sbin")
ETC_ALLOWED = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "nsswitch.conf", "localtime",
               "timezone", "alternatives", "ssl", "ca-certificates", "mime.types",
               "os-release", "debian_version", "protocols", "services", "gai.conf", "host.conf",
               "fonts", "matplotlibrc", "magic", "magic.mime", "inputrc", "terminfo")
ETC_NETWORK = ("resolv.conf",)  # only with `run.network = "host"`
SYS_CPU = ("/sys/devices/system/cpu", "/sys/devices/system/node")
SYS_GPU = ("/sys/bus/pci", "/sys/devices", "/sys/module")


_probed: dict[str, tuple[bool, str]] = {}
_probe_lock = threading.Lock()


def probe(kind: str) -> tuple[bool, str]:
    """Can this backend start a namespaced process here? (ok, reason). Asked once per process;
    a caller that comes while the first probe runs waits for its answer."""
    with _probe_lock:
        if kind not in _probed:
            _probed[kind] = _probe(kind)
        return _probed[kind]


def warm(requested: str) -> None:
    """Probe ahead of the first run (the engine calls this on a thread when it starts)."""
    probe("bwrap" if requested == "auto" else requested)


def _probe(kind: str) -> tuple[bool, str]:
    if kind == "none":
        return True, ""
    if kind == "bwrap":
        tool = shutil.which("bwrap")
        if tool is None:
            return False, "bwrap is not installed"
        if privileged() and shutil.which("setpriv") is None:
            return False, "setpriv (util-linux) is not installed: runs cannot drop root"
        from . import syscall_filter

        try:
            syscall_filter.check()
        except syscall_filter.FilterUnavailable as exc:
            return False, str(exc)
        cmd = [tool, *_privilege(), "--unshare-net", "--unshare-pid", "--die-with-parent",
               "--ro-bind", "/usr", "/usr", *_system_links(), "/usr/bin/true"]
    elif kind == "unshare":
        tool = shutil.which("unshare")
        if tool is None:
            return False, "unshare is not installed"
        cmd = [tool, "--user", "--map-root-user", "--net", "--pid", "--fork", "true"]
    else:
        return False, f"unknown isolation {kind!r}"
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip()
        hint = ""
        if "uid map" in err or "Permission denied" in err:
            hint = (" (unprivileged user namespaces are blocked: on Ubuntu 24.04 set "
                    "`sysctl kernel.apparmor_restrict_unprivileged_userns=0` or add an AppArmor "
                    "profile for bwrap allowing `userns`)")
        return False, f"{kind} failed: {err}{hint}"
    return True, ""


def privileged() -> bool:
    """labls runs as root: runs are dropped to uids of their own."""
    return os.geteuid() == 0


def _privilege() -> list[str]:
    """bwrap's half of dropping privilege. As root: no user namespace (its uid map would make
    the run host root), every capability dropped but the three `setpriv` needs to drop the
    rest. As a user: a user namespace mapped to that user, with no capabilities."""
    if privileged():
        return ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
                "--cap-add", "CAP_SETPCAP"]
    return ["--unshare-user", "--disable-userns"]


def _system_links() -> list[str]:
    args = []
    for name in SYSTEM_LINKS:
        host = Path("/", name)
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            args += ["--ro-bind", str(host), str(host)]
    return args


def choose(requested: str, network: str) -> str:
    """The backend to use, or `RunRefused` naming what is missing."""
    if requested == "none":
        if network == "none":
            raise RunRefused(
                'run.isolation = "none" cannot enforce run.network = "none": set '
                'run.network = "host" to run without a sandbox, or install bubblewrap '
                "(Debian/Ubuntu: `apt-get install bubblewrap`) and use isolation \"auto\"",
                kind=ErrorKind.NETWORK)
        return "none"
    kind = "bwrap" if requested == "auto" else requested  # never a weaker one silently
    ok, reason = probe(kind)
    if ok:
        return kind
    raise RunRefused(f"the {kind} sandbox cannot start here ({reason}): {INSTALL_HINT}",
                     kind=ErrorKind.NETWORK if network == "none" else ErrorKind.REFUSED)


@dataclass
class SandboxSpec:
    kind: str
    network: str
    python: str
    argv: list[str]  # script and its arguments, relative to the work dir
    work_dir: Path
    run_dir: Path
    probe_dir: Path
    home_dir: Path
    harness_dir: Path
    dataset_root: Path
    readonly: list[Path] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    writable_datasets: bool = False
    run_uid: int | None = None  # the host uid a root engine drops the run to
    etc_files: dict[str, Path] = field(default_factory=dict)  # /etc/<name> → generated file
    seccomp: Path | None = None  # the compiled filter, opened on SECCOMP_FD by the launch
    dataset_source: Path | None = None  # what is bound at dataset_root (the observed view)
    gate: dict[int, tuple[str, Path]] = field(default_factory=dict)  # info/block FIFOs

    @property
    def fds(self) -> dict[int, tuple[str, Path]]:
        """Files the launch opens for bwrap, by descriptor: (shell redirection, path)."""
        if self.kind != "bwrap":
            return {}
        opened = dict(self.gate)
        if self.seccomp:
            opened[SECCOMP_FD] = ("<", self.seccomp)
        return opened


def is_python_installation(python: Path) -> bool:
    """`python` sits in a venv (`pyvenv.cfg`) whose real interpreter's folder holds a Python
    standard library (`lib/python3*/os.py`): the folders `interpreter_roots` would bind."""
    real_root = python.resolve().parent.parent
    return ((python.parent.parent / "pyvenv.cfg").is_file()
            and any(real_root.glob("lib/python3*/os.py")))


def interpreter_roots(python: str) -> list[Path]:
    """Folders an interpreter needs to start: its venv (if any) and its real installation."""
    exe = Path(python)
    roots = []
    if (exe.parent.parent / "pyvenv.cfg").exists():
        roots.append(exe.parent.parent.absolute())
    real = exe.resolve()
    roots.append(real.parent.parent)
    return roots


def identity_files(folder: Path, uid: int, home: Path, network: str,
                   resolver: str) -> dict[str, Path]:
    """The run's own `/etc/passwd`, `group`, `hosts` and `resolv.conf` (written to `folder`):
    tools that look the user up (`getpass`, torch's caches, ssh-less git) find the run's uid,
    and the host's accounts stay out of sight."""
    folder.mkdir(parents=True, exist_ok=True)
    texts = {
        "passwd": f"root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n"
                  f"labls:x:{uid}:{uid}:labls run:{home}:/bin/sh\n"
                  "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        "group": f"root:x:0:\nlabls:x:{uid}:\nnogroup:x:65534:\n",
        "hosts": "127.0.0.1\tlocalhost labls\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        "hostname": "labls\n",
    }
    if network == "none":  # a DNS query becomes a counted attempt (observe.RESOLVER)
        texts["resolv.conf"] = f"nameserver {resolver}\noptions attempts:1 timeout:1\n"
    made = {}
    for name, text in texts.items():
        path = folder / name
        path.write_text(text)
        made[name] = path
    return made


def command(spec: SandboxSpec) -> list[str]:
    payload = [spec.python, *spec.argv]
    if spec.kind == "none":
        return payload
    if spec.kind == "unshare":
        net = ["--net"] if spec.network == "none" else []
        return [shutil.which("unshare") or "unshare", "--user", "--map-root-user", *net,
                "--pid", "--fork", "--kill-child", "--mount-proc", *payload]
    return _bwrap(spec, payload)


class _Tree:
    """bwrap arguments for an allow-listed root: each mount point's parents made first as
    0755 folders (bwrap would make them 0700, which the run's uid could not cross)."""

    def __init__(self) -> None:
        self.args: list[str] = []
        self._made = {Path("/")}

    def parents(self, dest: Path) -> None:
        for parent in reversed(dest.parents):
            if parent not in self._made:
                self._made.add(parent)
                self.args += ["--dir", str(parent)]

    def mount(self, how: str, source: Path | str, dest: Path | str | None = None) -> None:
        target = Path(dest if dest is not None else source)
        self.parents(target)
        self._made.add(target)
        self.args += [how, str(source), str(target)]

    def special(self, how: str, dest: str) -> None:
        self.parents(Path(dest))
        self._made.add(Path(dest))
        self.args += [how, dest]


def _bwrap(spec: SandboxSpec, payload: list[str]) -> list[str]:
    args = [shutil.which("bwrap") or "bwrap", *_privilege(), "--die-with-parent", "--new-session",
            "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--hostname", "labls"]
    if spec.network == "none":
        args.append("--unshare-net")
    tree = _Tree()
    tree.mount("--ro-bind", "/usr")
    tree.args += _system_links()
    tree.special("--dev", "/dev")
    tree.special("--proc", "/proc")
    tree.special("--tmpfs", "/tmp")
    tree.special("--tmpfs", "/dev/shm")
    etc = ETC_ALLOWED + (ETC_NETWORK if spec.network == "host" else ())  # else: RESOLVER
    for name in etc:
        if name not in spec.etc_files and os.path.lexists(f"/etc/{name}"):
            tree.mount("--ro-bind", f"/etc/{name}")
    for name, source in spec.etc_files.items():
        tree.mount("--ro-bind", source, f"/etc/{name}")
    for folder in (*SYS_CPU, *(SYS_GPU if spec.devices else ())):
        if os.path.isdir(folder):
            tree.mount("--ro-bind", folder)
    for path in dict.fromkeys(spec.readonly):
        if path.exists():
            tree.mount("--ro-bind", path)
    tree.mount("--ro-bind", spec.harness_dir)
    if spec.dataset_root.is_dir():
        tree.mount("--bind" if spec.writable_datasets else "--ro-bind",
                   spec.dataset_source or spec.dataset_root, spec.dataset_root)
    for path in (spec.work_dir, spec.probe_dir, spec.home_dir):
        tree.mount("--bind", path)
    for node in spec.devices:
        tree.mount("--dev-bind", node)
    args += tree.args
    if spec.seccomp is not None:
        args += ["--seccomp", str(SECCOMP_FD)]
    for fd, (mode, _path) in spec.gate.items():
        args += ["--info-fd" if mode == "<>" else "--block-fd", str(fd)]
    args += ["--chdir", str(spec.work_dir), "--clearenv"]
    for name, value in spec.env.items():
        args += ["--setenv", name, value]
    if spec.run_uid is not None:  # as root: the last step before the run drops to its own uid
        payload = ["/usr/bin/setpriv", f"--reuid={spec.run_uid}", f"--regid={spec.run_uid}",
                   "--clear-groups", "--inh-caps=-all", "--ambient-caps=-all",
                   "--bounding-set=-all", "--", *payload]
    return [*args, "--", *payload]
