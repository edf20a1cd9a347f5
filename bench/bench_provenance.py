"""Provenance at scale: a run that reads N distinct files under the dataset root (a root
engine, so the reads are watched from outside through the dataset view), from its last line to
its final record. Writes bench/out/provenance.json.

    .venv/bin/python bench/bench_provenance.py [--files 40000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import write_results

SCRIPT = """
import os, time
root = os.path.join(os.environ["LABLS_DATASET_ROOT"], "shards")
for name in sorted(os.listdir(root)):
    with open(os.path.join(root, name), "rb") as f:
        f.read()
print("DATASET_USED: shards")
print("val_bpb: 0.5")
print(f"END {time.time()!r}", flush=True)
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=40_000)
    args = parser.parse_args()
    from labls.sandbox.config import Config, DatasetDecl
    from labls.sandbox.engine import Engine, RunRequest

    with tempfile.TemporaryDirectory(prefix="labls-bench-prov-") as tmp:
        base = Path(tmp)
        shards = base / "cache" / "shards"
        shards.mkdir(parents=True)
        for i in range(args.files):
            (shards / f"{i:07d}.bin").write_bytes(b"x" * 64)
        ws = base / "ws"
        ws.mkdir()
        (ws / "read.py").write_text(SCRIPT)
        cfg = Config(dataset_cache_root=str(base / "cache"),
                     datasets={"shards": DatasetDecl("shards", ["0000000.bin"])})
        engine = Engine(ws, cfg)
        try:
            record = engine.wait(engine.start(RunRequest("read.py", timeout_sec=600)).run_id)
            done = time.time()
        finally:
            engine.close()
        assert record is not None and record.state == "succeeded", record.error
        end = next(ln for ln in record.log_tail.splitlines() if ln.startswith("END "))
        prov = record.provenance
        result = {"files": args.files, "run_end_to_record_sec": done - float(end.split()[1]),
                  "verdict": prov.get("verdict"), "files_read_count": prov.get("filesReadCount"),
                  "files_read_listed": len(prov.get("filesRead", []))}
    write_results("provenance", result)


if __name__ == "__main__":
    main()
