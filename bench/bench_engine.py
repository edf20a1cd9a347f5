"""Run-engine costs. Writes bench/out/engine.json.

1. Launch: engine start → exit of a script that does nothing, vs. `python -c pass` directly and
   inside bwrap alone (the same flags the engine uses, minus labls's bookkeeping).
2. `labls run` of a 2-second script vs. running it with the interpreter directly, both with the
   dev venv (an editable install, whose import hook every interpreter start pays: the CLI and
   the sandboxed script, against one start for the direct run) and with a regular install of
   labls's wheel into a fresh venv, as `pip install labls` gives a user.
3. Output: a script printing 500 MB, in 1 MB writes and as `print` of 100-byte lines, (a) to
   /dev/null and (b) to a file directly (default buffering; and line-buffered, as labls runs it),
   (c) through the engine, (d) through `subprocess.run(capture_output=True)`; wall time and the
   peak RSS of the capturing process.

    .venv/bin/python bench/bench_engine.py [--mb 500] [--launches 20]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import write_results

HERE = Path(__file__).resolve().parent
PY = sys.executable
SOURCES = ("server", "sandbox", "lab", "prompts")
BLOCKS = """
import sys
block = ("x" * 99 + "\\n") * 10000
for _ in range({n}):
    sys.stdout.write(block)
print("val_bpb: 1.0")
"""
LINES = """
line = "x" * 99
for _ in range({n} * 10000):
    print(line)
print("val_bpb: 1.0")
"""


def timed(cmd: list[str], **kw) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, **kw)
    return time.perf_counter() - t0


def median_ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1e3


def launch(ws: Path, n: int) -> dict[str, float]:
    from labls.sandbox.config import Config
    from labls.sandbox.engine import Engine, RunRequest

    (ws / "noop.py").write_text("print('ok: 1')\n")
    engine = Engine(ws, Config(dataset_cache_root=str(ws / "cache")))
    direct, in_bwrap, via_engine = [], [], []
    bwrap = [shutil.which("bwrap") or "bwrap", "--die-with-parent", "--unshare-pid",
             "--unshare-net", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
             "--tmpfs", "/tmp", "--clearenv", "--", PY, "-c", "pass"]
    hardened_cmd, fds = _hardened(ws)
    in_hardened = []
    for _ in range(n):
        direct.append(timed([PY, "-c", "pass"]))
        in_bwrap.append(timed(bwrap))
        in_hardened.append(timed(["/bin/sh", "-c", shlex.join(hardened_cmd) + fds]))
        t0 = time.perf_counter()
        rec = engine.start(RunRequest("noop.py"))
        engine.wait(rec.run_id)
        via_engine.append(time.perf_counter() - t0)
    engine.close()
    return {"python_direct_ms": median_ms(direct), "python_in_bwrap_ms": median_ms(in_bwrap),
            "python_in_hardened_bwrap_ms": median_ms(in_hardened),
            "engine_start_to_record_ms": median_ms(via_engine)}


def _hardened(ws: Path) -> tuple[list[str], str]:
    """`python -c pass` in the sandbox a run gets (no uid drop, seccomp, allow-list), without
    the engine around it: what the hardening itself costs."""
    from labls.sandbox import isolation, syscall_filter

    folder = ws / "hardened"
    for sub in ("work", "probe", "home", "etc"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    bpf = folder / "seccomp.bpf"
    if not bpf.exists():
        syscall_filter.write(bpf)
    uid = isolation.RUN_UID_BASE if isolation.privileged() else None
    for sub in ("work", "probe", "home"):
        if uid is not None:
            os.chown(folder / sub, uid, uid)
    spec = isolation.SandboxSpec(
        kind="bwrap", network="none", python=PY, argv=["-c", "pass"], work_dir=folder / "work",
        run_dir=folder, probe_dir=folder / "probe", home_dir=folder / "home",
        harness_dir=folder / "etc", dataset_root=ws / "cache",
        readonly=isolation.interpreter_roots(PY), run_uid=uid, seccomp=bpf,
        etc_files=isolation.identity_files(folder / "etc", uid or os.getuid(), folder / "home",
                                           "none", "192.0.2.53"))
    return isolation.command(spec), f" {isolation.SECCOMP_FD}<{shlex.quote(str(bpf))}"


def regular_install(tmp: Path) -> str:
    """A fresh venv holding labls's wheel (the `labls run` path needs no other package)."""
    venv, wheels = tmp / "regular-venv", tmp / "wheels"
    subprocess.run([PY, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(wheels), str(HERE.parent)], check=True, capture_output=True)
    subprocess.run([sys.base_prefix + "/bin/python3", "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin/pip"), "install", "-q", "--no-deps",
                    *map(str, wheels.glob("*.whl"))], check=True, capture_output=True)
    return str(venv / "bin/python")


def cli_two_seconds(ws: Path, n: int, python: str = PY) -> dict[str, float]:
    (ws / "two.py").write_text("import time\ntime.sleep(2)\nprint('val_bpb: 1.0')\n")
    (ws / "labls.toml").write_text(f'[run]\npython = "{python}"\n')
    labls = str(Path(python).with_name("labls"))
    direct, via = [], []
    for _ in range(n):  # interleaved, so a noisy spell of the machine hits both alike
        direct.append(timed([python, "two.py"], cwd=ws, stdout=subprocess.DEVNULL))
        via.append(timed([labls, "run", "two.py"], cwd=ws, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL))
    return {"direct_s": statistics.median(direct), "labls_run_s": statistics.median(via),
            "overhead_pct": (statistics.median(via) / statistics.median(direct) - 1) * 100}


def _child_peak(code: str, ws: Path) -> tuple[float, float]:
    """Run `code` in a fresh interpreter; its wall time and its own peak RSS (MiB)."""
    out = subprocess.run([PY, "-c", code], cwd=ws, capture_output=True, text=True, check=True)
    wall, rss = out.stdout.strip().splitlines()[-1].split()
    return float(wall), float(rss)


def _settle() -> None:
    """Every case starts alike: no dirty pages (the last case's writeback would throttle this
    one) and, as root, an emptied page cache (else a case that follows a deleted 500 MB file
    writes into freed pages, and one that does not must first reclaim)."""
    os.sync()
    with contextlib.suppress(OSError):
        Path("/proc/sys/vm/drop_caches").write_text("1\n")


def flood(ws: Path, megabytes: int, script: str, reps: int) -> dict[str, float]:
    """`script` printing `megabytes` MB: to /dev/null and to a file directly (default buffering,
    and line-buffered as labls runs it), through the engine, through `capture_output`. Cases
    interleaved, `reps` rounds, medians (the page cache makes single big writes erratic)."""
    (ws / "flood.py").write_text(script.format(n=megabytes))
    (ws / "line_buffered.py").write_text(
        "import runpy, sys\nsys.stdout.reconfigure(line_buffering=True)\n"
        "runpy.run_path('flood.py', run_name='__main__')\n")
    rss = "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024"
    quiet = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}

    def direct(out: str, script: str) -> str:
        return (f"import subprocess, time, resource\nt=time.perf_counter()\n"
                f"with open({out!r}, 'wb') as out:\n"
                f"    subprocess.run([{PY!r}, {script!r}], stdout=out, check=True, env={quiet!r})\n"
                f"print(time.perf_counter()-t, {rss})")

    engine_code = (f"import time, resource\nfrom pathlib import Path\n"
                   f"from labls.sandbox.config import Config\n"
                   f"from labls.sandbox.engine import Engine, RunRequest\n"
                   f"e = Engine(Path('.'), Config(dataset_cache_root='cache'))\n"
                   f"t=time.perf_counter()\nr = e.start(RunRequest('flood.py', timeout_sec=600))\n"
                   f"r = e.wait(r.run_id)\nassert r.state == 'succeeded', r.error\n"
                   f"print(time.perf_counter()-t, {rss})")
    capture_code = (f"import subprocess, time, resource\nt=time.perf_counter()\n"
                    f"subprocess.run([{PY!r}, 'flood.py'], capture_output=True, check=True, "
                    f"env={quiet!r})\nprint(time.perf_counter()-t, {rss})")
    log = str(ws / "direct.log")
    cases = {
        "devnull": direct("/dev/null", "flood.py"),
        "file": direct(log, "flood.py"),
        "file_line_buffered": direct(log, "line_buffered.py"),
        "engine": engine_code,
        "capture_output": capture_code,
    }
    walls: dict[str, list[float]] = {name: [] for name in cases}
    results = {}
    for _ in range(reps):
        for name, code in cases.items():
            (ws / "direct.log").unlink(missing_ok=True)
            shutil.rmtree(ws / ".labls" / "runs", ignore_errors=True)
            _settle()
            wall, peak = _child_peak(code, ws)
            walls[name].append(wall)
            results[f"{name}_peak_rss_mb"] = max(peak, results.get(f"{name}_peak_rss_mb", 0))
    (ws / "direct.log").unlink(missing_ok=True)
    results.update({f"{name}_s": statistics.median(xs) for name, xs in walls.items()})
    for base in ("devnull", "file", "file_line_buffered"):
        results[f"engine_vs_{base}"] = results["engine_s"] / results[f"{base}_s"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=500)
    parser.add_argument("--launches", type=int, default=20)
    parser.add_argument("--cli-reps", type=int, default=5)
    parser.add_argument("--output-reps", type=int, default=3)
    parser.add_argument("--parts", default="launch,cli,output", help="comma-separated")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    # Bytecode as an install leaves it: without this, a PYTHONDONTWRITEBYTECODE shell would make
    # every CLI start compile whichever of labls's modules changed since their .pyc was written.
    subprocess.run([PY, "-m", "compileall", "-q", *(str(HERE.parent / d) for d in SOURCES)],
                   check=True, stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory(dir=Path.home()) as tmp:
        ws, install = Path(tmp) / "ws", Path(tmp) / "install"  # the venv outside the workspace
        ws.mkdir()
        install.mkdir()
        results: dict[str, dict[str, float]] = {}
        if "launch" in parts:
            results["launch"] = launch(ws, args.launches)
        if "cli" in parts:
            results["cli_2s_script"] = cli_two_seconds(ws, args.cli_reps)
            results["cli_2s_script_regular_install"] = cli_two_seconds(
                ws, args.cli_reps, regular_install(install))
        if "output" in parts:
            results[f"output_{args.mb}mb_blocks"] = flood(ws, args.mb, BLOCKS, args.output_reps)
            results[f"output_{args.mb}mb_lines"] = flood(ws, args.mb, LINES, args.output_reps)
    write_results("engine", results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
