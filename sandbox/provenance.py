"""Where a run's numbers came from and where it failed.

- `read_probe`: the events the run's audit hook wrote (dataset files opened, network attempts):
  written by code inside the run, so claims, kept as details, never a verdict's ground.
- `verdict`: `verified` only when exactly one `DATASET_USED:` stamp names a dataset present in
  the cache and an observer outside the run (`observe.py`) saw bytes read from files of that
  dataset and of no other; otherwise `unverified` or `mismatch`, with the reason and the
  diagnostic code it maps to.
- `parse_traceback` / `parse_stack_dump`: the frames of a Python traceback in the log, or of the
  faulthandler dump taken just before a timeout kill, mapped to workspace-relative paths.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import untrusted
from .datasets import CacheScan
from .wire import named

if TYPE_CHECKING:
    from .observe import DatasetReads

MAX_LISTED = 1000  # paths listed per kind in the record; `filesReadCount` counts them all


@dataclass
class ProbeEvents:
    opened: list[str]
    network: list[dict[str, Any]]
    problems: list[untrusted.Problem]


def read_probe(probe_dir: Path) -> ProbeEvents:
    """The audit hook's events (bounded, each line checked: the run can write this file)."""
    opened: dict[str, None] = {}
    network: list[dict[str, Any]] = []
    problems = []
    try:
        data = untrusted.read_bytes(probe_dir, "events.jsonl") or b""
    except untrusted.Refused as exc:
        problems.append(untrusted.Problem("probe/events.jsonl", exc.reason))
        data = b""
    for line in untrusted.lines(data):
        try:
            event = untrusted.loads(line) if line.strip() else None
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        kind, path = event.get("event"), event.get("path")
        if kind == "open" and isinstance(path, str) and len(opened) < MAX_LISTED:
            opened[path] = None
        elif kind in ("connect", "resolve") and len(network) < MAX_LISTED:
            network.append({k: v for k, v in event.items() if isinstance(v, str | int | bool)})
    return ProbeEvents(list(opened), network, problems)


def verdict(stamps: list[str], reads: DatasetReads | None, scan: CacheScan,
            claimed: list[str], note: str = "") -> dict[str, Any]:
    """The provenance block of the run record.

    `reads` is what an observer outside the run saw (None: nobody outside watched, and the
    verdict cannot be `verified`); `claimed` is what the run's own audit hook wrote, kept in
    the record as the lower-trust source it is, never the ground for a verdict."""
    observed = reads is not None
    read = reads.read if reads is not None else []
    read_set = set(read)
    opened_unread = [p for p in (reads.opened if reads is not None else []) if p not in read_set]
    datasets_read = sorted(reads.datasets) if reads is not None else []  # of every file read

    def result(kind: str, reason: str, code: str | None) -> dict[str, Any]:
        return {"verdict": kind, "reason": reason, "code": code, "stamps": stamps,
                "observed": observed, "filesRead": read[:MAX_LISTED],
                "filesReadCount": reads.read_count if reads is not None else 0,
                "filesReadBytes": reads.read_bytes if reads is not None else 0,
                "filesOpenedUnread": opened_unread[:MAX_LISTED],
                "datasetsRead": datasets_read, "claimedFilesRead": claimed[:MAX_LISTED],
                "note": note}

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
    if not observed:
        return result("unverified", f"the stamp says {status.name}, but no observer outside "
                      f"the run saw what it read ({note or 'none was set up'})",
                      "dataset-unread")
    others = [d for d in datasets_read if d != status.name]
    if others:
        return result("mismatch", f"the stamp says {status.name} but the run also read "
                      f"{', '.join(others)}", "dataset-stamp")
    if status.name not in datasets_read:
        unread = " (files were opened but no byte of them was read)" if opened_unread else ""
        return result("unverified", f"the stamp says {status.name} but no file of it was "
                      f"read{unread}", "dataset-unread")
    count = reads.read_count if reads is not None else 0  # observed: reads is set
    return result("verified", f"{status.name}: stamped once and {count} of its files read, "
                  "as seen from outside the run", None)


# --- tracebacks ----------------------------------------------------------------------------------

FRAME = re.compile(
    r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+)(?:(?:, in | in )(?P<func>.*))?$')
EXCEPTION_LINE = re.compile(r"^[\w.]*(?:Error|Exception|Exit|Interrupt|Warning)\b.*$")


@dataclass
class Frame:
    file: str = field(metadata=named(None))  # as printed
    line: int
    func: str = field(metadata=named("function"))
    rel: str | None = field(metadata=named(None))  # relative to the work dir: workspace code

    def wire_extra(self) -> dict[str, Any]:
        return {"file": self.rel or self.file, "workspace": self.rel is not None}


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
