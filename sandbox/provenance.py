"""Where a run's numbers came from and where it failed.

- `read_probe`: the events the run's audit hook wrote (dataset files opened, network attempts).
- `verdict`: `verified` only when exactly one `DATASET_USED:` stamp names a dataset present in
  the cache and files of that dataset were really opened; otherwise `unverified` or `mismatch`,
  with the reason and the diagnostic code it maps to.
- `parse_traceback` / `parse_stack_dump`: the frames of a Python traceback in the log, or of the
  faulthandler dump taken just before a timeout kill, mapped to workspace-relative paths.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .datasets import CacheScan, DatasetSpec, dataset_for_path


@dataclass
class ProbeEvents:
    opened: list[str]
    network: list[dict[str, Any]]


def read_probe(probe_dir: Path) -> ProbeEvents:
    opened: list[str] = []
    network: list[dict[str, Any]] = []
    path = probe_dir / "events.jsonl"
    if path.exists():
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if event.get("event") == "open" and event.get("path") not in opened:
                    opened.append(event["path"])
                elif event.get("event") in ("connect", "resolve"):
                    network.append(event)
    return ProbeEvents(opened, network)


def verdict(stamps: list[str], opened: list[str], scan: CacheScan,
            specs: list[DatasetSpec]) -> dict[str, Any]:
    """The provenance block of the run record."""
    read = [p for p in opened if os.path.isfile(p)]
    datasets_read = sorted({d for p in read if (d := dataset_for_path(p, scan.cache_root, specs))})

    def result(kind: str, reason: str, code: str | None) -> dict[str, Any]:
        return {"verdict": kind, "reason": reason, "code": code, "stamps": stamps,
                "filesRead": read, "datasetsRead": datasets_read}

    if not stamps:
        return result("unverified", "no `DATASET_USED: <name>` line was printed", "dataset-stamp")
    names = list(dict.fromkeys(stamps))
    if len(names) > 1:
        return result("mismatch", f"`DATASET_USED` names several datasets: {', '.join(names)}",
                      "dataset-stamp")
    if len(stamps) > 1:
        return result("unverified", f"`DATASET_USED: {names[0]}` was printed {len(stamps)} "
                      "times; print it exactly once", "dataset-stamp")
    status = scan.find(names[0])
    if status is None:
        return result("mismatch", f"`DATASET_USED: {names[0]}` names no known dataset",
                      "dataset-stamp")
    if not status.present:
        return result("mismatch", f"`DATASET_USED: {status.name}` names a dataset that is not "
                      f"present under {scan.cache_root}", "dataset-stamp")
    if status.name not in datasets_read:
        if datasets_read:
            return result("mismatch", f"the stamp says {status.name} but the run read "
                          f"{', '.join(datasets_read)}", "dataset-stamp")
        return result("unverified", f"the stamp says {status.name} but no file of it was read",
                      "dataset-unread")
    return result("verified", f"{status.name}: stamped once and {len(read)} of its files read",
                  None)


# --- tracebacks ----------------------------------------------------------------------------------

FRAME = re.compile(
    r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+)(?:(?:, in | in )(?P<func>.*))?$')
EXCEPTION_LINE = re.compile(r"^[\w.]*(?:Error|Exception|Exit|Interrupt|Warning)\b.*$")


@dataclass
class Frame:
    file: str  # as printed
    line: int
    func: str
    rel: str | None  # relative to the work dir when the file is workspace code

    def wire(self) -> dict[str, Any]:
        return {"file": self.rel or self.file, "line": self.line, "function": self.func,
                "workspace": self.rel is not None}


def _frame(m: re.Match[str], work_dir: Path) -> Frame:
    file = m.group("file")
    rel = None
    prefix = str(work_dir) + os.sep
    if file.startswith(prefix):
        rel = file[len(prefix):]
    elif not os.path.isabs(file) and not file.startswith("<"):
        rel = file
    return Frame(file, int(m.group("line")), (m.group("func") or "").strip(), rel)


def parse_traceback(text: str, work_dir: Path) -> tuple[list[Frame], str] | None:
    """The last traceback in `text`: frames oldest first, and the exception line."""
    lines = text.splitlines()
    start = max((i for i, ln in enumerate(lines) if ln.startswith("Traceback (most recent call")),
                default=None)
    if start is None:
        return _parse_syntax_error(lines, work_dir)
    frames: list[Frame] = []
    exception = ""
    for ln in lines[start + 1 :]:
        if m := FRAME.match(ln):
            frames.append(_frame(m, work_dir))
        elif ln.startswith((" ", "\t")) or not ln.strip():
            continue
        else:
            exception = ln.strip()
            break
    return frames, exception


def _parse_syntax_error(lines: list[str], work_dir: Path) -> tuple[list[Frame], str] | None:
    """A SyntaxError at start-up prints `File "x", line N` and the error, with no header."""
    for i in range(len(lines) - 1, -1, -1):
        if EXCEPTION_LINE.match(lines[i]):
            for j in range(i - 1, max(-1, i - 6), -1):
                if m := FRAME.match(lines[j]):
                    return [_frame(m, work_dir)], lines[i].strip()
            return None
    return None


def parse_stack_dump(text: str, work_dir: Path) -> list[Frame]:
    """faulthandler's dump: the current thread's frames, most recent first."""
    blocks = re.split(r"\n(?=(?:Current thread|Thread) 0x)", text)
    current = [b for b in blocks if b.startswith("Current thread")]
    chosen = current[0] if current else (blocks[0] if blocks else "")
    return [_frame(m, work_dir) for ln in chosen.splitlines() if (m := FRAME.match(ln))]


def innermost_workspace_frame(frames: list[Frame], newest_first: bool = False) -> Frame | None:
    ordered = frames if newest_first else frames[::-1]
    return next((f for f in ordered if f.rel is not None), None)
