"""`labls run`, `labls runs`, `labls show`, `labls cancel`: the run engine from a terminal.

A live progress line on stderr (elapsed / budget, latest metrics), a summary table at the end.
Exit code 0 only when the run succeeded.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from labls.sandbox import config
from labls.sandbox.engine import Engine, RunInputError, RunListener, RunRequest
from labls.sandbox.lifeline import Launcher
from labls.sandbox.records import RunRecord


class _ProgressLine(RunListener):
    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.tty = stream.isatty()

    def on_progress(self, record: RunRecord, elapsed: float) -> None:
        shown = record.latest_metrics()
        line = f"[{record.run_id}] {elapsed:6.1f}/{record.timeout_sec:g} s  {shown}"
        self.stream.write(("\r" + line[:150].ljust(150)) if self.tty else line + "\n")
        self.stream.flush()


EXIT_CODES = {"succeeded": 0, "failed": 1, "timedOut": 3, "cancelled": 4, "interrupted": 5}
REFUSED = 2  # bad arguments, a refused request (as argparse's own)


def in_workspace(path: str, workspace: Path) -> str:
    """A path the user typed in the current folder, as the workspace-relative path labls takes
    (a module run, `-m name`, as it is)."""
    if path.startswith("-m ") or Path(path).is_absolute():
        return path
    full = Path(os.path.normpath(Path.cwd() / path))
    return str(full.relative_to(workspace)) if full.is_relative_to(workspace) else path


def run(args: Any, launcher: Launcher | None = None) -> int:
    workspace = config.find_workspace(Path.cwd())
    cfg, problems = config.load(workspace)
    for problem in problems:
        sys.stderr.write(f"{problem}\n")
    engine = Engine(workspace, cfg, _ProgressLine(sys.stderr), launcher)
    try:
        try:
            record = engine.start(RunRequest(in_workspace(args.script, workspace),
                                             list(args.args), args.timeout,
                                             label=args.label or ""))
        except RunInputError as exc:
            sys.stderr.write(f"labls run: {exc}\n")
            return REFUSED
        interrupted = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            interrupted.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        while (final := engine.wait(record.run_id, timeout=0.2)) is not None and not final.final:
            if interrupted.is_set():
                engine.cancel(record.run_id)
    finally:
        engine.close()
    assert final is not None
    sys.stderr.write("\n" if sys.stderr.isatty() else "")
    sys.stdout.write(summary(final))
    return EXIT_CODES.get(final.state, 1)


def summary(r: RunRecord) -> str:
    rows = [("run", r.run_id), ("state", r.state), ("script", " ".join([r.script, *r.args])),
            ("duration", f"{r.duration_sec or 0:.2f} s of {r.timeout_sec:g} s"),
            ("isolation", f"{r.isolation} (network {r.network}, {r.device})"),
            ("metrics from", r.metrics_source),
            ("provenance", f"{r.provenance.get('verdict', '-')}: {r.provenance.get('reason', '')}"),
            ("log", r.log_path)]
    if r.error:
        where = f" at {r.error['file']}:{r.error['line']}" if r.error.get("file") else ""
        rows.append(("error", f"{r.error['kind']}{where}: {r.error['message']}"))
    rows += [("warning", w.get("message", "")) for w in r.warnings[:10]]
    out = "".join(f"{k:>13}  {v}\n" for k, v in rows)
    if r.metrics:
        out += "      metrics\n" + "".join(
            f"{'':>15}{k:<40} {v:.6g}\n" for k, v in sorted(r.metrics.items()))
    return out


def _registry() -> tuple[Any, Any]:
    """The current workspace's config and run registry."""
    from labls.sandbox.registry import Registry

    workspace = config.find_workspace(Path.cwd())
    cfg, _ = config.load(workspace)
    return cfg, Registry(cfg.state_path(workspace) / "labls.db")


def runs(args: Any) -> int:
    cfg, registry = _registry()
    if args.json:
        import json

        for r in registry.recent(args.limit, args.state):  # one summary per line (jq -c)
            sys.stdout.write(json.dumps(r.to_wire()) + "\n")
        return 0
    judged = cfg.metric.name
    sys.stdout.write(f"{'run':<23} {'state':<11} {'duration':>9} {judged:>12}  script\n")
    for r in registry.recent(args.limit, args.state):
        value = r.metrics.get(judged)
        shown = f"{value:.6g}" if value is not None else "-"
        started = time.strftime("%H:%M:%S", time.localtime(r.created_at))
        sys.stdout.write(f"{r.run_id:<23} {r.state:<11} {r.duration_sec or 0:>8.1f}s "
                         f"{shown:>12}  {r.script} ({started})\n")
    return 0


def find_run(registry: Any, wanted: str) -> tuple[Any, str]:
    """The run `wanted` names: an id, `last`, or a unique prefix of an id; else why not."""
    ids = registry.run_ids()  # newest first
    if wanted == "last":
        matches = ids[:1]
    else:
        matches = [i for i in ids if i == wanted] or [i for i in ids if i.startswith(wanted)]
    if len(matches) == 1:
        return registry.get(matches[0]), ""
    if not matches:
        return None, f"no run {wanted!r}"
    return None, f"{wanted!r} is the start of {len(matches)} run ids: {', '.join(matches[:5])}"


def show(args: Any) -> int:
    registry = _registry()[1]
    record, why = find_run(registry, args.run_id)
    if record is None:
        sys.stderr.write(f"labls show: {why}\n")
        return REFUSED
    if args.follow:
        record = _follow(registry, record)
    if args.json:
        import json  # here only: `labls run` reaches json after its run has started

        sys.stdout.write(json.dumps(record.to_wire(), indent=2))
    else:
        sys.stdout.write(summary(record))
    return 0


def cancel(args: Any) -> int:
    """Cancel a run and print its final record: exit 0 once it is cancelled, 1 when it had
    already ended or did not end within --wait, 2 for no such run."""
    registry = _registry()[1]
    try:
        record, why = find_run(registry, args.run_id)
        if record is None:
            sys.stderr.write(f"labls cancel: {why}\n")
            return REFUSED
        if record.final:
            sys.stderr.write(f"labls cancel: run {record.run_id} already ended: {record.state}\n")
            return 1
        final = registry.ask_cancel(record.run_id, args.wait) or record
    finally:
        registry.close()
    sys.stdout.write(summary(final))
    if not final.final:
        sys.stderr.write(f"labls cancel: run {final.run_id} is still {final.state} after "
                         f"{args.wait:g} s (its owner takes the request within half a second; "
                         "it may be in its grace period, run.kill_grace_sec)\n")
        return 1
    return 0 if final.state == "cancelled" else 1


def _follow(registry: Any, record: RunRecord) -> RunRecord:
    """Copy the run's log to stdout as it grows (as `tail -f` does, by polling), until the run
    is final and its log read to the end; the final record."""
    done = 0
    while True:
        final = record.final
        try:
            with open(record.log_path, "rb") as log:
                log.seek(done)
                chunk = log.read()
        except OSError:
            chunk = b""
        done += len(chunk)
        sys.stdout.write(chunk.decode("utf-8", "replace"))
        sys.stdout.flush()
        if final:
            return record
        time.sleep(0.2)
        record = registry.get(record.run_id) or record


def gc(args: Any) -> int:
    """What `labls gc` frees: shown with sizes, removed only with --yes."""
    from labls.sandbox import gc as collector

    cfg, registry = _registry()
    keep = cfg.run.keep if args.keep is None else args.keep
    state_dir = cfg.state_path(config.find_workspace(Path.cwd()))
    items = collector.plan(state_dir, keep, registry.unfinished_or_pinned(), registry.run_ids(),
                           logs=args.logs)
    total = sum(i.size for i in items)
    for item in items:
        sys.stdout.write(f"{item.run_id:<23} {item.size / 1e6:>10.1f} MB  "
                         f"{', '.join(sorted(p.name for p in item.paths))}\n")
    verb = "freed" if args.yes else "would free (run with --yes to free it)"
    sys.stdout.write(f"{len(items)} run folder(s), {total / 1e6:.1f} MB {verb}; the newest "
                     f"{keep} and every kept experiment's run stay whole\n")
    if args.yes:
        collector.collect(items)
    return 0


def history(args: Any) -> int:
    from labls.lab.experiment import results_tsv

    cfg, registry = _registry()
    from labls.lab.ledger import Ledger

    ledger = Ledger(registry).rows(args.limit)
    if args.tsv:
        sys.stdout.write(results_tsv(ledger))
        return 0
    sys.stdout.write(f"{'when':<9} {'status':<8} {'commit':<8} {cfg.metric.name:>12}  "
                     f"{'run':<23} description\n")
    for e in ledger:
        metric = "-" if e["metric"] is None else f"{e['metric']:.6g}"
        when = time.strftime("%H:%M:%S", time.localtime(e["created_at"]))
        ref = f"  [{e['discarded_ref']}]" if e["discarded_ref"] else ""
        ref += f"  ({e['reason'][:200]})" if e.get("reason") and e["status"] != "keep" else ""
        sys.stdout.write(f"{when:<9} {e['status']:<8} {e['commit_sha'][:7]:<8} {metric:>12}  "
                         f"{e['run_id']:<23} {e['description']}{ref}\n")
    return 0


def loop(args: Any) -> int:
    from labls.lab.loop import LoopSpec, clone_into
    from labls.lab.session import LabSession

    workspace = Path.cwd()
    if args.source:
        workspace = Path(args.into or Path(args.source.rstrip("/")).name.removesuffix(".git"))
        clone_into(args.source, workspace.resolve())
        sys.stderr.write(f"cloned {args.source} into {workspace}\n")
    workspace = workspace.resolve()
    # the flags are the user's own layer; a cloned repository's labls.toml only tightens
    flags = {"loop": {k: v for k, v in (("model", args.model), ("prepare", args.prepare)) if v}}
    cfg, problems = config.load(workspace, flags)
    for problem in problems:
        sys.stderr.write(f"{problem}\n")
    session = LabSession(workspace, cfg, _ProgressLine(sys.stderr))
    spec = LoopSpec(args.iterations, args.time_budget, cfg.loop.model, args.program,
                    args.script or cfg.loop.script, prepare=cfg.loop.prepare or None,
                    prepare_timeout_sec=args.prepare_timeout)
    state = session.loop_start(spec)
    auto = session.running_loop(state.loop_id)
    signal.signal(signal.SIGINT, lambda *_: auto.stop_requested.set())
    shown = 0
    while auto.thread.is_alive() or shown < len(state.iterations):
        auto.thread.join(timeout=0.5)
        for it in state.iterations[shown:]:
            sys.stdout.write(f"iteration {it['index']}: {it['verdict']:<8} {it['metric']}  "
                             f"{it['hypothesis']}\n")
            shown += 1
    session.engine.close()
    sys.stdout.write(f"loop {state.loop_id}: {state.state}"
                     + (f" ({state.error})" if state.error else "") + "\n")
    return 0 if state.state == "finished" else 1
