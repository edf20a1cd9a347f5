"""A record with a big map is encoded, stored and read back in parts, and stays the same record:
what the interpreter is held for at a time is one part, never the whole map."""

from __future__ import annotations

import json
import threading
import time

from labls.sandbox.records import PART_ENTRIES, RunRecord, join_parts, split_wire, write_json
from labls.sandbox.registry import Registry


def wide(n: int) -> RunRecord:
    metrics = {f"k{i}": i + 0.5 for i in range(n)}
    return RunRecord("r1", "succeeded", "wide.py", metrics=metrics,
                     metric_sources=dict.fromkeys(metrics, "stdout"),
                     structured={"nonFinite": {}}, error=None)


def test_split_and_join_give_back_the_same_wire_record() -> None:
    wire = wide(2 * PART_ENTRIES + 7).to_wire()
    head, parts = split_wire(wire)
    assert head["metrics"] == {} and head["metricSources"] == {}
    assert [name for name, _ in parts] == ["metrics"] * 3 + ["metricSources"] * 3
    assert max(len(json.loads(text)) for _, text in parts) == PART_ENTRIES
    assert join_parts(json.loads(json.dumps(head)), parts) == wire


def written(tmp_path, wire):
    write_json(tmp_path / "results.json", wire)
    return json.loads((tmp_path / "results.json").read_text())


def test_a_small_record_is_one_text(tmp_path) -> None:
    wire = wide(3).to_wire()
    assert split_wire(wire) == (wire, [])
    assert written(tmp_path, wire) == wire


def test_the_one_text_of_a_big_record_is_that_record(tmp_path) -> None:
    wire = {**wide(PART_ENTRIES * 2).to_wire(), "series": {"loss": [[1, 0.5]]}}
    again = written(tmp_path, wire)
    assert again == wire
    assert list(again) == list(wire)  # fields in order


def test_the_registry_keeps_a_big_record_whole(tmp_path) -> None:
    registry = Registry(tmp_path / "labls.db")
    try:
        record = wide(3 * PART_ENTRIES + 1)
        registry.save(record)
        again = registry.get("r1")
        assert again is not None and again.metrics == record.metrics
        assert again.metric_sources == record.metric_sources
        record.metrics = {"only": 1.0}  # saved again, smaller: no part of the old one is left
        record.metric_sources = {"only": "stdout"}
        registry.save(record)
        assert registry.get("r1").metrics == {"only": 1.0}
    finally:
        registry.close()


def test_a_page_of_a_stored_record_is_that_slice_of_the_whole(tmp_path) -> None:
    record = wide(3 * PART_ENTRIES + 5)
    record.metric_sources = {k: f"s{i % 3}" for i, k in enumerate(record.metrics)}
    names = list(record.metrics)
    registry = Registry(tmp_path / "labls.db")
    try:
        registry.save(record)
        for offset, limit in [(0, PART_ENTRIES), (PART_ENTRIES - 2, 5), (2 * PART_ENTRIES, 7),
                              (3 * PART_ENTRIES, PART_ENTRIES), (10**7, 3), (5, 0)]:
            chosen = names[offset:offset + limit]
            for page in (registry.get("r1", (offset, limit)), record.page(offset, limit)):
                assert page is not None and list(page.metrics) == chosen, (offset, limit)
                assert page.metric_sources == {k: record.metric_sources[k] for k in chosen}
                assert page.metrics_count == len(names)
                following = offset + len(chosen)
                assert page.metrics_next == (following if following < len(names) else None)
        small = wide(3)
        small.run_id = "r2"
        registry.save(small)
        assert registry.get("r2", (1, 1)).metrics == {"k1": 1.5}
        assert registry.get("r2", (0, 10)).metrics_next is None
        assert registry.get("nope", (0, 10)) is None
    finally:
        registry.close()


def longest_wait(work, *args) -> float:
    """The longest another thread waited for the interpreter while `work(*args)` ran: a thread
    that asks for a 1 ms sleep, over and over, and measures how late it wakes."""
    worst = 0.0
    stop = threading.Event()

    def tick() -> None:
        nonlocal worst
        while not stop.is_set():
            t0 = time.perf_counter()
            time.sleep(0.001)
            worst = max(worst, time.perf_counter() - t0)

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        work(*args)
    finally:
        stop.set()
        ticker.join()
    return worst


def test_no_thread_waits_for_the_whole_map(tmp_path) -> None:
    wire = wide(400_000).to_wire()
    whole = longest_wait(json.dumps, wire)
    parted = longest_wait(lambda w: write_json(tmp_path / "r.json", w), wire)
    # control: one json.dumps of the whole map holds the interpreter far longer than a part
    assert whole > 0.1, whole
    assert parted < whole / 4, (parted, whole)
