"""Isolation backends: bubblewrap, `unshare`, or none, as an argv wrapped around the interpreter.

bwrap: new network and PID namespaces, `--die-with-parent`, the whole filesystem read-only, the
dataset root bound read-only, `/root`, `/home`, `/tmp`, the workspace and the state dir hidden
behind empty tmpfs, only this run's folders writable, the environment cleared to an allow-list.
unshare (fallback): new user, network and PID namespaces; the filesystem is not hidden.
none: only when chosen explicitly, and never with `network = "none"`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path


class RunRefused(Exception):
    """The run cannot be given the isolation it asks for; the message says what to do.

    `kind` is the record's error kind: `network` when the network could not be closed."""

    def __init__(self, message: str, kind: str = "refused") -> None:
        super().__init__(message)
        self.kind = kind


INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`), or set "
    '`run.isolation = "none"` together with `run.network = "host"` to run without a sandbox'
)


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
    for kind in (["bwrap", "unshare"] if requested == "auto" else [requested]):
        if probe(kind)[0]:
            return


def _probe(kind: str) -> tuple[bool, str]:
    if kind == "none":
        return True, ""
    if kind == "bwrap":
        tool = shutil.which("bwrap")
        if tool is None:
            return False, "bwrap is not installed"
        cmd = [tool, *(_user_ns()), "--unshare-net", "--unshare-pid", "--die-with-parent",
               "--ro-bind", "/", "/", "true"]
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


def _user_ns() -> list[str]:
    return [] if os.geteuid() == 0 else ["--unshare-user"]


def choose(requested: str, network: str) -> str:
    """The backend to use, or `RunRefused` naming what is missing."""
    if requested == "none":
        if network == "none":
            raise RunRefused(
                'run.isolation = "none" cannot enforce run.network = "none": set '
                'run.network = "host" to run without a sandbox, or install bubblewrap '
                "(Debian/Ubuntu: `apt-get install bubblewrap`) and use isolation \"auto\"",
                kind="network")
        return "none"
    candidates = ["bwrap", "unshare"] if requested == "auto" else [requested]
    reasons = []
    for kind in candidates:
        ok, reason = probe(kind)
        if ok:
            return kind
        reasons.append(reason)
    raise RunRefused(f"no sandbox available ({'; '.join(reasons)}): {INSTALL_HINT}",
                     kind="network" if network == "none" else "refused")


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
    hidden: list[Path] = field(default_factory=list)
    readonly: list[Path] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    writable_datasets: bool = False


def interpreter_roots(python: str) -> list[Path]:
    """Folders an interpreter needs to start: its venv (if any) and its real installation."""
    exe = Path(python)
    roots = []
    if (exe.parent.parent / "pyvenv.cfg").exists():
        roots.append(exe.parent.parent.absolute())
    real = exe.resolve()
    roots.append(real.parent.parent)
    return roots


def command(spec: SandboxSpec) -> list[str]:
    payload = [spec.python, *spec.argv]
    if spec.kind == "none":
        return payload
    if spec.kind == "unshare":
        net = ["--net"] if spec.network == "none" else []
        return [shutil.which("unshare") or "unshare", "--user", "--map-root-user", *net,
                "--pid", "--fork", "--kill-child", "--mount-proc", *payload]
    return _bwrap(spec, payload)


def _bwrap(spec: SandboxSpec, payload: list[str]) -> list[str]:
    args = [shutil.which("bwrap") or "bwrap", *_user_ns(), "--die-with-parent", "--unshare-pid",
            "--unshare-ipc", "--unshare-uts", "--hostname", "labls"]
    if spec.network == "none":
        args.append("--unshare-net")
    args += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
             "--tmpfs", "/dev/shm", "--tmpfs", "/tmp"]
    for hidden in dict.fromkeys(spec.hidden):  # in order, once each
        if hidden.exists():
            args += ["--tmpfs", str(hidden)]
    for path in spec.readonly:
        if path.exists():
            args += ["--ro-bind", str(path), str(path)]
    for path in (spec.work_dir, spec.probe_dir, spec.home_dir):
        args += ["--bind", str(path), str(path)]
    args += ["--ro-bind", str(spec.harness_dir), str(spec.harness_dir)]
    if spec.dataset_root.is_dir():
        bind = "--bind" if spec.writable_datasets else "--ro-bind"
        args += [bind, str(spec.dataset_root), str(spec.dataset_root)]
    for node in spec.devices:
        args += ["--dev-bind", node, node]
    args += ["--chdir", str(spec.work_dir), "--clearenv"]
    for name, value in spec.env.items():
        args += ["--setenv", name, value]
    return [*args, "--", *payload]
