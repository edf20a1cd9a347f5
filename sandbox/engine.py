"""The run engine: queue → prepare → launch in the sandbox → stream → stop → judge → record.

Each run has its own thread, which owns the run from the slot it waits for to its final record;
callers (the CLI, the language server) get records and events through `RunListener`. Nothing
here imports LSP.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import datasets, gc, isolation, judge, lifeline, limits, proctree, records, syscall_filter
from .capture import OutputPump
from .config import Config
from .gpus import GpuSampler, GpuSlots, Slot, detect_gpus, gpu_device_nodes
from .harness import HARNESS_DIR
from .metrics import MetricSet
from .observe import (
    RESOLVER,
    DatasetReads,
    DatasetView,
    NetworkCounter,
    ObserverUnavailable,
    SandboxGate,
    sweep_stale_views,
)
from .provenance import Frame
from .records import ErrorKind, RunRecord, RunState, make_error
from .registry import Registry
from .wire import to_wire
from .workdir import hand_over, populate
from .workview import WorkView

MAX_TIMEOUT_SEC = 7 * 24 * 3600
FILE_SIZE_LIMIT_MB = 64 * 1024
RESERVED_ENV = ("LABLS_", "PYTHONPATH")
STATE_DIR_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES)
NAMESPACED = ("bwrap", "unshare")  # isolations whose PID namespace dies with its init


def target_argv(script: str) -> list[str]:
    """What the interpreter is given for a run's `script`: a module run (`-m pytest`) as two
    arguments, a path (spaces and all) as one."""
    if script.startswith("-m "):
        return ["-m", script[3:].strip()]
    return [script]


class RunInputError(ValueError):
    """A run request that cannot be started as asked (bad script, timeout, GPUs, env)."""


@dataclass
class RunRequest:
    script: str
    args: list[str] = field(default_factory=list)
    timeout_sec: float | None = None
    gpus: int | list[int] | None = None
    env: dict[str, str] = field(default_factory=dict)
    label: str = ""
    writable_datasets: bool = False  # only a loop's prepare step: it may fill the cache
    # the script's text as the editor holds it (`run.unsaved = "buffer"`): the run sees it in
    # place of the file on disk, which stays as it is
    script_text: str | None = None
    warnings: list[dict[str, Any]] = field(default_factory=list)  # for the record, from the caller


class RunListener:
    """Override what you need; called from run threads."""

    def on_start(self, record: RunRecord) -> None: ...
    def on_progress(self, record: RunRecord, elapsed: float) -> None: ...
    def on_finish(self, record: RunRecord) -> None: ...


class Engine:
    def __init__(self, workspace: Path, config: Config, listener: RunListener | None = None,
                 launcher: lifeline.Launcher | None = None) -> None:
        self.workspace = workspace.resolve()
        self.config = config
        self.listener = listener or RunListener()
        self.state_dir = config.state_path(self.workspace)
        self._registry: Registry | None = None
        self._registry_lock = threading.Lock()
        _keep_out_of_git(self.state_dir)
        if isolation.privileged():  # views of runs whose engine was killed
            sweep_stale_views(self.state_dir)
        gpus = config.run.gpus if isinstance(config.run.gpus, list) else detect_gpus()
        self.slots = GpuSlots(gpus, config.run.max_concurrent)
        threading.Thread(target=isolation.warm, args=(config.run.isolation,), daemon=True,
                         name="labls-probe").start()
        self.launcher = launcher or lifeline.Launcher()
        self._active: dict[str, _Run] = {}
        self._unsaved: dict[str, RunRecord] = {}  # finished runs the registry refused
        self._lock = threading.Lock()
        self._pruning = self._prune_again = False
        self._pruner: threading.Thread | None = None
        self._cancel_watch: threading.Thread | None = None

    # --- public API ---------------------------------------------------------------------------
    def start(self, request: RunRequest) -> RunRecord:
        script = self._check(request)
        budget = request.timeout_sec if request.timeout_sec is not None else (
            self.config.run.timeout_sec)
        ceiling = min(self.config.run.max_timeout_sec, MAX_TIMEOUT_SEC)
        if not 0 < budget <= ceiling:
            raise RunInputError(f"field 'timeoutSec' must be in (0, {ceiling:g}] (the trusted "
                                f"ceiling run.max_timeout_sec), got {budget:g}")
        run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(3).hex()}"
        record = RunRecord(run_id=run_id, state="queued", script=script, args=request.args,
                           label=request.label, timeout_sec=budget,
                           network=self.config.run.network)
        record.warnings += request.warnings
        run_dir = self.state_dir / "runs" / run_id
        record.log_path = str(run_dir / "log.txt")
        record.results_path = str(run_dir / "results.json")
        run = _Run(self, record, request, run_dir)  # it saves the record: queued or running
        run.ticket = self.slots.enqueue()  # its place in the queue: the order of submission
        with self._lock:
            self._active[run_id] = run
            if self._cancel_watch is None or not self._cancel_watch.is_alive():
                self._cancel_watch = threading.Thread(
                    target=self._watch_cancels, name="labls-cancels", daemon=True)
                self._cancel_watch.start()
        run.thread.start()
        return record

    def get(self, run_id: str, page: tuple[int, int] | None = None) -> RunRecord | None:
        """The run's record; with `page` (`(offset, limit)`), only that page of its metrics."""
        with self._lock:
            run = self._active.get(run_id)
            live = run.record if run is not None else self._unsaved.get(run_id)
        if live is not None:
            return live.page(*page) if page else live
        return self.registry.get(run_id, page)

    def active_ids(self) -> list[str]:
        with self._lock:
            return list(self._active)

    def is_active(self, run_id: str) -> bool:
        with self._lock:
            return run_id in self._active

    def recent(self, limit: int = 50, state: str | None = None) -> list[RunRecord]:
        """Most recent first, as summaries (metrics bounded): the registry's, and the live ones
        of this engine's runs (a run is first saved when it has to queue or once its process
        has started)."""
        with self._lock:
            live = [run.record.summary(self.config.metric.name) for run in self._active.values()]
        chosen = {r.run_id: r for r in self.registry.recent(limit + len(live), state)}
        for record in live:
            chosen.pop(record.run_id, None)
            if state is None or record.state == state:
                chosen[record.run_id] = record
        return sorted(chosen.values(), key=lambda r: r.created_at, reverse=True)[:limit]

    def wait(self, run_id: str, timeout: float | None = None) -> RunRecord | None:
        with self._lock:
            run = self._active.get(run_id)
        if run is not None:
            run.done.wait(timeout)
            return run.record  # the live record: it answers even when it could not be saved
        return self.get(run_id)

    def cancel(self, run_id: str, timeout: float | None = None) -> RunRecord | None:
        """Cancel a run and wait up to `timeout` for its final record. A run of another process
        (a `labls run`, another server) is asked through the registry; its owner takes the
        request within half a second."""
        with self._lock:
            run = self._active.get(run_id)
        if run is not None:
            run.request_cancel()
            run.done.wait(timeout)
            return run.record
        return self.registry.ask_cancel(run_id, timeout)

    def _watch_cancels(self) -> None:
        """While this engine has runs: take the cancels other processes asked for them."""
        while True:
            time.sleep(0.5)
            with self._lock:
                ids = list(self._active)
                if not ids:
                    self._cancel_watch = None
                    return
            with contextlib.suppress(OSError, sqlite3.Error):  # a registry that failed
                for run_id in self.registry.take_cancels(ids):
                    with self._lock:
                        run = self._active.get(run_id)
                    if run is not None:
                        run.request_cancel()

    def stop_all(self, timeout: float = 5.0) -> None:
        """Cancel every run of this engine; the grace period is capped so all go in `timeout`."""
        with self._lock:
            runs = list(self._active.values())
        for run in runs:
            run.grace_cap = max(0.0, timeout - 1.0)
            run.request_cancel()
        deadline = time.monotonic() + timeout
        for run in runs:
            run.done.wait(max(0.0, deadline - time.monotonic()))

    def prune_soon(self) -> None:
        """Prune in a thread of its own, off every run's way to its result; one at a time,
        and once more if asked meanwhile."""
        if self.config.run.keep <= 0:
            return
        with self._lock:
            if self._pruning:
                self._prune_again = True
                return
            self._pruning = True
        pruner = threading.Thread(target=self._prune_loop, name="labls-prune", daemon=True)
        pruner.start()
        self._pruner = pruner

    def _prune_loop(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # a full disk, a registry gone: next time
                self.prune()
            with self._lock:
                if not self._prune_again:
                    self._pruning = False
                    return
                self._prune_again = False

    def prune(self) -> None:
        """Free the folders of runs beyond `run.keep` (`gc.py`); records and logs stay."""
        keep = self.config.run.keep
        if keep <= 0:
            return
        protected = self.registry.unfinished_or_pinned() | set(self.active_ids())
        gc.collect(gc.plan(self.state_dir, keep, protected, self.registry.run_ids(),
                           measure=False))

    def close(self) -> None:
        self.stop_all()
        if self._pruner is not None:
            self._pruner.join(timeout=60)
        self.launcher.close()
        with self._registry_lock:
            if self._registry is not None:
                self._registry.close()

    @property
    def registry(self) -> Registry:
        """Opened on first use (opening marks the runs of a dead engine `interrupted`): for
        `labls run`, once the run's process has been handed its script."""
        with self._registry_lock:
            if self._registry is None:
                self._registry = Registry(self.state_dir / "labls.db")
            return self._registry

    # --- helpers ------------------------------------------------------------------------------
    def _check(self, request: RunRequest) -> str:
        if request.script.startswith("-m "):  # a module, e.g. "-m pytest": code experiments
            module = request.script[3:].strip()
            if not re.fullmatch(r"[A-Za-z_][\w.]*", module):
                raise RunInputError(f"script {request.script!r}: not a module name")
            return f"-m {module}"
        raw = Path(request.script)
        if raw.is_absolute() or ".." in raw.parts:
            raise RunInputError(f"script {request.script!r} must be a path inside the workspace")
        path = (self.workspace / raw).resolve()
        if not path.is_relative_to(self.workspace):
            raise RunInputError(f"script {request.script!r} leads outside the workspace")
        if not path.is_file():
            raise RunInputError(f"script {request.script!r} does not exist in {self.workspace}")
        for name in request.env:
            if name.startswith(RESERVED_ENV):
                raise RunInputError(f"field 'env': {name} is set by labls and cannot be "
                                    "overridden")
            if name not in self.config.run.env:
                raise RunInputError(f"field 'env': {name} is not in the trusted allow-list "
                                    f"run.env ({', '.join(self.config.run.env) or 'empty'})")
        wanted = request.gpus
        if isinstance(wanted, list) and not set(wanted) <= set(self.slots.gpus):
            raise RunInputError(f"field 'gpus': {wanted} are not all among the configured GPUs "
                                f"{self.slots.gpus}")
        if isinstance(wanted, int) and wanted > len(self.slots.gpus):
            raise RunInputError(f"field 'gpus': asked for {wanted}, the configured GPUs are "
                                f"{self.slots.gpus}")
        return str(path.relative_to(self.workspace))

    def python(self) -> str:
        """The run's interpreter: `run.python`, else the workspace's `.venv` when it is a real
        Python installation, else labls's own. The repository ships `.venv/bin/python` as it
        likes (a symlink anywhere), and the interpreter's installation is bound into the
        sandbox, so a link to a folder that is no Python installation is not followed."""
        chosen = self.config.run.python
        if chosen != "auto":
            return chosen
        venv = self.workspace / ".venv" / "bin" / "python"
        return str(venv) if venv.exists() and isolation.is_python_installation(venv) else (
            sys.executable)

    def _finished(self, run: _Run) -> None:
        with self._lock:
            self._active.pop(run.record.run_id, None)


class _Run:
    """One run's thread and everything it owns."""

    def __init__(self, engine: Engine, record: RunRecord, request: RunRequest,
                 run_dir: Path) -> None:
        self.engine = engine
        self.cfg = engine.config
        self.record = record
        self.request = request
        self.run_dir = run_dir
        self.work_dir = run_dir / "work"
        self.probe_dir = run_dir / "probe"
        self.home_dir = run_dir / "home"
        self.cancel_requested = threading.Event()
        self._wake_r, self._wake_w = os.pipe()  # wakes the supervisor on cancel
        self.done = threading.Event()
        self.grace_cap: float | None = None
        self.stop_reason: str | None = None
        self.diverged: tuple[str, str] | None = None  # (name, value) that stopped the run
        self.stack_frames: list[Frame] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.cgroup: limits.RunCgroup | None = None
        self.memory_mb = 0  # the run's memory limit (its cgroup's, or RLIMIT_AS's)
        self.disk_base = 0  # bytes in the run's folders at launch
        self.watchdog: lifeline.Watchdog | None = None
        self.sampler = GpuSampler([])
        self.view: DatasetView | None = None  # observers outside the run (root engines only)
        self.gate: SandboxGate | None = None
        self.net_counter: NetworkCounter | None = None
        self.work_view: WorkView | None = None
        self.ticket = 0  # set by the engine before the thread starts
        self.copied: dict[str, tuple[int, int]] = {}  # the copy fallback's files, as copied
        self.observer_note = ""
        self.reads: DatasetReads | None = None
        self.net_attempts: int | None = None
        self.series: dict[str, list[tuple[int | None, float]]] = {}
        self.thread = threading.Thread(target=self._main, name=f"labls-run-{record.run_id}",
                                       daemon=True)

    def request_cancel(self) -> None:
        self.cancel_requested.set()
        self.engine.slots.wake()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    # --- the run's life -----------------------------------------------------------------------
    def _main(self) -> None:
        slot: Slot | None = None
        pump: OutputPump | None = None
        try:
            slot = self.engine.slots.acquire(  # in submission order; saved `queued` if it waits
                self.request.gpus, self.cancel_requested, self.ticket,
                lambda: self.engine.registry.save(self.record))
            self.record.gpus = slot.gpus
            self.record.device = "cuda" if slot.gpus else "cpu"
            pump = self._launch(slot)
            self._supervise(pump)
            self._judged(pump)
        except InterruptedError:
            self._end(RunState.CANCELLED, make_error(ErrorKind.CANCELLED, "cancelled while queued"))
        except isolation.RunRefused as exc:
            self._end(RunState.FAILED, make_error(exc.kind, str(exc)))
        except ValueError as exc:  # e.g. GPUs asked for that this machine does not have
            self._end(RunState.FAILED, make_error(ErrorKind.REFUSED, str(exc)))
        except OSError as exc:
            if exc.errno in STATE_DIR_ERRNOS:  # the state dir is full or read-only: say which
                self._end(RunState.FAILED, make_error(
                    ErrorKind.STATE_DIR, f"labls could not prepare the run under "
                    f"{self.engine.state_dir}: {exc}"))
            else:
                self._end(RunState.FAILED, make_error(ErrorKind.INTERNAL, f"labls error: {exc!r}"))
        except Exception as exc:  # a bug of ours: the run still gets a final record
            self._end(RunState.FAILED, make_error(ErrorKind.INTERNAL, f"labls error: {exc!r}"))
        finally:
            if self.proc is not None and self.proc.poll() is None:
                self._kill_everything()
            if self.watchdog:
                self.watchdog.stand_down()
            if self.cgroup:
                self.cgroup.remove()
            for observer in (self.view, self.gate, self.net_counter, self.work_view):
                if observer is not None:
                    observer.close()
            if slot is not None:
                self.engine.slots.release(slot)
            self._finish()
            for fd in (self._wake_r, self._wake_w):
                os.close(fd)

    def _launch(self, slot: Slot) -> OutputPump:
        for folder in (self.probe_dir, self.home_dir):
            folder.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "owner").write_text(proctree.owner_mark())  # its views are ours
        asked = self.cfg.run.isolation
        self.record.isolation = "bwrap" if asked == "auto" else asked  # kept if refused
        kind = isolation.choose(asked, self.cfg.run.network)
        spec = self._sandbox_spec(kind, slot)
        work_folder = self._work_folder(spec)
        if self.request.script_text is not None:
            self._put_script_text(self.request.script_text)
        self._observe(spec)
        self.record.sandbox = _describe(spec)
        self.record.sandbox["workFolder"] = work_folder
        if spec.run_uid is not None:  # the run's own folders belong to the run's own uid
            for folder in (self.probe_dir, self.home_dir, *(
                    () if self.work_view else (self.work_dir,))):
                hand_over(folder, spec.run_uid)
        argv = isolation.command(spec)
        open(self.record.log_path, "ab").close()  # the follower opens it from the start
        standby = self.engine.launcher.take()
        try:
            self.cgroup = standby.cgroup
            asked_mb = self.cfg.run.memory_mb
            self.memory_mb = asked_mb or limits.default_memory_mb()
            caged = False
            if self.cgroup:
                self.cgroup.set_max(self.cfg.run.max_processes)
                caged = self.cgroup.set_memory(self.memory_mb)
            if not caged and not asked_mb:
                self.memory_mb = 0  # no cgroup, and RLIMIT_AS only when the user asks
            disk = self.cfg.run.disk_mb
            limits.apply_rlimits(
                standby.proc.pid, limits.address_space_mb(bool(slot.gpus), asked_mb),
                self.cfg.run.max_processes, min(FILE_SIZE_LIMIT_MB, disk or FILE_SIZE_LIMIT_MB),
                nproc=self.cgroup is None)
            self.disk_base = _disk_use(self._written_dirs())
            self.record.sandbox.update(memoryMb=self.memory_mb, memoryCgroup=caged,
                                       diskMb=disk, maxProcesses=self.cfg.run.max_processes)
            script = self.run_dir / "launch.sh"
            script.write_text(lifeline.launch_script(  # bwrap sets the run's env itself
                argv, spec.env if kind != "bwrap" else None, self.work_dir,
                Path(self.record.log_path), spec.fds))
            self.watchdog = standby.watchdog
        except BaseException:
            self.cgroup = None
            standby.discard()
            raise
        self.launched_at = time.time()
        self.proc = standby.proc
        if not standby.launch(script):
            raise RuntimeError("the run's standby process died before the launch")
        self.watchdog.watch(  # its own session: the process group is its pid
            self.proc.pid, self.run_dir if self.view or self.work_view else None)
        if self.gate is not None:  # the sandbox waits until its namespace is pinned
            pidfd = os.pidfd_open(self.proc.pid)
            try:
                self.net_counter = self.gate.open(pidfd)
            finally:
                os.close(pidfd)
        self.record.state = "running"
        self.record.started_at = self.launched_at
        self.engine.registry.save(self.record)
        self.engine.listener.on_start(self.record)
        watched = MetricSet(watched=self.cfg.watched_metrics(), grace=self.cfg.run.nan_grace_steps)
        pump = OutputPump(Path(self.record.log_path), self._on_metrics, watched,
                          self._on_diverged)
        pump.start()
        self.sampler = GpuSampler(slot.gpus)
        self.sampler.start()
        judge.prepare(self.cfg)
        return pump

    def _observe(self, spec: isolation.SandboxSpec) -> None:
        """As root, watch the run from outside: its dataset view and its network namespace."""
        if spec.run_uid is None:
            why = ("labls is not root here" if spec.kind == "bwrap"
                   else f"the run had the {spec.kind} isolation, not the hardened sandbox")
            self.observer_note = (f"{why}: nothing outside the run watched its reads or its "
                                  "network attempts")
            return
        if spec.dataset_root.is_dir():
            try:
                index = datasets.DatasetIndex(spec.dataset_root,
                                              datasets.all_specs(self.cfg.datasets))
                self.view = DatasetView(spec.dataset_root, self.run_dir, spec.run_uid,
                                        spec.writable_datasets, owner=index.owner)
                spec.dataset_source = self.view.mountpoint
            except ObserverUnavailable as exc:
                self.observer_note = f"the dataset reads could not be watched: {exc}"
        self.gate = SandboxGate(self.run_dir)
        spec.gate = self.gate.fds

    def _work_folder(self, spec: isolation.SandboxSpec) -> str:
        """The run's work folder: a copy-on-write view of the workspace where a root engine
        can mount one (`workview.py`), else a copy of the workspace's files. Says which."""
        hide = self.cfg.run.hide
        if spec.kind == "bwrap" and spec.run_uid is not None:
            try:
                self.work_view = WorkView(self.engine.workspace, self.engine.state_dir,
                                          self.run_dir, spec.run_uid, hide)
                return "overlay"
            except OSError as exc:  # (ObserverUnavailable among them) the copy still works
                note = f"copy (no copy-on-write view: {exc})"
        else:
            note = (f"copy (the {spec.kind} isolation)" if spec.kind != "bwrap" else
                    "copy (a copy-on-write view needs a root engine)")
        self.copied = populate(self.engine.workspace, self.engine.state_dir, self.work_dir, hide)
        return note

    def _written_dirs(self) -> list[Path]:
        """Where the run's writes land (what its disk cap counts)."""
        work = self.work_view.upper if self.work_view else self.work_dir
        return [work, self.probe_dir, self.home_dir]

    def _put_script_text(self, text: str) -> None:
        """The editor's unsaved text of the script, in the run's work folder only (its own
        layer of the view, or its copy): the workspace's file is not touched."""
        path = self.work_dir / self.record.script  # (checked: a plain path in the workspace)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)

    def wrote(self, rel: str) -> bool:
        """The run itself wrote `rel` in its work folder: in its own layer of the view, or in
        a copy, new or changed since it was copied in."""
        if self.work_view is not None:
            return self.work_view.wrote(rel)
        try:
            st = os.lstat(self.work_dir / rel)
        except OSError:
            return False
        return self.copied.get(rel) != (st.st_mtime_ns, st.st_size)

    def _sandbox_spec(self, kind: str, slot: Slot) -> isolation.SandboxSpec:
        python = self.engine.python()
        env = {
            "PATH": f"{Path(python).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home_dir),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "PYTHONPATH": str(HARNESS_DIR),
            "MPLBACKEND": "Agg",
            "CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in slot.gpus),
            "CUDA_CACHE_PATH": str(self.home_dir / ".nv"),
            "TRITON_CACHE_DIR": str(self.home_dir / ".triton"),
            "LABLS_RUN_ID": self.record.run_id,
            "LABLS_METRICS": str(self.probe_dir / "metrics.jsonl"),
            "LABLS_PROBE_DIR": str(self.probe_dir),
            "LABLS_WORK_DIR": str(self.work_dir),
            "LABLS_DATASET_ROOT": self.cfg.dataset_cache_root,
        }
        if kind != "bwrap":
            env["TMPDIR"] = str(self.home_dir)
        for name in self.cfg.run.env:
            if name in os.environ:
                env[name] = os.environ[name]
        env.update(self.request.env)
        hardened = kind == "bwrap"
        run_uid = None
        if hardened and isolation.privileged():
            run_uid = isolation.RUN_UID_BASE + int(self.record.run_id[-6:], 16) % (
                isolation.RUN_UID_COUNT)
        return isolation.SandboxSpec(
            kind=kind, network=self.cfg.run.network, python=python,
            argv=[*target_argv(self.record.script), *self.record.args], work_dir=self.work_dir,
            run_dir=self.run_dir, probe_dir=self.probe_dir, home_dir=self.home_dir,
            harness_dir=HARNESS_DIR, dataset_root=Path(self.cfg.dataset_cache_root),
            readonly=isolation.interpreter_roots(python),
            devices=gpu_device_nodes(slot.gpus) if slot.gpus else [], env=env,
            writable_datasets=self.request.writable_datasets, run_uid=run_uid,
            etc_files=isolation.identity_files(
                self.run_dir / "etc", run_uid if run_uid is not None else os.getuid(),
                self.home_dir, self.cfg.run.network, RESOLVER) if hardened else {},
            seccomp=syscall_filter.write(self.run_dir / "seccomp.bpf") if hardened else None)

    def _supervise(self, pump: OutputPump) -> None:
        """Sleep until the process exits, the budget ends or a cancel comes (no polling)."""
        assert self.proc is not None
        pidfd = os.pidfd_open(self.proc.pid)
        try:
            deadline = time.monotonic() + self.record.timeout_sec
            next_progress = time.monotonic() + 1.0
            while True:
                now = time.monotonic()
                wait = max(0.0, min(deadline, next_progress) - now)
                ready, _, _ = select.select([pidfd, self._wake_r], [], [], wait)
                if pidfd in ready:
                    self.proc.wait()
                    break
                if self.cancel_requested.is_set():
                    self._terminate("nan" if self.diverged else "cancelled")
                    break
                if time.monotonic() >= deadline:
                    self._terminate("timeout")
                    break
                if time.monotonic() >= next_progress:
                    next_progress += 1.0
                    if self.view is not None and self.cgroup is not None:
                        self.view.sample_maps(self.cgroup.members())
                    if self._over_disk_quota():
                        self._terminate("diskQuota")
                        break
                    self.engine.listener.on_progress(self.record, time.time() - self.launched_at)
        finally:
            os.close(pidfd)
        # Leftovers: daemons that outlived the main process. In a PID namespace the kernel
        # killed them with its init, so only the cgroup's list is checked, not all of /proc.
        self._kill_everything(sweep=self.record.isolation not in NAMESPACED)
        if self.view is not None:
            self.reads = self.view.finish()
        if self.net_counter is not None:
            self.net_attempts = self.net_counter.attempts()
        pump.finish(timeout=300)

    def _over_disk_quota(self) -> bool:
        """The run's folders grew past `run.disk_mb` (checked once a second; a single file
        is also held to it by `RLIMIT_FSIZE`)."""
        quota = self.cfg.run.disk_mb
        if not quota:
            return False
        grown = _disk_use(self._written_dirs()) - self.disk_base
        return grown > quota * 1024 * 1024

    def _terminate(self, reason: str) -> None:
        """Stack dump → SIGTERM to the run's processes → grace → SIGKILL to everything."""
        assert self.proc is not None
        self.stop_reason = reason
        stack_file = self.probe_dir / "stack.txt"
        processes = proctree.payload(self.proc.pid)
        if processes:  # the run's main interpreter dumps its stack
            proctree.signal_pids(processes[:1], signal.SIGUSR1)
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline and not _nonempty(stack_file):
                time.sleep(0.01)
        proctree.signal_pids(proctree.payload(self.proc.pid), signal.SIGTERM)
        grace = self.cfg.run.kill_grace_sec
        if self.grace_cap is not None:
            grace = min(grace, self.grace_cap)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=grace)
        self._kill_everything()
        self.stack_frames = judge.stack_frames(self, self.record.warnings)

    def _kill_everything(self, sweep: bool = True) -> None:
        assert self.proc is not None
        members = self.cgroup.members() if self.cgroup else []
        if sweep:
            proctree.kill_tree(self.proc.pid, members)
        else:
            proctree.signal_pids(members, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)

    def _on_diverged(self, name: str, value: str) -> None:
        """A watched metric went NaN / inf (`run.stop_on_nan`): the run is stopped as a cancel
        is, its reason `nan`."""
        self.diverged = (name, value)
        self.request_cancel()

    def _on_metrics(self, parsed: MetricSet) -> None:
        self.record.metrics = parsed.finite_values()
        self.record.dataset_used = list(parsed.stamps)

    def _judged(self, pump: OutputPump) -> None:
        """The run's processes are gone: what it left behind, judged, into its record."""
        assert self.proc is not None
        record = self.record
        record.log_tail = pump.tail()
        self.sampler.stop()
        record.peak_gpu_mem_mb, record.mean_gpu_util = self.sampler.peak_mb, self.sampler.mean_util
        code = self.proc.returncode
        record.exit_code = code if code is not None and code >= 0 else None
        record.signal = -code if code is not None and code < 0 else None
        verdict = judge.judge(self, pump)
        merged = verdict.metrics
        record.metrics, record.metric_sources = merged.metrics, merged.sources
        record.metrics_source = merged.source
        record.structured = {"conditions": merged.conditions, "nonFinite": merged.non_finite,
                             "seriesLengths": merged.series_seen,
                             "resultFiles": verdict.result_files}
        self.series = merged.series
        record.dataset_used = verdict.dataset_used
        record.provenance = verdict.provenance
        record.network_attempts = verdict.network_attempts
        record.traceback = verdict.traceback
        record.warnings += verdict.warnings
        if self.view is not None and self.request.writable_datasets and code == 0:
            self.view.merge_writes()
        self._end(verdict.state, verdict.error)

    def _end(self, state: RunState, error: dict[str, Any] | None) -> None:
        self.record.state = state
        self.record.error = error
        self.record.finished_at = time.time()
        if self.record.started_at:
            self.record.duration_sec = round(self.record.finished_at - self.record.started_at, 3)

    def _finish(self) -> None:
        """Save the final record and tell the listener. Whatever fails here (a full or
        read-only state dir, a broken registry), the record reaches the listener and every
        `wait` returns: what could not be saved is a warning on the record."""
        if not self.record.final:
            self._end(RunState.FAILED,
                      make_error(ErrorKind.INTERNAL, "the run ended without a verdict"))
        try:
            self._save()
        except Exception as exc:  # the disk, SQLite: reported, never hangs
            self.record.warnings.append({
                "code": "state-dir", "file": str(self.engine.state_dir),
                "message": f"the run's record could not be saved under "
                           f"{self.engine.state_dir}: {exc}"})
            with self.engine._lock:  # kept in memory, so `get` still finds it
                self.engine._unsaved[self.record.run_id] = self.record
        try:
            self.engine.listener.on_finish(self.record)
        finally:
            self.engine._finished(self)
            try:
                self.engine.prune_soon()  # (its thread starts before a waiter can close us)
            finally:
                self.done.set()

    def _save(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        results = {**self.record.to_wire(), "series": to_wire(self.series)}
        tmp = Path(self.record.results_path).with_suffix(".tmp")
        records.write_json(tmp, results)
        os.replace(tmp, self.record.results_path)
        self.engine.registry.save(self.record, self.series, self.cfg.metric.name)


def _keep_out_of_git(state_dir: Path) -> None:
    """A `.gitignore` of `*` in the state dir (as pytest and mypy do for their caches): run
    folders never show in `git status`, and git need not walk them when a run copies the
    workspace."""
    ignore = state_dir / ".gitignore"
    if not ignore.exists():
        with contextlib.suppress(OSError):
            ignore.write_text("# written by labls: its runs, registry and ledger stay local\n*\n")


def _describe(spec: isolation.SandboxSpec) -> dict[str, object]:
    """What the run got, for its record: a weaker sandbox than the hardened one says so."""
    hardened = spec.kind == "bwrap"
    return {"kind": spec.kind, "hardened": hardened,
            "uid": spec.run_uid if spec.run_uid is not None else os.getuid(),
            "userNamespace": hardened and spec.run_uid is None, "seccomp": spec.seccomp is not None,
            "filesystem": "allowList" if hardened else "host",
            "network": spec.network, "warning": isolation.WEAKER.get(spec.kind)}


def _disk_use(folders: list[Path]) -> int:
    """Bytes of disk the files under `folders` take (no symlink followed)."""
    total = 0
    stack = [str(f) for f in folders]
    while stack:
        with contextlib.suppress(OSError), os.scandir(stack.pop()) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    else:
                        total += entry.stat(follow_symlinks=False).st_blocks * 512
    return total


def _nonempty(path: Path) -> bool:
    try:
        return os.lstat(path).st_size > 0
    except OSError:
        return False

