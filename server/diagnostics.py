"""One pure function: a finished run (and its comparison) → diagnostics per workspace file.

Lines in run records are 1-based as in tracebacks; LSP ranges are 0-based with UTF-16 columns.
The range covers the line's text without its indentation, measured in UTF-16 code units so that
tabs and non-ASCII text land where the editor shows them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lsprotocol import types

from labls.lab.compare import Comparison
from labls.sandbox.records import RunRecord
from labls.sandbox.wire import to_wire

SOURCE = "labls"
Lines = Callable[[str], list[str] | None]  # workspace-relative path → its lines, or None

ERROR_CODES = {"exception": "exception", "timeout": "timeout", "network": "network",
               "nan": "nan", "datasetMissing": "dataset-missing", "noMetrics": "no-metrics",
               "oom": "oom", "refused": "refused", "internal": "internal",
               "diskQuota": "disk-quota", "stateDir": "state-dir"}
HINTS = {
    "network": "runs have no network: load data from the dataset cache root instead",
    "datasetMissing": "the dataset is not in the cache root: stage it there; never substitute "
                      "synthetic data",
    "timeout": "the run was killed at the end of its budget here",
    "nan": "the judged metric is not a finite number: the run diverged",
}


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def line_range(lines: list[str] | None, line: int | None) -> types.Range:
    """The 0-based range of 1-based `line`, without leading whitespace; line 0 if unknown."""
    index = max(0, (line or 1) - 1)
    if lines is None or index >= len(lines):
        return types.Range(types.Position(index, 0), types.Position(index, 0))
    text = lines[index].rstrip("\r\n")
    indent = len(text) - len(text.lstrip())
    return types.Range(types.Position(index, utf16_len(text[:indent])),
                       types.Position(index, utf16_len(text)))


def _find_line(lines: list[str] | None, needle: str) -> int | None:
    for i, text in enumerate(lines or []):
        if needle in text:
            return i + 1
    return None


def script_file(script: str, read_lines: Lines) -> str | None:
    """The workspace file a run's own diagnostics go on: its script, or for a module run
    (`-m pkg.train`) the module's file if the workspace has it (`pkg/train.py`,
    `pkg/train/__main__.py`); None for a module from elsewhere (`-m pytest`)."""
    if not script.startswith("-m "):
        return script
    base = script[3:].strip().replace(".", "/")
    return next((f for f in (f"{base}.py", f"{base}/__main__.py")
                 if read_lines(f) is not None), None)


def _calling_frame(frames: list[dict[str, Any]], home: str | None) -> dict[str, Any] | None:
    """The script's line that called into the code that raised: its innermost frame in the
    run's own script (its outer frames there, `main()` at the bottom, are related info)."""
    return next((f for f in reversed(frames) if home and f.get("file") == home
                 and f.get("line")), None)


def build(record: RunRecord, comparison: Comparison | None, read_lines: Lines,
          workspace: Path) -> dict[str, list[types.Diagnostic]]:
    """Diagnostics by workspace-relative path. Those about the run as a whole go on its
    script's file; a module run from outside the workspace has none, so they stay in the
    record (errors in workspace files still go on those files)."""
    out: dict[str, list[types.Diagnostic]] = {}
    home = script_file(record.script, read_lines)
    script_lines = read_lines(home) if home else None

    def add(path: str | None, line: int | None, code: str, message: str,
            severity: types.DiagnosticSeverity, data: dict[str, Any] | None = None,
            related: list[types.DiagnosticRelatedInformation] | None = None) -> None:
        if path is None:
            return
        lines = script_lines if path == home else read_lines(path)
        out.setdefault(path, []).append(types.Diagnostic(
            range=line_range(lines, line), message=message, severity=severity, code=code,
            source=SOURCE, data={"runId": record.run_id, **(data or {})},
            related_information=related or None))

    error = record.error
    if error and error["kind"] in ERROR_CODES and error["kind"] != "cancelled":
        path = error.get("file") or home
        if path is None or read_lines(path) is None:  # not a workspace file: on the script
            path = home
        hint = HINTS.get(error["kind"])
        message = error["message"] + (f"\n{hint}" if hint else "")
        related = [
            types.DiagnosticRelatedInformation(
                location=types.Location(uri=(workspace / f["file"]).as_uri(),
                                        range=line_range(read_lines(f["file"]), f["line"])),
                message=f"{f['function']} (frame {i + 1} of {len(record.traceback)})")
            for i, f in enumerate(record.traceback)
            if f["workspace"] and (f["file"], f["line"]) != (error.get("file"), error.get("line"))
        ]
        add(path, error.get("line"), ERROR_CODES[error["kind"]], message,
            types.DiagnosticSeverity.Error, {"error": error}, related)
        calling = _calling_frame(record.traceback, home) if path != home else None
        if calling is not None:  # raised in imported code: the script's own line says so too
            raised = types.DiagnosticRelatedInformation(
                location=types.Location(uri=(workspace / str(path)).as_uri(),
                                        range=line_range(read_lines(str(path)), error["line"])),
                message=f"raised here: {error['message'][:200]}")
            add(home, calling["line"], ERROR_CODES[error["kind"]],
                f"{error['message']}\n(raised in {path}:{error.get('line')}, called from here)",
                types.DiagnosticSeverity.Error, {"error": error, "calling": True},
                [raised, *[r for r in related if r.location.range.start.line != calling["line"] - 1
                           or not r.location.uri.endswith(f"/{home}")]])

    prov = record.provenance or {}
    if prov.get("code") and record.state in ("succeeded", "failed") and (
            not error or error["kind"] not in ("datasetMissing", "network")):
        line = _find_line(script_lines, "DATASET_USED")
        add(home, line, prov["code"], f"dataset provenance {prov['verdict']}: "
            f"{prov['reason']}", types.DiagnosticSeverity.Warning, {"provenance": prov})

    for warning in record.warnings:  # inputs of the run's that labls refused, a weak sandbox
        add(home, None, warning.get("code", "warning"), warning.get("message", ""),
            types.DiagnosticSeverity.Warning, {"warning": warning})
    weaker = (record.sandbox or {}).get("warning")
    if weaker:
        add(home, None, "sandbox", f"this run had a weaker sandbox: {weaker}",
            types.DiagnosticSeverity.Warning, {"sandbox": record.sandbox})

    if record.metrics:
        judged = comparison.metric if comparison else ""
        bounded = record.summary(judged)  # the judged metric, then the first ones printed
        shown = list(bounded.metrics.items())[:6]
        summary = ", ".join(f"{k} = {v:.6g}" for k, v in shown)
        more = len(record.metrics) - len(shown)
        add(home, None, "metrics",
            f"run {record.run_id} {record.state} in {record.duration_sec or 0:.1f} s: {summary}"
            + (f" (+{more} more)" if more > 0 else "") + f" [from {record.metrics_source}]",
            types.DiagnosticSeverity.Information,
            {"metrics": bounded.metrics, "metricsCount": len(record.metrics),
             "metricsSource": record.metrics_source})

    if comparison and comparison.verdict in ("improvement", "regression"):
        pct = f" ({comparison.pct:+.2f} %)" if comparison.pct is not None else ""
        add(home, None, comparison.verdict,
            f"{comparison.verdict}: {comparison.metric} {comparison.current:.6g} vs baseline "
            f"{comparison.baseline:.6g} (run {comparison.baseline_id}), Δ "
            f"{comparison.delta:+.6g}{pct}",
            types.DiagnosticSeverity.Warning if comparison.verdict == "regression"
            else types.DiagnosticSeverity.Information, {"comparison": to_wire(comparison)})
    return out
