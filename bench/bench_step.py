"""Overhead of one experiment step beyond its run (apply, compare, commit or restore, ledger) on a
git repository of 1,000 files, optionally with untracked data beside them. Two measures: the
step's wall minus the wait for its run's record (`*_overhead`), and the step's wall minus the
run's own process time (`*_overhead_vs_script`: this one also holds the run's launch, its work
folder included). Run folders are kept as a loop keeps them (`run.keep`'s default).
Writes bench/out/step.json.

    .venv/bin/python bench/bench_step.py [--files 1000] [--steps 10] [--untracked-mb 200]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

from common import summary_ms, write_results

from labls.lab.experiment import Experiment
from labls.sandbox.config import Config, merge
from labls.sandbox.engine import Engine


def git(ws: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(ws), *args], check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--untracked-mb", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        for i in range(args.files - 1):
            folder = ws / f"pkg{i // 100}"
            folder.mkdir(exist_ok=True)
            (folder / f"mod{i}.py").write_text(f"VALUE_{i} = {i}\n" * 20)
        (ws / "train.py").write_text("LR = 0\nprint(f'loss: {1.0 + abs(LR - 50) / 100:.4f}')\n")
        git(ws, "init", "-q")
        git(ws, "add", ".")
        git(ws, "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "start")
        if args.untracked_mb:
            (ws / "data").mkdir()
            with open(ws / "data" / "shard.bin", "wb") as f:
                for _ in range(args.untracked_mb):
                    f.write(b"\x01" * (1 << 20))
        cfg, _ = merge(Config(), {"metric": {"name": "loss"}})
        engine = Engine(ws, cfg)
        run_seconds: list[float] = []
        script_seconds: list[float] = []

        def wait(run_id: str):
            t0 = time.perf_counter()
            record = engine.wait(run_id)
            run_seconds.append(time.perf_counter() - t0)
            script_seconds.append(record.duration_sec or 0.0)
            return record

        exp = Experiment(engine, cfg, wait)
        lr = 0
        overhead: dict[str, list[float]] = {"keep": [], "discard": []}
        vs_script: dict[str, list[float]] = {"keep": [], "discard": []}
        for i in range(args.steps + 1):
            new = lr + 5 if i % 2 == 0 else lr + 200  # closer to 50: keep; far: discard
            edit = {"format": "searchReplace",
                    "text": f"train.py\n<<<<<<< SEARCH\nLR = {lr}\n=======\nLR = {new}\n"
                            ">>>>>>> REPLACE\n"}
            run_seconds.clear()
            script_seconds.clear()
            t0 = time.perf_counter()
            result = exp.step(f"LR {new}", edit, "train.py")
            total = time.perf_counter() - t0
            if result.verdict == "keep":
                lr = new
            if i == 0:
                continue  # the first step also runs the baseline
            # the run itself = engine.start (registry row) + the wait for its record
            overhead[result.verdict].append(total - sum(run_seconds))
            vs_script[result.verdict].append(total - sum(script_seconds))
        engine.close()
    results: dict[str, object] = {f"{k}_overhead": summary_ms(v)
                                  for k, v in overhead.items() if v}
    results.update({f"{k}_overhead_vs_script": summary_ms(v) for k, v in vs_script.items() if v})
    results["files"] = args.files
    results["untracked_mb"] = args.untracked_mb
    write_results("step", results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
