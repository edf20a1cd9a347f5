"""The verdict on a run whose processes are gone: its metrics merged from every source, its
dataset provenance, and, when it failed, why and on which workspace line.

A run's thread imports this module (and the parsing modules it needs) once the run's process has
been handed its script: they load while the run's interpreter starts, not before it.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import datasets, metrics, provenance, result_files, untrusted
from .records import ErrorKind, RunState, make_error
from .wire import to_wire

if TYPE_CHECKING:
    from .capture import OutputPump
    from .config import Config
    from .engine import _Run

NETWORK_ERRORS = ("ConnectionRefusedError", "ConnectionError", "gaierror", "URLError",
                  "ConnectTimeout", "ConnectionResetError", "NewConnectionError", "timeout")
NETWORK_MESSAGES = ("Network is unreachable", "Connection refused", "name resolution",
                    "Name or service not known", "No route to host", "getaddrinfo")


# Out of memory, however it is said: Python's, numpy's (`_ArrayMemoryError`), torch's CPU
# allocator (a RuntimeError), CUDA's (`torch.OutOfMemoryError`, `torch.cuda.OutOfMemoryError`).
OOM_ERRORS = ("MemoryError", "_ArrayMemoryError", "OutOfMemoryError")
OOM_MESSAGES = ("DefaultCPUAllocator: can't allocate memory", "CUDA out of memory",
                "Unable to allocate", "CUBLAS_STATUS_ALLOC_FAILED", "out of memory")
# Data that is not there: torchvision's, HF datasets' (no hub to fetch it from).
DATASET_ERRORS = ("DatasetNotFoundError", "DataFilesNotFoundError", "EmptyDatasetError")
DATASET_MESSAGES = ("Dataset not found", "Couldn't find a dataset script",
                    "Couldn't find any data file", "doesn't exist on the Hub")


def prepare(config: Config) -> None:
    """What judging reads that can be read before the run ends: the dataset specs (cached)."""
    datasets.all_specs(config.datasets)


@dataclass
class Verdict:
    """What judging found; the engine writes it into the record (the judge writes nothing)."""

    state: RunState
    error: dict[str, Any] | None
    metrics: metrics.Merged
    provenance: dict[str, Any]
    dataset_used: list[str]
    network_attempts: list[dict[str, Any]]
    traceback: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)  # the run's inputs refused
    result_files: list[dict[str, Any]] = field(default_factory=list)  # read, with their counts


def judge(run: _Run, pump: OutputPump) -> Verdict:
    """The verdict on what the run left behind: metrics from every source, provenance, and
    the final state with its error."""
    assert run.proc is not None
    warnings: list[dict[str, Any]] = []
    files: list[dict[str, Any]] = []
    merged = metrics.merge(_metric_sources(run, pump, warnings, files))
    probe = provenance.read_probe(run.probe_dir)
    warnings += [to_wire(p) for p in probe.problems]
    warnings += non_finite_warnings(pump.parsed)
    scan = datasets.scan(run.cfg.dataset_cache_root, run.cfg.datasets)
    note = run.observer_note or (run.reads.note if run.reads else "")
    verified = provenance.verdict(pump.parsed.stamps, run.reads, scan, probe.opened, note)
    verdict = Verdict(RunState.FAILED, None, merged, verified,  # (state and error: below)
                      list(pump.parsed.stamps), [_relative(run, e) for e in probe.network],
                      warnings=warnings, result_files=files)
    if run.net_attempts:  # counted by the kernel outside the run: the hook's lines may be gone
        verdict.network_attempts.append({"event": "blocked", "count": run.net_attempts,
                                         "observer": "kernel", "local": False})
    verdict.state, verdict.error = _outcome(run, merged, probe, verdict)
    return verdict


def stack_frames(run: _Run, warnings: list[dict[str, Any]]) -> list[provenance.Frame]:
    """Where the run's code was when it was stopped (the faulthandler dump), or nothing."""
    data = _untrusted(warnings, run.probe_dir, "stack.txt", 4 << 20)
    return provenance.parse_stack_dump(data.decode("utf-8", "replace"), run.work_dir)


def _untrusted(warnings: list[dict[str, Any]], base: Path, rel: str,
               limit: int = untrusted.MAX_FILE) -> bytes:
    """A file of the run's, read as hostile input; a refusal becomes a warning."""
    try:
        return untrusted.read_bytes(base, rel, limit) or b""
    except (untrusted.Refused, OSError) as exc:
        warnings.append(to_wire(untrusted.Problem(f"{base.name}/{rel}", str(exc))))
        return b""


RESULT_FILES = ("results.json", "results/results.json", "results.csv", "results/results.csv")


def _metric_sources(run: _Run, pump: OutputPump, warnings: list[dict[str, Any]],
                    files: list[dict[str, Any]]) -> dict[str, metrics.MetricSet]:
    """Each source's metrics; the result files the run wrote, merged in `RESULT_FILES`'s order
    (a later file's value wins), are listed in `files` with the number of values each gave."""
    found = {"stdout": pump.parsed}
    harness = _untrusted(warnings, run.probe_dir, "metrics.jsonl")
    if harness:
        found["harness"] = metrics.parse_harness_lines(untrusted.lines(harness))
    results = metrics.MetricSet()
    for rel in RESULT_FILES:
        if not run.wrote(rel):  # only what this run wrote, not the workspace's own file
            continue
        data = _untrusted(warnings, run.work_dir, rel)
        if not data:
            continue
        try:
            parsed = (result_files.parse_json(untrusted.loads(data)) if rel.endswith(".json")
                      else result_files.parse_csv(data.decode("utf-8", "replace")))
        except ValueError as exc:
            warnings.append({"code": "result-file", "file": f"work/{rel}", "message":
                             f"{rel} was not read: {exc}; its numbers are not in the record"})
            continue
        results.merge_from(parsed)
        files.append({"path": rel, "values": len(parsed.values)})
    if files:
        found["resultsFile"] = results
    return found


def _outcome(run: _Run, merged: metrics.Merged, probe: provenance.ProbeEvents,
             verdict: Verdict) -> tuple[RunState, dict[str, Any] | None]:
    if run.stop_reason is not None:
        frame = provenance.innermost_workspace_frame(run.stack_frames, newest_first=True)
        where = f" while running {frame.rel}:{frame.line} ({frame.func})" if frame else ""
        if run.stop_reason == "timeout":
            message = f"the {run.record.timeout_sec:g} s budget ran out{where}"
            return RunState.TIMED_OUT, _error(ErrorKind.TIMEOUT, message, frame)
        if run.stop_reason == "diskQuota":
            message = (f"the run's folders grew past {run.cfg.run.disk_mb} MB "
                       f"(run.disk_mb){where}")
            return RunState.FAILED, _error(ErrorKind.DISK_QUOTA, message, frame)
        if run.stop_reason == "nan" and run.diverged:
            name, value = run.diverged
            grace = run.cfg.run.nan_grace_steps
            after = f" and {grace} more value(s) (run.nan_grace_steps)" if grace else ""
            printed = _printing_line(run, name)
            message = (f"{name} became {value}{after}: the run diverged and was stopped"
                       f"{where} (run.stop_on_nan)")
            if printed is not None:
                return RunState.FAILED, make_error(ErrorKind.NAN, message, *printed)
            return RunState.FAILED, _error(ErrorKind.NAN, message, frame)
        return RunState.CANCELLED, _error(ErrorKind.CANCELLED, f"cancelled{where}", frame)
    code = run.proc.returncode if run.proc else None
    tests_ran = (run.record.script == "-m pytest" and code == 1
                 and "pass_rate" in merged.metrics)
    if code != 0 and not tests_ran:
        # (pytest exits 1 when some tests fail: for a code experiment that is a result)
        return RunState.FAILED, _failure(run, probe, verdict)
    judged = run.cfg.metric.name
    if judged in merged.non_finite:
        return RunState.FAILED, make_error(
            ErrorKind.NAN, f"{judged} is {merged.non_finite[judged]}: the run diverged")
    if not merged.metrics and not merged.non_finite:
        return RunState.FAILED, make_error(
            ErrorKind.NO_METRICS, "the run exited 0 but reported no metrics (no `name: value` "
            "lines, results.json or harness records)")
    return RunState.SUCCEEDED, None


def _failure(run: _Run, probe: provenance.ProbeEvents, verdict: Verdict) -> dict[str, Any]:
    parsed = provenance.parse_traceback(_log_end(Path(run.record.log_path)), run.work_dir)
    code = run.proc.returncode if run.proc else None
    if run.cgroup and run.cgroup.hit_limit():
        return make_error(ErrorKind.OOM, f"the run hit the limit of {run.cfg.run.max_processes} "
                          "processes (run.max_processes)")
    if run.cgroup and (kills := run.cgroup.oom_kills()):
        frame = provenance.innermost_workspace_frame(parsed[0]) if parsed else None
        return _error(ErrorKind.OOM, f"the kernel killed {kills} process(es) of the run for "
                      f"going over its memory limit of {run.memory_mb} MB (run.memory_mb)", frame)
    if parsed is None:
        how = f"killed by signal {-code}" if code is not None and code < 0 else (
            f"exited with code {code}")
        kind = (ErrorKind.OOM if code == -signal.SIGKILL and run.memory_mb
                else ErrorKind.EXCEPTION)
        return make_error(kind, f"the run {how} without a Python traceback")
    frames, exception = parsed
    verdict.traceback = [to_wire(f) for f in frames]
    frame = provenance.innermost_workspace_frame(frames)
    exc_type = exception.split(":", 1)[0].rsplit(".", 1)[-1]
    remote = [e for e in probe.network if not e.get("local")]
    if exc_type in NETWORK_ERRORS or (probe.network and any(
            w in exception for w in NETWORK_MESSAGES)):
        attempts = remote or probe.network
        if attempts:
            rel = _relative(run, attempts[-1])
            return make_error(ErrorKind.NETWORK, f"{exception} (network is disabled in runs: load "
                              "data from the dataset cache instead)", rel.get("file"),
                              rel.get("line"))
        return _error(ErrorKind.NETWORK, exception, frame)
    if exc_type in OOM_ERRORS or any(m in exception for m in OOM_MESSAGES):
        return _error(ErrorKind.OOM, exception, frame)
    if (exc_type == "FileNotFoundError" and _about_datasets(run, exception, probe)) or (
            exc_type in DATASET_ERRORS) or any(m in exception for m in DATASET_MESSAGES):
        return _error(ErrorKind.DATASET_MISSING, exception, frame)
    return _error(ErrorKind.EXCEPTION, exception, frame)


def _about_datasets(run: _Run, exception: str, probe: provenance.ProbeEvents) -> bool:
    root = run.cfg.dataset_cache_root
    names = [s.name.lower() for s in datasets.all_specs(run.cfg.datasets)]
    missing_opened = [p for p in probe.opened if not os.path.exists(p)]
    text = exception.lower()
    return bool(missing_opened) or root in exception or any(n in text for n in names) or (
        "dataset" in text)


def _printing_line(run: _Run, name: str) -> tuple[str, int] | None:
    """The line of the run's script that prints `name` (the first that names it beside
    print / log / write), where a divergence is reported."""
    script = run.record.script
    if script.startswith("-m "):
        return None
    try:
        text = untrusted.read_bytes(run.work_dir, script, 4 << 20) or b""
    except (untrusted.Refused, OSError):
        return None
    for number, line in enumerate(text.decode("utf-8", "replace").splitlines(), 1):
        if name in line and any(w in line for w in ("print", "log", "write")):
            return script, number
    return None


def non_finite_warnings(parsed: metrics.MetricSet) -> list[dict[str, Any]]:
    """A warning for each metric (not watched: those stop the run) that printed NaN / inf."""
    names = [n for n in parsed.non_finite_first if n not in parsed.watched]
    shown = [{"code": "non-finite", "metric": n, "message":
              f"{n} was {parsed.non_finite_first[n]} during the run"} for n in names[:20]]
    if len(names) > 20:
        shown.append({"code": "non-finite", "message": f"and {len(names) - 20} more metrics "
                      "were NaN or infinite during the run"})
    return shown


def _error(kind: ErrorKind, message: str, frame: provenance.Frame | None) -> dict[str, Any]:
    return make_error(kind, message, frame.rel if frame else None,
                      frame.line if frame else None)


def _relative(run: _Run, event: dict[str, Any]) -> dict[str, Any]:
    out = dict(event)
    prefix = str(run.work_dir) + os.sep
    if str(out.get("file", "")).startswith(prefix):
        out["file"] = out["file"][len(prefix):]
    return out


def _log_end(path: Path, size: int = 256 * 1024) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - size))
        return f.read().decode("utf-8", "replace")
