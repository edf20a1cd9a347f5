from __future__ import annotations

import os
from pathlib import Path

import pytest

from labls.sandbox.capture import MAX_LINE, OutputPump
from labls.sandbox.metrics import MetricSet, merge, parse_harness_lines
from labls.sandbox.provenance import parse_stack_dump, parse_traceback
from labls.sandbox.result_files import parse_json as parse_results_json
from labls.sandbox.stdout_metrics import parse_chunk, parse_line


def parsed(*lines: str) -> MetricSet:
    out = MetricSet()
    for line in lines:
        parse_line(line, out)
    return out


def test_name_value_lines_only_when_alone() -> None:
    m = parsed("val_bpb: 0.99", "  peak_vram_mb:   45060.2", "epoch 3: loss 0.1",
               "note: see 1.5 above", "mfu_percent: 39.80", "x: 1e-3", "time: 12:30")
    assert m.values == {"val_bpb": 0.99, "peak_vram_mb": 45060.2, "mfu_percent": 39.8, "x": 1e-3}


def test_metric_and_tagged_lines() -> None:
    m = parsed("METRIC lr=0.1 acc=0.5 name=foo",
               "PER_SEED condition=bn seed=0 accuracy: 0.981 loss: 0.07",
               "CONDITION_SUMMARY condition=bn accuracy_mean: 0.98 accuracy_std: 0.01",
               'ABLATION {"cond": "no_aug", "seed": 2, "acc": 0.7, "note": "x"}',
               "PER_SEED seed=0 accuracy: 0.5")  # no condition: not read
    printed_keys = {k: v for k, v in m.values.items() if k not in m.aliases}
    assert printed_keys == {"lr": 0.1, "acc": 0.5, "bn/0/accuracy": 0.981, "bn/0/loss": 0.07,
                            "bn/accuracy_mean": 0.98, "bn/accuracy_std": 0.01,
                            "no_aug/2/acc": 0.7}
    assert m.aliases == {"bn/accuracy", "bn/loss", "accuracy", "loss", "accuracy_mean",
                         "accuracy_std", "no_aug/acc"}  # AutoResearchClaw's keys of those lines
    assert m.conditions["bn"] == {"0": {"accuracy": 0.981, "loss": 0.07},
                                  "accuracy_mean": 0.98, "accuracy_std": 0.01}


def test_stamps_and_chunk_prefilter() -> None:
    m = MetricSet()
    block = b"noise\n" * 1000 + b"DATASET_USED: digits\nval: 1\n" + b"\xff\xfe junk\n"
    assert parse_chunk(block, m) == 2
    assert m.stamps == ["digits"] and m.values == {"val": 1.0}
    assert parse_chunk(b"no separators here\n" * 100, MetricSet()) == 0


def test_results_json_and_harness_flattening() -> None:
    r = parse_results_json({"metrics": {"acc": 0.9, "name": "x"},
                            "conditions": {"bn": {"0": {"acc": 0.91}, "acc_mean": 0.9}}})
    assert r.values == {"acc": 0.9, "bn/0/acc": 0.91, "bn/acc_mean": 0.9}
    assert parse_results_json({"loss": 0.3, "tag": "a"}).values == {"loss": 0.3}
    with pytest.raises(ValueError, match="item 0 of the list of conditions"):
        parse_results_json([1, 2])
    h = parse_harness_lines(['{"metrics": {"loss": 1.0}, "step": 1}',
                             '{"metrics": {"loss": 0.5}, "step": 2}', "not json",
                             '{"metrics": {"acc": 0.8}, "condition": "c", "seed": "1"}'])
    assert h.values == {"loss": 0.5, "c/1/acc": 0.8}
    assert h.series["loss"].points() == [(1, 1.0), (2, 0.5)]


def test_a_curve_covers_the_whole_run_in_its_budget_with_first_last_and_extremes() -> None:
    from labls.sandbox.metrics import Curve

    curve = Curve(budget=100)
    n = 60_000  # a minute at 1 kHz
    for i in range(n):
        value = 1.0 / (1 + i) + (5.0 if i == 33_333 else 0.0) - (3.0 if i == 44_444 else 0.0)
        curve.append(i, value)
    points = curve.points()
    assert curve.seen == n and len(points) <= 100 + 3
    steps = [s for s, _ in points]
    assert steps[0] == 0 and steps[-1] == n - 1  # first and last
    assert steps == sorted(steps) and steps[len(steps) // 2] > n / 3  # spread over the run
    assert 33_333 in steps and 44_444 in steps  # the spike and the dip, wherever they fell


def test_step_on_a_metric_line_is_the_step_of_its_points() -> None:
    m = MetricSet()
    for step, loss in ((10, 0.9), (20, 0.7)):
        parse_line(f"METRIC step={step} loss={loss} lr=0.1", m)
    assert m.series["loss"].points() == [(10, 0.9), (20, 0.7)]
    assert m.values["step"] == 20 and m.values["loss"] == 0.7


def test_merge_prefers_better_sources_and_drops_non_finite() -> None:
    stdout = parsed("val_bpb: 1.0", "only_stdout: 2", "bad: nan")
    results = parse_results_json({"val_bpb": 0.9})
    merged = merge({"stdout": stdout, "resultsFile": results})
    assert merged.metrics == {"val_bpb": 0.9, "only_stdout": 2.0}
    assert merged.sources == {"val_bpb": "resultsFile", "only_stdout": "stdout"}
    assert merged.source == "resultsFile" and merged.non_finite == {"bad": "nan"}
    assert merge({"stdout": MetricSet()}).source == "none"


def test_traceback_and_stack_dump_are_mapped_to_the_workspace() -> None:
    work = Path("/s/runs/r1/work")
    log = ("out\nTraceback (most recent call last):\n"
           '  File "/s/runs/r1/work/train.py", line 10, in <module>\n    main()\n'
           '  File "/usr/lib/python3/x.py", line 3, in main\n    f()\n'
           '  File "/s/runs/r1/work/lib/m.py", line 7, in f\n    raise KeyError("k")\n'
           "KeyError: 'k'\n")
    result = parse_traceback(log, work)
    assert result is not None
    frames, exception = result
    assert [(f.rel, f.line) for f in frames] == [("train.py", 10), (None, 3), ("lib/m.py", 7)]
    assert exception == "KeyError: 'k'"
    dump = ('Thread 0x01 (most recent call first):\n  File "/s/runs/r1/work/t.py", line 2 in w\n\n'
            'Current thread 0x02 (most recent call first):\n'
            '  File "/s/runs/r1/work/train.py", line 44 in step\n'
            '  File "/s/runs/r1/work/train.py", line 60 in <module>\n')
    assert [(f.rel, f.line, f.func) for f in parse_stack_dump(dump, work)] == [
        ("train.py", 44, "step"), ("train.py", 60, "<module>")]


def test_pump_bounds_long_lines_and_keeps_metrics_after_them(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)  # as a run's stdout
    pump = OutputPump(log)
    pump.start()
    # a 12 MiB line, written in 1 MiB pieces while the follower reads, crosses several reads,
    # so it goes through the bounded carry
    long_line = b"z" * (MAX_LINE * 192)
    payload = b"a: 1\n" + long_line + b"\nb: 2\n" + b"tail without newline c: 3"
    for i in range(0, len(payload), 1 << 20):
        os.write(fd, payload[i : i + (1 << 20)])
    os.close(fd)
    assert pump.finish(5)
    # (the unterminated last line is read too; a name may hold spaces)
    assert pump.parsed.values == {"a": 1.0, "b": 2.0, "tail without newline c": 3.0}
    assert log.read_bytes() == payload
    assert "z [...]\nb: 2" in pump.tail() and pump.tail().endswith("c: 3")


def test_gpu_sampler_is_inert_without_gpus() -> None:
    from labls.sandbox.gpus import GpuSampler, GpuSlots

    sampler = GpuSampler([])
    sampler.start()
    sampler.stop()
    assert sampler.peak_mb is None and sampler.mean_util is None
    slots = GpuSlots([0, 1], 0)
    assert slots.capacity == 2
    import threading

    never = threading.Event()
    a = slots.acquire(1, never, slots.enqueue())
    b = slots.acquire([1], never, slots.enqueue())
    assert (a.gpus, b.gpus) == ([0], [1])
    slots.release(a)
    assert slots.acquire(None, never, slots.enqueue()).gpus == [0]
    with pytest.raises(ValueError, match="asked for 3"):
        slots.acquire(3, never, slots.enqueue())


def test_slots_are_first_come_first_served_and_woken_not_polled() -> None:
    import threading

    from labls.sandbox.gpus import GpuSlots

    slots = GpuSlots([], 1)
    never = threading.Event()
    held = slots.acquire(None, never, slots.enqueue())
    tickets = [slots.enqueue() for _ in range(8)]
    order: list[int] = []
    done = threading.Barrier(9)

    def take(i: int) -> None:
        slot = slots.acquire(None, never, tickets[i])
        order.append(i)
        slots.release(slot)
        done.wait()

    threads = [threading.Thread(target=take, args=(i,)) for i in reversed(range(8))]
    for t in threads:  # started newest first: the tickets, not the threads, decide
        t.start()
    cancelled = threading.Event()
    late = slots.enqueue()
    def quit_waiting() -> None:
        with pytest.raises(InterruptedError):
            slots.acquire(None, cancelled, late)

    quitter = threading.Thread(target=quit_waiting)
    quitter.start()
    cancelled.set()
    slots.wake()  # a cancelled waiter leaves at once, without a timeout to elapse
    quitter.join(5)
    assert not quitter.is_alive()
    slots.release(held)
    done.wait(timeout=10)
    assert order == list(range(8))


def test_pytest_summary_and_coverage_total() -> None:
    m = MetricSet()
    block = (b"tests/test_a.py ..F.\n"
             b"=================== 3 passed, 1 failed, 2 skipped in 0.42s ===================\n"
             b"Name      Stmts   Miss  Cover\n"
             b"TOTAL       200     30    85%\n")
    parse_chunk(block, m)
    assert m.values == {"tests_passed": 3, "tests_failed": 1, "tests_errors": 0,
                        "tests_skipped": 2, "pass_rate": 0.75, "coverage_percent": 85.0}
    quiet = parsed("12 passed in 1.05s")
    assert quiet.values["pass_rate"] == 1.0 and quiet.values["tests_passed"] == 12
    branch = parsed("TOTAL       200     30     40      4    83.5%")
    assert branch.values == {"coverage_percent": 83.5}


def test_finite_values_drop_a_nan_until_the_name_is_finite_again() -> None:
    from labls.sandbox.metrics import MetricSet
    from labls.sandbox.records import RunRecord

    found = MetricSet()
    found.put("loss", 0.5)
    found.put("loss", float("nan"))
    found.put("acc", 0.9)
    assert found.finite_values() == {"acc": 0.9}
    found.put("loss", 0.25)
    assert found.finite_values() == {"loss": 0.25, "acc": 0.9}
    record = RunRecord("r", "running", "t.py", metrics={f"k{i}": float(i) for i in range(10)})
    assert record.latest_metrics() == "k6=6, k7=7, k8=8, k9=9"
