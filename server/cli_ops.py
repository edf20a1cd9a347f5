"""CLI verbs over the lab session, the same operations the language server and `labls mcp`
serve: `compare`, `edit`, `prompt`, `step`. Answers are printed as JSON (the wire shapes of
docs/PROTOCOL.md); a refusal is the same message on stderr with exit code 2, an answer with
`ok: false` exits 1."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from labls.lab import params as p
from labls.lab.errors import LabError
from labls.lab.session import LabSession, render_prompt
from labls.sandbox import config

REFUSED = 2


def _session(listener: Any = None) -> LabSession:
    workspace = config.find_workspace(Path.cwd())
    cfg, problems = config.load(workspace)
    for problem in problems:
        sys.stderr.write(f"{problem}\n")
    return LabSession(workspace, cfg, listener)


def _answer(value: dict[str, Any]) -> int:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")
    return 0 if value.get("ok", True) else 1


def _edit_text(source: str) -> str:
    return sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")


def compare(args: Any) -> int:
    from .cli_runs import find_run

    session = _session()
    try:
        record, why = find_run(session.engine.registry, args.run_id)
        if record is None:
            raise LabError(f"labls compare: {why}")
        prm = p.RunCompareParams(record.run_id, args.baseline)
        return _answer(session.compare_runs(prm, "labls compare"))
    finally:
        session.engine.close()


def edit(args: Any) -> int:
    session = _session()
    try:
        prm = p.EditApplyParams(args.format, _edit_text(args.file), args.path,
                                dry_run=args.dry_run)
        return _answer(session.apply_edit(prm, "labls edit"))
    finally:
        session.engine.close()


def prompt(args: Any) -> int:
    workspace = config.find_workspace(Path.cwd())
    cfg, _ = config.load(workspace)
    user_vars: dict[str, Any] = dict(v.split("=", 1) for v in args.var)
    if args.run:
        session = _session()
        try:
            from .cli_runs import find_run

            record, why = find_run(session.engine.registry, args.run)
            if record is None:
                raise LabError(f"labls prompt: {why}")
            user_vars["runId"] = record.run_id
            answer = render_prompt(cfg, workspace, p.PromptRenderParams(args.template, user_vars),
                                   "labls prompt", session.record)
        finally:
            session.engine.close()
    else:
        answer = render_prompt(cfg, workspace, p.PromptRenderParams(args.template, user_vars),
                               "labls prompt")
    if args.json:
        return _answer(answer)
    sys.stdout.write(answer["text"] + ("" if answer["text"].endswith("\n") else "\n"))
    return 0


def step(args: Any) -> int:
    from .cli_runs import _ProgressLine

    session = _session(_ProgressLine(sys.stderr))
    try:
        edit = {"format": args.format, "text": _edit_text(args.file)}
        if args.path:
            edit["path"] = args.path
        prm = p.ExperimentStepParams(args.hypothesis, edit, timeout_sec=args.timeout)
        return _answer(session.step(prm, "labls step"))
    finally:
        session.engine.close()


def dispatch(args: Any) -> int:
    """The verb's function; a `LabError` is its message on stderr and exit code 2."""
    try:
        return int(globals()[args.verb](args))
    except LabError as exc:
        sys.stderr.write(f"{exc}\n")
        return REFUSED
    except OSError as exc:  # the edit's file
        sys.stderr.write(f"labls {args.verb}: {exc}\n")
        return REFUSED
