"""Metrics from what a run prints: every stdout convention README.md lists, one line at a time.

A line is first cleaned (ANSI colours gone, each `\\r` a line break, a logging or rank prefix
dropped), then read by the first convention that takes it:

- `DATASET_USED: name`, the provenance stamp;
- condition lines, tagged or not (`PER_SEED condition=bn seed=0 acc: 0.9`, `condition=bn
  acc_mean: 0.9`, `SUMMARY condition=bn metric=acc mean=0.9 std=0.01`, JSON after a tag);
- a tag and a JSON map of conditions (`GAP_TO_BN: {"ln": 0.01}`);
- `METRIC k=v ...` (pi-autoresearch), with `step=` the step of the line's points;
- a dict or JSON object alone on a line (HF Trainer's log dicts, `print(json.dumps(...))`);
- HF Trainer's metric blocks (`  eval_accuracy = 0.45`), Lightning's result tables
  (`│ test_acc │ 0.78 │`), tqdm / Lightning progress-bar postfixes (`…it/s, loss=0.61]`);
- `name: value` alone on a line (autoresearch's summary block), names may hold spaces;
- pytest's summary line and coverage's TOTAL line.

Values go through `metrics.number` (ratios, hex, thousands separators exact or refused).
Pure: text in, numbers out.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from . import untrusted
from .metrics import MetricSet, key_part, number

_VALUE = r"""(?:"[^"]*"|'[^']*'|[^\s,;'"\]]+(?:,\d{3})*)(?=[\s;\]]|,(?!\d)|$)"""
_NAME = r"[^\W\d][\w.\-/@%]*"
PAIR = re.compile(rf"({_NAME})\s*(?:=|:\s)\s*({_VALUE})")
NAME_VALUE = re.compile(r"^\s*(?:\S+=\S+\s+)?([^\W\d][^:=]{0,160}?)\s*:\s*(\S+)\s*$")
METRIC_LINE = re.compile(r"^\s*METRIC\s+(.*)$")
TAGGED = re.compile(r"^\s*([A-Z][A-Z0-9_]*):?\s+(.*)$")
STAMP = re.compile(r"^\s*DATASET_USED:\s*(\S.*?)\s*$")
ASSIGNED = re.compile(rf"^\s+({_NAME})\s+=\s+(\S+)\s*$")  # HF Trainer's `***** metrics` block
TABLE_ROW = re.compile(rf"^\s*[│|┃]\s*({_NAME})\s*[│|┃]\s*(\S+)\s*[│|┃]\s*$")
BAR_POSTFIX = re.compile(r"(?:it/s|s/it)(?:\s*,\s*([^\]]*)\]|\s+(\S.*?))\s*$")  # tqdm, rich
CONDITION_KEYS = ("condition", "cond")
BAR_SKIPPED = {"v_num"}  # Lightning's run version in every bar: not a metric
PREFIX = re.compile(
    r"^\s*(?:\[rank\s*\d+\]:?\s*|\[?(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)\]?:[\w.]*:\s*"
    r"|\[(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)\]\s*"
    r"|\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[,.]\d+)?\s*(?:-\s*)?(?:[\w.]+\s+-\s+){0,3})")
PYTEST_SUMMARY = re.compile(
    r"^=*\s*((?:\d+ (?:passed|failed|errors?|skipped|xfailed|xpassed|warnings?|deselected)"
    r"(?:, )?)+) in [\d.]+s\b.*$")
PYTEST_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)")
COVERAGE_TOTAL = re.compile(r"^TOTAL(?:\s+\d+){2,4}\s+(\d+(?:\.\d+)?)%\s*$")
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07\n]*\x07")
ANSI_TEXT = re.compile(ANSI.pattern.decode())

# What a line must hold to be read at all, found by a C-level search over the whole chunk:
# a separator before a number, or a table cell. The pattern starts with one set of bytes so
# that the search skips to them fast (an alternation of two would scan at a third the speed).
# pytest's and coverage's totals and the stamp, whose first bytes are common, are searched for
# only in a chunk that holds their words. Only the lines holding a hit are decoded and parsed.
HIT = re.compile(rb"[:=|\xe2](?:(?<=[:=])[ \t]*['\"]?[-+.0-9nNiI]|(?<=\|)[ \t]*[-+.0-9]"
                 rb"|(?<=\xe2)\x94[\x82\x83][ \t]*[-+.0-9])")
TOTALS = re.compile(rb"^[^\n]*(?:\d (?:passed|failed|error)[^\n]* in [0-9.]+s|^TOTAL[ \t]"
                    rb"|DATASET_USED:)[^\n]*$", re.MULTILINE)
_GATES = (b":", b"=", b"|", b"\xe2")  # a chunk of none of these or of TOTALS is skipped


def _has_totals(block: bytes) -> bool:
    """A chunk may hold a pytest or coverage total or a stamp (single bytes first: memchr)."""
    return (b" passed" in block or b" failed" in block or b" error" in block
            or (b"%" in block and b"TOTAL" in block)
            or (b":" in block and b"DATASET_USED:" in block))


def parse_chunk(block: bytes, into: MetricSet) -> int:
    """Parse the complete lines of `block` (bytes ending at a newline); returns lines used."""
    totals = _has_totals(block)
    if not totals and not any(gate in block for gate in _GATES):
        return 0
    if b"\x1b" in block:
        block = ANSI.sub(b"", block)
    if b"\r" in block:  # a progress bar's redraws: each is a line of its own
        block = block.replace(b"\r", b"\n")
    starts: dict[int, int] = {}  # the lines to read: start → end
    search = HIT.search
    hit = search(block)
    while hit is not None:
        start = block.rfind(b"\n", 0, hit.start()) + 1
        end = block.find(b"\n", hit.end())
        starts[start] = end = len(block) if end < 0 else end
        hit = search(block, end)
    if totals:
        for m in TOTALS.finditer(block):
            starts[m.start()] = m.end()
    return sum(parse_line(block[start:starts[start]].decode("utf-8", "replace"), into)
               for start in sorted(starts))


def parse_line(line: str, into: MetricSet) -> bool:
    """Parse one cleaned stdout line into `into`; True if it carried anything."""
    if "\x1b" in line:
        line = ANSI_TEXT.sub("", line)
    line = line.rsplit("\r", 1)[-1]
    if m := PREFIX.match(line):
        line = line[m.end():]
    if m := STAMP.match(line):
        into.stamps.append(m.group(1))
        return True
    return any(read(line, into) for read in _CONVENTIONS)


def _conditions(line: str, into: MetricSet) -> bool:
    tagged = TAGGED.match(line)
    rest = tagged.group(2).strip() if tagged else line.strip()
    if rest.startswith("{"):
        return _json_after_tag(tagged.group(1) if tagged else "", rest, into)
    if not any(f"{k}=" in rest for k in CONDITION_KEYS):
        return False
    return _put_fields(PAIR.findall(rest), into, words_are_levels=True)


def _json_after_tag(tag: str, rest: str, into: MetricSet) -> bool:
    try:
        loaded = untrusted.loads(rest)
    except ValueError:  # not JSON, or nested too deep: not a metric line
        return False
    if not isinstance(loaded, dict):
        return False
    if any(k in loaded for k in CONDITION_KEYS):
        return _put_fields([(str(k), v) for k, v in loaded.items()], into,
                           words_are_levels=False)
    if not tag or tag == "METRIC":
        return False
    found = False  # `GAP_TO_BN: {"ln": 0.01}`: a map of conditions to the tag's value
    for cond, raw in loaded.items():
        if (value := number(raw)) is not None:
            into.put_condition([str(cond)], tag.lower(), value)
            found = True
    return found


def _put_fields(fields: list[tuple[str, Any]], into: MetricSet, words_are_levels: bool) -> bool:
    """A condition line's fields: `condition`, then words (on a text line `seed=0` or
    `regime=low_noise`, each a level of the key in the order printed; `metric=acc` names the
    statistics that follow), and numbers. Beside `<cond>/<levels>/<metric>`, the line gives
    AutoResearchClaw's own keys as aliases: `<cond>/<metric>` and `<metric>`."""
    cond: str | None = None
    levels: list[str] = []
    metric = ""
    values: list[tuple[str, float]] = []
    for name, raw in fields:
        text = raw.strip("\"'") if isinstance(raw, str) else raw
        if name in CONDITION_KEYS and cond is None:
            cond = str(text)
        elif name == "metric" and isinstance(text, str) and number(text) is None:
            metric = text
        elif name == "seed" and (not isinstance(raw, str) or words_are_levels or
                                 number(raw) is not None):
            levels.append(str(text))
        elif (value := number(raw)) is not None:
            values.append((name, value))
        elif isinstance(text, str) and words_are_levels:
            levels.append(text)
    if cond is None or not values:
        return False
    for name, value in values:
        key = f"{metric}_{name}" if metric else name
        into.put_condition([cond, *levels], key, value)
        if levels:
            into.put_alias(f"{key_part(cond)}/{key}", value)
        into.put_alias(key, value)
        if metric and name == "mean":  # SUMMARY: the mean is the metric's value
            into.put_alias(f"{key_part(cond)}/{metric}", value)
            into.put_alias(metric, value)
    if not metric and not levels and [n for n, _ in values] == ["metric"]:
        into.put_alias(cond, values[0][1])  # `condition=bn metric=0.9`: the condition's value
    return True


def _metric_line(line: str, into: MetricSet) -> bool:
    m = METRIC_LINE.match(line)
    if not m:
        return False
    pairs = [(name, value) for name, raw in PAIR.findall(m.group(1))
             if (value := number(raw)) is not None]
    step = next((int(v) for n, v in pairs if n == "step" and v == int(v)), None)
    for name, value in pairs:  # `step=` on the line is the step of the line's points
        into.put(name, value, step)
    return bool(pairs)


def _dict_line(line: str, into: MetricSet) -> bool:
    """`{'loss': '0.6929', 'epoch': 1.0}` (HF Trainer 5) or a JSON object, alone on a line."""
    text = line.strip()
    if not (text.startswith("{") and text.endswith("}")) or len(text) > 100_000:
        return False
    try:
        loaded = untrusted.loads(text)
    except ValueError:
        try:
            loaded = ast.literal_eval(text)  # literals only: a Python dict's repr
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return False
    if not isinstance(loaded, dict):
        return False
    values = [(str(k), v) for k, raw in loaded.items()
              if not isinstance(raw, dict | list) and (v := number(raw)) is not None]
    step = next((int(v) for n, v in values if n in ("step", "global_step") and v == int(v)),
                None)
    for name, value in values:
        into.put(name, value, step)
    return bool(values)


def _single(pattern: re.Pattern[str]) -> Any:
    def read(line: str, into: MetricSet) -> bool:
        m = pattern.match(line)
        if not m or (value := number(m.group(2))) is None:
            return False
        into.put(m.group(1).strip(), value)
        return True
    return read


def _bar_postfix(line: str, into: MetricSet) -> bool:
    m = BAR_POSTFIX.search(line)
    if not m:
        return False
    pairs = [(name, value) for name, raw in PAIR.findall(m.group(1) or m.group(2))
             if name not in BAR_SKIPPED and (value := number(raw)) is not None]
    for name, value in pairs:
        into.put(name, value)
    return bool(pairs)


def _pytest(line: str, into: MetricSet) -> bool:
    m = PYTEST_SUMMARY.match(line.strip())
    if not m:
        return False
    counts = {"passed": 0, "failed": 0, "errors": 0}
    for count, kind in PYTEST_COUNT.findall(m.group(1)):
        key = "errors" if kind.startswith("error") else kind
        counts[key] = counts.get(key, 0) + int(count)
    for kind, count in counts.items():
        into.put(f"tests_{kind}", float(count))
    ran = counts["passed"] + counts["failed"] + counts["errors"]
    if ran:
        into.put("pass_rate", counts["passed"] / ran)
    return True


def _coverage(line: str, into: MetricSet) -> bool:
    m = COVERAGE_TOTAL.match(line.strip())
    if not m:
        return False
    into.put("coverage_percent", float(m.group(1)))
    return True


_CONVENTIONS = (_conditions, _metric_line, _dict_line, _single(ASSIGNED), _single(TABLE_ROW),
                _bar_postfix, _single(NAME_VALUE), _pytest, _coverage)
