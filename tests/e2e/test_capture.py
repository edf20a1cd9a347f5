"""Metric capture end to end, through real runs: NaN caught while the run prints (and the same
run with the rule off as the control), result files merged from both places with a warning for
one that cannot be read, and the out-of-memory and missing-data errors of the libraries."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

DIVERGING = """
    import time
    for step in range(40):
        loss = float("nan") if step >= 2 else 1.0 / (step + 1)
        print(f"val_bpb: {loss}", flush=True)
        time.sleep(0.1)
    print("REACHED THE END", flush=True)
"""


def test_a_diverging_run_is_stopped_at_once_at_its_printing_line(lab) -> None:
    record = lab.run(DIVERGING, timeout=60)
    assert record.state == "failed" and record.error is not None
    assert record.error["kind"] == "nan", record.error
    assert (record.error["file"], record.error["line"]) == ("exp.py", 5)  # the print
    assert "val_bpb became nan" in record.error["message"]
    assert "REACHED THE END" not in Path(record.log_path).read_text()
    assert record.duration_sec is not None and record.duration_sec < 3.0


def test_the_control_a_run_with_the_rule_off_runs_to_the_end(lab) -> None:
    record = lab.run(DIVERGING, timeout=60, stop_on_nan=False)
    assert "REACHED THE END" in Path(record.log_path).read_text()
    assert record.duration_sec is not None and record.duration_sec >= 4.0
    assert record.state == "failed" and record.error["kind"] == "nan"  # judged at the end


def test_grace_values_and_other_metrics_only_warn(lab) -> None:
    record = lab.run("""
        import time
        print("grad_norm: inf", flush=True)
        for step in range(40):
            print(f"val_bpb: {'nan' if step in (1, 5, 6, 7) else 0.5}", flush=True)
            time.sleep(0.05)
        print("REACHED THE END", flush=True)
    """, timeout=60, nan_grace_steps=2)
    log = Path(record.log_path).read_text()
    assert "REACHED THE END" not in log and record.error["kind"] == "nan"
    assert log.count("val_bpb: nan") >= 4  # step 1 recovered; 5, 6 and 7 are three in a row
    warned = [w for w in record.warnings if w.get("code") == "non-finite"]
    assert [w["metric"] for w in warned] == ["grad_norm"]


def test_result_files_in_both_places_are_merged_and_a_bad_one_warned(lab) -> None:
    record = lab.run("""
        import json, os
        os.makedirs("results", exist_ok=True)
        json.dump({"conditions": {"bn": {"metrics": {"acc": 0.92}}}}, open("results.json", "w"))
        json.dump({"val_bpb": 1.5}, open("results/results.json", "w"))
        open("results.csv", "w").write("method,acc\\nln,0.8\\n")
        open("results/results.csv", "w").write("not, a, table\\n")
    """)
    assert record.state == "succeeded", record.error
    assert record.metrics == {"bn/acc": 0.92, "val_bpb": 1.5, "ln/acc": 0.8}
    assert record.structured["resultFiles"] == [
        {"path": "results.json", "values": 1}, {"path": "results/results.json", "values": 1},
        {"path": "results.csv", "values": 1}]
    bad = [w for w in record.warnings if w.get("code") == "result-file"]
    assert len(bad) == 1 and "results/results.csv was not read" in bad[0]["message"]


def test_a_malformed_results_json_is_a_warning_not_silence(lab) -> None:
    record = lab.run("""
        open("results.json", "w").write('{"acc": 0.9,')
        print("val_bpb: 1.0")
    """)
    assert record.state == "succeeded" and record.metrics == {"val_bpb": 1.0}
    assert any(w.get("code") == "result-file" and "results.json" in w["message"]
               for w in record.warnings), record.warnings


@pytest.mark.parametrize(("raised", "kind"), [
    ('raise MemoryError()', "oom"),
    ('class _ArrayMemoryError(MemoryError): pass\n'
     'raise _ArrayMemoryError("Unable to allocate 74.5 GiB for an array with shape (10000000000,)'
     ' and data type float64")', "oom"),
    ('raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: '
     'can\'t allocate memory: you tried to allocate 80000000000 bytes.")', "oom"),
    ('class OutOfMemoryError(RuntimeError): pass\n'
     'raise OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")', "oom"),
    ('raise RuntimeError("Dataset not found. You can use download=True to download it")',
     "datasetMissing"),
    ('class DatasetNotFoundError(FileNotFoundError): pass\n'
     'raise DatasetNotFoundError("Dataset \'imdb\' doesn\'t exist on the Hub or cannot be '
     'accessed.")', "datasetMissing"),
    ('raise RuntimeError("shapes do not match")', "exception"),
])
def test_error_kinds_of_the_libraries(lab, raised: str, kind: str) -> None:
    record = lab.run(textwrap.dedent(raised) + "\n")
    assert record.state == "failed" and record.error["kind"] == kind, record.error
