"""A run's launch in a real ML workspace vs a one-file one. Writes bench/out/workspace.json.

The heavy workspace is a git repository of 10,000 tracked source files, plus an untracked 1 GB
checkpoint, an un-ignored venv-shaped tree of 16,000 files and a `node_modules` of 10,000 files.
Two phases, each of interleaved rounds (one-file, heavy), `sync` before each: engine `start()`
→ final record of a no-op script with the copy-on-write work view (the default for a root
engine), then with the copying fallback (the view made unavailable, as on a kernel without it;
fewer rounds, each copy's run folder deleted once measured, since each holds the 1 GB).
Also the disk each run's folder takes (`du` of the run folder; the run writes nothing).

    .venv/bin/python bench/bench_workspace.py [--rounds 15] [--copy-rounds 3] [--ckpt-mb 1024]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from common import write_results


def git(ws: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(ws), *args], check=True, capture_output=True)


def many(root: Path, count: int, text: str = "x = 1\n", per_dir: int = 100) -> None:
    for i in range(count):
        folder = root / f"d{i // per_dir:04d}"
        if i % per_dir == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:05d}.py").write_text(text)


def workspaces(base: Path, ckpt_mb: int) -> tuple[Path, Path]:
    small = base / "one-file"
    small.mkdir()
    heavy = base / "heavy"
    many(heavy / "src", 10_000)
    git(heavy, "init", "-q")
    git(heavy, "add", ".")
    git(heavy, "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "src")
    with open(heavy / "checkpoint.pt", "wb") as f:
        block = b"\x01" * (1 << 20)
        for _ in range(ckpt_mb):
            f.write(block)
    many(heavy / ".venv" / "lib" / "python3.11" / "site-packages", 16_000)
    many(heavy / "node_modules", 10_000, "module.exports = 1\n")
    for ws in (small, heavy):
        (ws / "noop.py").write_text("print('ok: 1')\n")
    return small, heavy


@contextlib.contextmanager
def copying_fallback() -> Iterator[None]:
    """The engine as on a kernel without the view: its mount refused, so it copies."""
    from labls.sandbox import engine, observe

    def unavailable(*args: object, **kw: object) -> None:
        raise observe.ObserverUnavailable(38, "disabled by the benchmark")

    saved = engine.WorkView
    engine.WorkView = unavailable  # type: ignore[assignment,misc]
    try:
        yield
    finally:
        engine.WorkView = saved  # type: ignore[misc]


def one_run(ws: Path, cache: Path, remove: bool = False) -> tuple[float, int, str]:
    from labls.sandbox.config import Config
    from labls.sandbox.engine import Engine, RunRequest

    engine = Engine(ws, Config(dataset_cache_root=str(cache)))
    try:
        t0 = time.perf_counter()
        record = engine.wait(engine.start(RunRequest("noop.py")).run_id)
        elapsed = time.perf_counter() - t0
    finally:
        engine.close()
    assert record is not None and record.state == "succeeded", record
    run_dir = Path(record.log_path).parent
    du = subprocess.run(["du", "-sk", str(run_dir)], capture_output=True, text=True, check=True)
    if remove:
        shutil.rmtree(run_dir)
    return elapsed, int(du.stdout.split()[0]), str(record.sandbox.get("workFolder"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--copy-rounds", type=int, default=3)
    parser.add_argument("--ckpt-mb", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="labls-bench-ws-") as tmp:
        base = Path(tmp)
        t0 = time.perf_counter()
        small, heavy = workspaces(base, args.ckpt_mb)
        made = time.perf_counter() - t0
        cache = base / "cache"
        cache.mkdir()
        times: dict[str, list[float]] = {}
        disk: dict[str, list[int]] = {}
        kinds: dict[str, str] = {}
        for mode, rounds in (("view", args.rounds), ("copy", args.copy_rounds)):
            subprocess.run(["sync"], check=True)
            for _ in range(rounds):
                for name, ws in (("one-file", small), ("heavy", heavy)):
                    with copying_fallback() if mode == "copy" else contextlib.nullcontext():
                        elapsed, kb, kind = one_run(ws, cache, remove=mode == "copy")
                    key = f"{mode}/{name}"
                    times.setdefault(key, []).append(elapsed)
                    disk.setdefault(key, []).append(kb)
                    kinds[key] = kind
        result = {key: {"median_ms": statistics.median(v) * 1e3, "max_ms": max(v) * 1e3,
                        "run_folder_kb_median": statistics.median(disk[key]),
                        "work_folder": kinds[key]} for key, v in times.items()}
        for mode in ("view", "copy")[: 2 if args.copy_rounds else 1]:
            result[f"{mode}/heavy_over_one_file"] = (result[f"{mode}/heavy"]["median_ms"]
                                                     / result[f"{mode}/one-file"]["median_ms"])
        result["workspace_built_sec"] = made
        result["rounds"] = args.rounds
        result["ckpt_mb"] = args.ckpt_mb
    write_results("workspace", result)


if __name__ == "__main__":
    main()
