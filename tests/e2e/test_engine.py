"""The run engine with real processes in real namespaces (CPU only)."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from labls.sandbox.engine import Engine, RunInputError, RunRequest
from labls.sandbox.records import RunRecord
from labls.sandbox.registry import Registry
from tests.helpers import trust


def test_metrics_of_every_convention_are_merged(lab) -> None:
    record = lab.run(f"""
        import json, labls_harness
        data = open("{lab.root}/MNIST/raw/train-images-idx3-ubyte", "rb").read()
        print("DATASET_USED: MNIST")
        print("PER_SEED condition=bn seed=0 accuracy: 0.981 loss: 0.07")
        print('PER_SEED {{"condition": "ln", "seed": 1, "accuracy": 0.97}}')
        print("CONDITION_SUMMARY cond=bn accuracy_mean: 0.98")
        print("training done, epoch 3/3")
        print("---")
        print("val_bpb:          0.9979")
        print("METRIC lr=0.001 steps=120")
        json.dump({{"metrics": {{"test_loss": 0.31}},
                   "conditions": {{"rms": {{"2": {{"accuracy": 0.95}}, "accuracy_mean": 0.95}}}}}},
                  open("results.json", "w"))
        labls_harness.log_metrics(throughput=1234.5)
        labls_harness.log_metrics(accuracy=0.96, condition="gn", seed=0)
    """)
    assert record.state == "succeeded", record.error
    m = record.metrics
    assert m["bn/0/accuracy"] == 0.981 and m["bn/0/loss"] == 0.07 and m["ln/1/accuracy"] == 0.97
    assert m["bn/accuracy_mean"] == 0.98 and m["val_bpb"] == 0.9979
    assert m["lr"] == 0.001 and m["steps"] == 120
    assert m["test_loss"] == 0.31 and m["rms/2/accuracy"] == 0.95 and m["rms/accuracy_mean"] == 0.95
    assert m["throughput"] == 1234.5 and m["gn/0/accuracy"] == 0.96
    assert record.metrics_source == "harness"
    assert record.metric_sources["test_loss"] == "resultsFile"
    assert record.metric_sources["val_bpb"] == "stdout"
    assert record.structured["conditions"]["bn"]["0"]["accuracy"] == 0.981
    assert record.provenance["verdict"] == "verified"
    canonical = json.loads(Path(record.results_path).read_text())
    assert canonical["metrics"] == record.metrics and canonical["state"] == "succeeded"
    assert canonical["structured"]["conditions"]["rms"]["accuracy_mean"] == 0.95


def test_stale_results_json_is_ignored(lab) -> None:
    stale = lab.ws / "results.json"
    stale.write_text(json.dumps({"metrics": {"val_bpb": 0.1}}))
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    record = lab.run('print("val_bpb: 2.5")\n')
    assert record.metrics == {"val_bpb": 2.5}
    assert record.metrics_source == "stdout"


def test_results_json_in_results_subfolder(lab) -> None:
    record = lab.run("""
        import json, os
        os.makedirs("results", exist_ok=True)
        json.dump({"val_bpb": 1.5}, open("results/results.json", "w"))
    """)
    assert record.metrics == {"val_bpb": 1.5} and record.metrics_source == "resultsFile"


@pytest.fixture
def outside_port():
    """A server listening on the host's loopback, outside any sandbox."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def test_network_is_blocked_and_the_line_recorded(lab, outside_port: int) -> None:
    record = lab.run(f"""
        import socket
        print("starting")
        s = socket.create_connection(("127.0.0.1", {outside_port}), timeout=5)
        print("connected")
    """)
    assert record.state == "failed" and record.isolation == "bwrap"
    assert "connected" not in record.log_tail
    assert record.error is not None and record.error["kind"] == "network"
    assert record.error["file"] == "exp.py" and record.error["line"] == 4
    assert any(a["line"] == 4 and a["file"] == "exp.py" for a in record.network_attempts)


def test_remote_network_attempt_is_recorded(lab) -> None:
    record = lab.run("""
        import urllib.request
        urllib.request.urlopen("http://example.com/data.tar.gz", timeout=5)
    """)
    assert record.state == "failed"
    assert record.error is not None and record.error["kind"] == "network"
    assert any(a.get("host") == "example.com" for a in record.network_attempts)


def test_dataset_root_is_read_only(lab) -> None:
    record = lab.run(f"""
        import errno
        try:
            open("{lab.root}/MNIST/raw/new-file", "w")
        except OSError as exc:
            print("write_errno:", exc.errno)
            assert exc.errno == errno.EROFS
    """)
    assert record.metrics["write_errno"] == 30
    assert not (lab.root / "MNIST/raw/new-file").exists()


def test_secrets_are_invisible(lab, monkeypatch: pytest.MonkeyPatch) -> None:
    home = Path(os.environ.get("HOME", "/root"))
    secret = home / ".labls-test-secret"
    secret.write_text("hunter2")
    monkeypatch.setenv("LABLS_TEST_SECRET_TOKEN", "s3cr3t")
    try:
        record = lab.run(f"""
            import os
            print("home_secret_visible:", int(os.path.exists({str(secret)!r})))
            print("env_secret_visible:", int("LABLS_TEST_SECRET_TOKEN" in os.environ))
            print("workspace_visible:", int(os.path.exists({str(lab.ws / "exp.py")!r})))
            print("env_count:", len(os.environ))
        """)
    finally:
        secret.unlink()
    assert record.metrics["home_secret_visible"] == 0
    assert record.metrics["env_secret_visible"] == 0
    assert record.metrics["workspace_visible"] == 0  # the original workspace is hidden too
    assert record.metrics["env_count"] < 25


def test_allow_listed_env_passes(lab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_ALLOWED", "7")
    record = lab.run('import os\nprint("allowed:", os.environ["MY_ALLOWED"])\n',
                     env=["MY_ALLOWED"])
    assert record.metrics["allowed"] == 7


def _alive(pattern: str) -> list[str]:
    """Pids whose command line holds `pattern` (pass markers as real arguments, not via
    `sys.argv.append`, which never reaches /proc/<pid>/cmdline)."""
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return out.stdout.split()


def _watch(marker: str, seen: list[bool], stop: threading.Event) -> None:
    """Record whether a process with `marker` was ever alive (the positive control)."""
    while not stop.is_set():
        if _alive(marker):
            seen.append(True)
            return
        time.sleep(0.02)


def test_sigterm_ignoring_loop_is_killed_at_the_line_it_was_running(lab) -> None:
    marker = f"labls-stubborn-{os.getpid()}"
    seen: list[bool] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(marker, seen, stop))
    watcher.start()
    record = lab.run("""
        import signal, sys, time

        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("val_bpb: 3.0")
        def spin():
            while True:
                time.sleep(0.01)
        spin()
    """, timeout=1.5, args=[marker])
    stop.set()
    watcher.join()
    assert seen, "the stubborn process was never seen alive: the check below would prove nothing"
    assert record.state == "timedOut"
    assert record.error is not None and record.error["kind"] == "timeout"
    assert record.error["file"] == "exp.py" and record.error["line"] == 8
    assert "spin" in record.error["message"]
    assert record.duration_sec is not None and record.duration_sec < 1.5 + 1 + 3
    assert not _alive(marker)


def test_double_forked_daemon_does_not_survive(lab) -> None:
    marker = f"labls-daemon-{os.getpid()}"
    record = lab.run("""
        import os, subprocess, sys, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(300)",
                                          sys.argv[1]])
            os._exit(0)
        for _ in range(200):  # wait until the daemon really runs
            if subprocess.run(["pgrep", "-f", sys.argv[1]], capture_output=True).stdout:
                print("daemon_seen: 1")
                break
            time.sleep(0.02)
    """, args=[marker])
    assert record.state == "succeeded"
    assert record.metrics["daemon_seen"] == 1  # the positive control
    time.sleep(0.2)
    assert not _alive(marker)


def test_fork_bomb_is_contained(lab) -> None:
    record = lab.run("""
        import os, time
        children = 0
        try:
            while True:
                if os.fork() == 0:
                    time.sleep(30)
                    os._exit(0)
                children += 1
        except OSError as exc:
            print("forks:", children)
            raise SystemExit(3)
    """, timeout=20, max_processes=64)
    assert record.state == "failed"
    assert 10 < record.metrics["forks"] < 64
    assert record.error is not None and record.error["kind"] in ("oom", "exception")


def test_memory_hog_is_contained(lab) -> None:
    record = lab.run("""
        blocks = []
        while True:
            blocks.append(bytearray(50 * 1024 * 1024))
    """, timeout=20, memory_mb=300)
    assert record.state == "failed"
    assert record.error is not None and record.error["kind"] == "oom"
    assert record.error["line"] == 4


def test_run_inherits_its_rlimits_and_the_engine_keeps_its_own(lab) -> None:
    own = resource.getrlimit(resource.RLIMIT_AS)
    record = lab.run("""
        import resource
        print("as_mb:", resource.getrlimit(resource.RLIMIT_AS)[1] / 2**20)
        print("fsize_gb:", resource.getrlimit(resource.RLIMIT_FSIZE)[1] / 2**30)
    """, memory_mb=700)
    assert record.state == "succeeded", record.error
    assert record.metrics == {"as_mb": 700.0, "fsize_gb": 4.0}  # one file: at most run.disk_mb
    assert resource.getrlimit(resource.RLIMIT_AS) == own


def test_printed_lines_reach_live_metrics_without_flush(lab) -> None:
    """Output is line-buffered as on a terminal: a plain `print` shows while the run goes on."""
    (lab.ws / "slow.py").write_text(
        "import sys, time\nprint('step: 1')\nsys.stdout.write('loss: 0.5\\npartial')\n"
        "time.sleep(60)\n")
    engine = lab.configure()
    run_id = engine.start(RunRequest("slow.py", timeout_sec=90)).run_id
    deadline = time.monotonic() + 20
    while engine.get(run_id).metrics != {"step": 1.0, "loss": 0.5} and (  # type: ignore[union-attr]
            time.monotonic() < deadline):
        time.sleep(0.05)
    live = engine.get(run_id)
    assert live is not None and live.state == "running"
    assert live.metrics == {"step": 1.0, "loss": 0.5}
    final = engine.cancel(run_id, timeout=30)
    assert final is not None and final.state == "cancelled"


def test_output_flood_keeps_engine_memory_flat(lab) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    record = lab.run("""
        import sys
        line = "x" * 1023 + "\\n"
        block = line * 1024
        for _ in range(300):          # 300 MiB
            sys.stdout.write(block)
        sys.stdout.write("y" * (8 << 20))  # an 8 MiB line with no newline, then a metric
        print()
        print("val_bpb: 1.0")
    """, timeout=60)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert record.state == "succeeded" and record.metrics == {"val_bpb": 1.0}
    assert Path(record.log_path).stat().st_size > 300 * 1024 * 1024
    assert grown_mb < 40, f"engine peak RSS grew by {grown_mb:.0f} MiB"
    assert len(record.log_tail) < 200 * 2100


def test_invalid_utf8_is_kept_in_the_log(lab) -> None:
    record = lab.run("""
        import sys
        sys.stdout.buffer.write(b"bad \\xff\\xfe bytes\\nval_bpb: 0.5\\n")
    """)
    assert record.metrics == {"val_bpb": 0.5}
    assert b"\xff\xfe" in Path(record.log_path).read_bytes()
    assert "bad \ufffd\ufffd bytes" in record.log_tail


def test_nan_in_the_judged_metric_fails_the_run(lab) -> None:
    record = lab.run('print("val_bpb: nan")\nprint("other: 1")\n')
    assert record.state == "failed" and record.error is not None
    assert record.error["kind"] == "nan" and record.structured["nonFinite"] == {"val_bpb": "nan"}
    json.loads(Path(record.results_path).read_text())  # still valid JSON


def test_exit_zero_without_metrics_is_loud(lab) -> None:
    record = lab.run('print("all good, trust me")\n')
    assert record.state == "failed" and record.error is not None
    assert record.error["kind"] == "noMetrics" and record.metrics_source == "none"


def test_exception_located_in_workspace_code(lab) -> None:
    (lab.ws / "helper.py").write_text("def boom(x):\n    return 1 / x\n")
    record = lab.run("import json\nfrom helper import boom\nprint('a: 1')\nboom(0)\n")
    assert record.state == "failed" and record.error is not None
    assert record.error["kind"] == "exception" and "ZeroDivisionError" in record.error["message"]
    assert (record.error["file"], record.error["line"]) == ("helper.py", 2)
    assert [f["file"] for f in record.traceback if f["workspace"]] == ["exp.py", "helper.py"]


def test_missing_dataset_is_reported_as_such(lab) -> None:
    record = lab.run(f"""
        import os
        path = "{lab.root}/CIFAR10/data_batch_1"
        if not os.path.exists(path):
            raise FileNotFoundError(f"CIFAR10 not found at {{path}}")
    """)
    assert record.state == "failed" and record.error is not None
    assert record.error["kind"] == "datasetMissing" and record.error["line"] == 5
    assert record.metrics == {}


def test_missing_script_and_bad_requests_are_clear(lab) -> None:
    engine = lab.configure()
    with pytest.raises(RunInputError, match="does not exist"):
        engine.start(RunRequest("nope.py"))
    with pytest.raises(RunInputError, match="inside the workspace"):
        engine.start(RunRequest("../outside.py"))
    (lab.ws / "ok.py").write_text("print('a: 1')\n")
    with pytest.raises(RunInputError, match="timeoutSec"):
        engine.start(RunRequest("ok.py", timeout_sec=-3))
    with pytest.raises(RunInputError, match="LABLS_METRICS"):
        engine.start(RunRequest("ok.py", env={"LABLS_METRICS": "/x"}))


def test_cancel_stops_the_tree(lab) -> None:
    engine = lab.configure()
    (lab.ws / "slow.py").write_text(
        "import time\nprint('a: 1')\nwhile True:\n    time.sleep(0.05)\n")
    started = engine.start(RunRequest("slow.py", timeout_sec=60))
    deadline = time.monotonic() + 10
    while engine.get(started.run_id).state != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    record = engine.cancel(started.run_id, timeout=10)
    assert record is not None and record.state == "cancelled"
    assert record.error is not None and record.error["line"] == 4


def test_a_run_is_cancelled_from_another_engine_running_or_queued(lab) -> None:
    """Another process's engine (here a second one on the same workspace: its own runs, one
    registry) cancels through the registry, a running run and one waiting for the slot."""
    owner = lab.configure(max_concurrent=1)
    (lab.ws / "slow.py").write_text("import time\nprint('a: 1', flush=True)\ntime.sleep(60)\n")
    running = owner.start(RunRequest("slow.py", timeout_sec=60))
    queued = owner.start(RunRequest("slow.py", timeout_sec=60))
    other = Engine(lab.ws, owner.config)
    try:
        deadline = time.monotonic() + 20
        seen = lambda run_id: getattr(other.get(run_id), "state", None)  # noqa: E731
        while (seen(queued.run_id), seen(running.run_id)) != ("queued", "running"):
            assert time.monotonic() < deadline, (seen(queued.run_id), seen(running.run_id))
            time.sleep(0.05)  # the registry is all the other engine sees of them
        assert not other.is_active(running.run_id)
        asked = time.monotonic()
        waited = other.cancel(queued.run_id, timeout=20)
        assert waited is not None and waited.state == "cancelled", waited
        final = other.cancel(running.run_id, timeout=20)
        assert final is not None and final.state == "cancelled", final
        assert time.monotonic() - asked < 15  # both taken within the owner's half-second looks
        assert owner.get(running.run_id).state == "cancelled"
        assert other.cancel(running.run_id, timeout=1).state == "cancelled"  # already over
    finally:
        other.close()


def test_runs_queue_for_a_slot_and_have_their_own_folders(lab) -> None:
    engine = lab.configure(max_concurrent=1)
    (lab.ws / "a.py").write_text("import time, os\nprint('pid:', os.getpid())\ntime.sleep(0.5)\n")
    first = engine.start(RunRequest("a.py"))
    second = engine.start(RunRequest("a.py"))
    time.sleep(0.2)
    assert engine.get(second.run_id).state == "queued"
    done = [engine.wait(r.run_id, 30) for r in (first, second)]
    assert all(r.state == "succeeded" for r in done)
    assert done[0].log_path != done[1].log_path
    assert done[1].started_at >= done[0].finished_at - 0.05
    assert [r.run_id for r in engine.recent(2)] == [second.run_id, first.run_id]


def test_crash_of_the_engine_leaves_run_interrupted(lab, tmp_path: Path) -> None:
    (lab.ws / "quick.py").write_text("print('val_bpb: 1.0')\n")
    marker = f"labls-orphan-{os.getpid()}"
    (lab.ws / "long.py").write_text("import time\nprint('a: 1', flush=True)\ntime.sleep(120)\n")
    (lab.ws / "labls.toml").write_text(f'dataset_cache_root = "{lab.root}"\n')
    trust(lab.ws)
    cli = [sys.executable, "-m", "labls.server.cli", "run"]
    assert subprocess.run([*cli, "quick.py"], cwd=lab.ws, capture_output=True).returncode == 0
    err_log = tmp_path / "cli-stderr.txt"
    with open(err_log, "wb") as err:
        proc = subprocess.Popen([*cli, "long.py", marker], cwd=lab.ws,
                                stdout=subprocess.DEVNULL, stderr=err)
    registry = Registry(lab.ws / ".labls" / "labls.db")
    deadline = time.monotonic() + 20
    while not registry.recent(1, "running") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert registry.recent(1, "running"), err_log.read_text()
    while not _run_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _run_processes(marker), "the run never started: the check below would prove nothing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    registry.close()
    time.sleep(1.0)
    assert not _alive(marker), "the run outlived the engine"
    if os.geteuid() == 0:  # the run's dataset view went with it (its watchdog unmounted it)
        assert str(lab.ws) not in Path("/proc/self/mountinfo").read_text()
    reopened = Registry(lab.ws / ".labls" / "labls.db")
    runs = reopened.recent(10)
    assert [r.state for r in runs] == ["interrupted", "succeeded"]
    assert runs[1].metrics == {"val_bpb": 1.0}


def test_cli_run_runs_and_show(lab) -> None:
    """The terminal verbs, as a user types them: summary and exit code, ledger, one record."""
    (lab.ws / "labls.toml").write_text(f'dataset_cache_root = "{lab.root}"\n')
    trust(lab.ws)
    (lab.ws / "good.py").write_text(textwrap.dedent("""
        import glob, os
        for path in glob.glob(os.environ["LABLS_DATASET_ROOT"] + "/**", recursive=True):
            if os.path.isfile(path):
                open(path, "rb").read()
        print("DATASET_USED: MNIST")
        print("val_bpb: 0.75")
    """))
    (lab.ws / "bad.py").write_text("x = 1\nraise ValueError('nope')\n")
    cli = [sys.executable, "-m", "labls.server.cli"]

    def labls(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli, *args], cwd=lab.ws, capture_output=True, text=True,
                              timeout=60)

    good = labls("run", "good.py")
    assert good.returncode == 0, good.stderr
    assert re.search(r"state\s+succeeded", good.stdout) and "val_bpb" in good.stdout
    run_id = re.search(r"run\s+(\S+)", good.stdout).group(1)  # type: ignore[union-attr]
    bad = labls("run", "--timeout", "30", "bad.py", "--timeout", "7")  # the second is bad.py's
    assert bad.returncode == 1
    assert re.search(r"script\s+bad.py --timeout 7\n", bad.stdout), bad.stdout
    assert re.search(r"duration\s+\S+ s of 30 s", bad.stdout), bad.stdout
    assert re.search(r"error\s+exception at bad.py:2: ValueError: nope", bad.stdout), bad.stdout
    ledger = labls("runs").stdout.splitlines()
    assert [line.split()[1] for line in ledger[1:]] == ["failed", "succeeded"]
    assert ledger[2].split()[0] == run_id and "0.75" in ledger[2]
    shown = json.loads(labls("show", run_id, "--json").stdout)
    assert (shown["state"], shown["metrics"]) == ("succeeded", {"val_bpb": 0.75})
    assert shown["provenance"]["verdict"] == "verified"
    assert labls("show", "no-such-run").returncode == 2


def _run_processes(marker: str) -> list[str]:
    """Processes of a run holding `marker`. The engine holds it too, and so does each child it
    forks until that child execs (git, the watchdog): both carry the CLI's command line."""
    out = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True)
    return [line.split()[0] for line in out.stdout.splitlines()
            if "labls.server.cli" not in line]


def test_engine_killed_while_the_sandbox_starts_leaves_nothing(lab) -> None:
    """SIGKILL the engine the moment its run's first process appears, while bwrap is still
    setting up: the window in which bwrap's own --die-with-parent left its sandbox behind."""
    (lab.ws / "long.py").write_text("import time\ntime.sleep(120)\n")
    (lab.ws / "labls.toml").write_text(f'dataset_cache_root = "{lab.root}"\n')
    trust(lab.ws)
    for attempt in range(5):
        marker = f"labls-early-kill-{os.getpid()}-{attempt}"
        proc = subprocess.Popen([sys.executable, "-m", "labls.server.cli", "run", "long.py",
                                 marker], cwd=lab.ws, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while not _run_processes(marker) and time.monotonic() < deadline:
                time.sleep(0.002)
            assert _run_processes(marker), "no run started: the check proves nothing"
        finally:  # killed in any case, so a failure here cannot leak into later tests
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        time.sleep(1.0)
        assert not _alive(marker), f"attempt {attempt}: the sandbox outlived the engine"


def test_a_run_is_listed_the_moment_it_is_started(lab) -> None:
    """A run is first saved once its process has started; listing shows it before that too."""
    (lab.ws / "a.py").write_text("print('val_bpb: 1.0')\n")
    engine = lab.configure()
    first = engine.start(RunRequest("a.py"))
    second = engine.start(RunRequest("a.py"))
    assert [r.run_id for r in engine.recent(5)] == [second.run_id, first.run_id]
    for run in (first, second):
        engine.wait(run.run_id, 30)
    listed = engine.recent(5)
    assert [(r.run_id, r.state) for r in listed] == [(second.run_id, "succeeded"),
                                                     (first.run_id, "succeeded")]
    assert [r.run_id for r in engine.recent(5, "succeeded")] == [second.run_id, first.run_id]
    assert engine.recent(5, "running") == []


def test_concurrent_registry_writers(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "labls.db")

    def write(n: int) -> None:
        for i in range(50):
            registry.save(RunRecord(run_id=f"{n}-{i}", state="succeeded", script="x.py",
                                    metrics={"m": float(i)}))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other = Registry(tmp_path / "labls.db")  # a second connection, as another process has
    assert len(other.recent(1000)) == 200


def test_unshare_fallback_blocks_the_network_and_owns_the_tree(lab, outside_port: int) -> None:
    record = lab.run(f"""
        import socket
        print("pid_in_namespace:", __import__("os").getpid())
        socket.create_connection(("127.0.0.1", {outside_port}), timeout=3)
    """, isolation="unshare")
    assert record.isolation == "unshare" and record.state == "failed"
    assert record.error is not None and record.error["kind"] == "network"
    assert record.metrics["pid_in_namespace"] == 1  # its own PID namespace


def test_no_isolation_with_no_network_is_refused(lab) -> None:
    record = lab.run('print("val_bpb: 1")\n', isolation="none")
    assert record.state == "failed" and record.error is not None
    assert record.error["kind"] == "network" and "bubblewrap" in record.error["message"]
    assert record.metrics == {}
    allowed = lab.run('print("val_bpb: 1")\n', isolation="none", network="host")
    assert allowed.state == "succeeded" and allowed.isolation == "none"


def test_runs_start_in_submission_order(lab) -> None:
    """20 runs on 2 slots leave the queue in submission order. Two runs that take the two slots
    together may finish setting up in either order, so a run's place among the launches is
    its place in submission, give or take that one swap (it was up to 16 places off)."""
    engine = lab.configure(max_concurrent=2)
    (lab.ws / "short.py").write_text("import time\ntime.sleep(0.05)\nprint('a: 1')\n")
    ids = [engine.start(RunRequest("short.py")).run_id for _ in range(20)]
    records = [engine.wait(run_id, 120) for run_id in ids]
    assert all(r is not None and r.state == "succeeded" for r in records)
    launched = sorted(range(20), key=lambda i: records[i].started_at)  # type: ignore[union-attr]
    assert all(abs(place - i) <= 1 for place, i in enumerate(launched)), launched
