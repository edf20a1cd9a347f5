"""The context every prompt is rendered with: configured root, datasets really present, budget."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from labls.prompts import render
from labls.sandbox import datasets, gitsafe
from labls.sandbox.config import Config
from labls.sandbox.gpus import detect_gpus
from labls.sandbox.records import RunRecord


def base_context(cfg: Config) -> dict[str, Any]:
    scan = datasets.scan(cfg.dataset_cache_root, cfg.datasets)
    gpus = cfg.run.gpus if isinstance(cfg.run.gpus, list) else detect_gpus()
    return {
        "cache_root": scan.cache_root,
        "root_error": scan.root_error,
        "available": [asdict(d) for d in scan.available],
        "unavailable": [asdict(d) for d in scan.unavailable],
        "examples": [asdict(d) for d in scan.datasets if d.example],
        "metric": cfg.metric.name,
        "goal": cfg.metric.goal,
        "timeout_sec": cfg.run.timeout_sec,
        "gpus": gpus,
        "cpu_count": os.cpu_count() or 1,
    }


def repair_context(record: RunRecord, workspace: Path, at_ref: str | None = None,
                   context_lines: int = 6) -> dict[str, Any]:
    """What the `repair` template needs, taken from a finished run's record. The source quoted
    is a file git tracks in `workspace`, as it is there or, with `at_ref`, as that commit has
    it (a step's tried code, set aside): a traceback the run printed may name any path, and an
    ignored `.env` or a file outside the workspace must never reach the model."""
    error = record.error or {"kind": "noMetrics", "message": "the run reported no metrics",
                             "file": None, "line": None}
    source = ""
    rel = str(error.get("file") or "")
    if rel and error.get("line") and _tracked(workspace, rel):
        text = _text(workspace, rel, at_ref)
        if text is not None:
            lines = text.splitlines()
            line = int(error["line"])
            lo, hi = max(1, line - context_lines), min(len(lines), line + context_lines)
            source = "\n".join(
                f"{'>' if n == line else ' '}{n:5d}  {lines[n - 1]}" for n in range(lo, hi + 1)
            )
    return {"run_id": record.run_id, "script": record.script, "state": record.state,
            "error": error, "source": source, "log_tail": record.log_tail}


def _text(workspace: Path, rel: str, at_ref: str | None) -> str | None:
    if at_ref is not None:
        done = gitsafe.run(workspace, "show", f"{at_ref}:{rel}")
        return done.stdout if done.returncode == 0 else None
    path = (workspace / rel).resolve()
    if not path.is_relative_to(workspace.resolve()) or not path.is_file():
        return None
    return path.read_text(encoding="utf-8", errors="replace")


def _tracked(workspace: Path, rel: str) -> bool:
    """`rel` is a file git tracks in `workspace`, named plainly (no `..`, not absolute)."""
    named = Path(rel)
    if named.is_absolute() or ".." in named.parts or not (workspace / ".git").exists():
        return False
    done = gitsafe.run(workspace, "ls-files", "--error-unmatch", "--", rel)
    return done.returncode == 0 and bool(done.stdout.strip())


def render_prompt(cfg: Config, template: str, user_vars: dict[str, Any]) -> tuple[str, Any]:
    """Render `template`; user variables win over the computed context."""
    context = base_context(cfg)
    context.update(user_vars)
    return render(template, context), context
