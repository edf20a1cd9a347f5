"""The labls harness helper: structured metrics without parsing stdout.

    import labls_harness as lh
    lh.log_metrics(accuracy=0.98, loss=0.07, condition="bn", seed=0)   # per-seed
    lh.log_metrics(val_bpb=1.02, step=100)                            # a series point
    lh.log_metrics(val_bpb=0.99)                                      # a headline number

Each call appends one JSON line to the file named by `$LABLS_METRICS`. Outside labls (the
variable unset) the calls do nothing, so scripts run unchanged by hand. Standard library only.
"""

import json
import math
import os
import time


def log_metrics(step=None, condition=None, seed=None, **metrics):
    path = os.environ.get("LABLS_METRICS")
    if not path:
        return
    clean = {}
    for name, value in metrics.items():
        value = float(value)
        clean[name] = value if math.isfinite(value) else str(value)
    record = {"t": time.time(), "metrics": clean}
    if step is not None:
        record["step"] = int(step)
    if condition is not None:
        record["condition"] = str(condition)
    if seed is not None:
        record["seed"] = str(seed)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


_stamped: list = []


def dataset_used(name):
    """Print the provenance stamp once, however often it is called."""
    if not _stamped:
        _stamped.append(name)
        print(f"DATASET_USED: {name}", flush=True)  # noqa: T201 # wire-safe: runs in the sandbox
