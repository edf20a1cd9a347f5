"""The one converter to the wire: names, omissions, computed values, strict JSON, no copies."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from labls.lab.compare import Comparison
from labls.lab.loop import LoopSpec, LoopState
from labls.sandbox.provenance import Frame
from labls.sandbox.records import ErrorKind, RunRecord, RunState, make_error
from labls.sandbox.wire import named, to_wire


@dataclass
class Point:
    step_index: int
    value: float
    secret: str = field(default="", metadata=named(None))
    owner_id: str = field(default="", metadata=named("runId"))

    def wire_extra(self) -> dict[str, bool]:
        return {"hasOwner": bool(self.owner_id)}


def test_fields_are_camel_cased_renamed_omitted_and_extended() -> None:
    wire = to_wire(Point(3, 0.5, secret="hunter2", owner_id="r1"))
    assert wire == {"stepIndex": 3, "value": 0.5, "runId": "r1", "hasOwner": True}


def test_non_finite_numbers_become_null_at_any_depth() -> None:
    wire = to_wire({"a": [math.nan, {"b": math.inf}], "c": Point(1, -math.inf)})
    assert wire == {"a": [None, {"b": None}], "c": {"stepIndex": 1, "value": None,
                                                      "runId": "", "hasOwner": False}}
    json.dumps(wire, allow_nan=False)


def test_a_flat_finite_map_is_passed_without_a_copy() -> None:
    record = RunRecord("r1", RunState.SUCCEEDED, "train.py",
                       metrics={f"m{i}": float(i) for i in range(1000)})
    wire = record.to_wire()
    assert wire["metrics"] is record.metrics
    assert wire["state"] == "succeeded" and type(wire["state"]) is str
    record.metrics["bad"] = math.nan  # a non-finite value: now it must be copied
    assert record.to_wire()["metrics"]["bad"] is None and math.isnan(record.metrics["bad"])


def test_enums_travel_as_their_values() -> None:
    wire = to_wire(make_error(ErrorKind.DATASET_MISSING, "no digits"))
    assert wire["kind"] == "datasetMissing" and type(wire["kind"]) is str


def test_the_lab_shapes_keep_their_documented_names() -> None:
    comparison = to_wire(Comparison("acc", "max", 0.9, 0.8, 0.1, 12.5, "improvement", "r2",
                                    "r1"))
    assert comparison["runId"] == "r2" and comparison["baselineId"] == "r1"
    assert "currentId" not in comparison
    frame = to_wire(Frame("/w/train.py", 7, "main", "train.py"))
    assert frame == {"file": "train.py", "line": 7, "function": "main", "workspace": True}
    state = to_wire(LoopState("l1", LoopSpec(iterations=2), prepared={"runId": "p"}))
    assert state["loopId"] == "l1" and state["prepare"] == {"runId": "p"}
    assert state["spec"]["timeBudgetSec"] is None and state["spec"]["iterations"] == 2
