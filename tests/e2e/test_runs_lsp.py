"""Runs over LSP: commands, progress, diagnostics, baseline comparison, bad input."""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pytest_lsp import ClientServerConfig, LanguageClient

from tests.helpers import SERVER_COMMAND, command, make_cache, plain, start_session, trust

pytestmark = pytest.mark.asyncio(loop_scope="module")


class Finished:
    """Collects `labls/runFinished` notifications; lets a test await one run's."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.event = asyncio.Event()

    def add(self, params: Any) -> None:
        run = plain(params)["run"]
        self.records[run["runId"]] = run
        self.event.set()

    async def wait(self, run_id: str, timeout: float = 60) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while run_id not in self.records:
                self.event.clear()
                await self.event.wait()
        return self.records[run_id]


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("runs")
    workspace = base / "ws"
    workspace.mkdir()
    cache = make_cache(base / "cache", ["MNIST"])
    (workspace / "labls.toml").write_text(
        f'dataset_cache_root = "{cache}"\n[run]\nkill_grace_sec = 1\nmax_concurrent = 4\n'
        '[metric]\nname = "loss"\ngoal = "minimize"\nmin_delta = 0.01\n')
    trust(workspace)
    return workspace


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=SERVER_COMMAND))
async def client(lsp_client: LanguageClient, ws: Path):
    finished = Finished()
    lsp_client.feature("labls/runFinished")(lambda params: finished.add(params))
    lsp_client.finished = finished  # type: ignore[attr-defined]
    await start_session(lsp_client, ws)
    yield
    await lsp_client.shutdown_session()


def write(ws: Path, name: str, source: str) -> str:
    (ws / name).write_text(textwrap.dedent(source).lstrip("\n"))
    return name


def diags(client: LanguageClient, ws: Path, name: str) -> dict[str, types.Diagnostic]:
    return {str(d.code): d for d in client.diagnostics.get((ws / name).as_uri(), [])}


async def test_start_returns_at_once_and_finishes_with_a_notification(client, ws):
    write(ws, "quick.py", """
        import time
        time.sleep(0.5)
        print("loss: 0.5")
    """)
    t0 = time.monotonic()
    started = await command(client, "labls.run.start", {"script": "quick.py"})
    assert time.monotonic() - t0 < 0.4
    assert started["state"] in ("queued", "running") and started["runId"]
    run = await client.finished.wait(started["runId"])
    assert run["state"] == "succeeded" and run["metrics"] == {"loss": 0.5}
    got = await command(client, "labls.run.get", {"runId": started["runId"]})
    assert got["state"] == "succeeded" and got["resultsPath"].endswith("results.json")
    listed = await command(client, "labls.run.list", {"limit": 5})
    assert listed["runs"][0]["runId"] == started["runId"]


async def test_exception_diagnostic_with_related_frames(client, ws):
    write(ws, "helper.py", """
        def load(cfg):
            return cfg["lr"]
    """)
    write(ws, "train_exc.py", """
        from helper import load
        print("loss: 1.0")
        load({})
    """)
    run = await command(client, "labls.run.start", {"script": "train_exc.py", "wait": True})
    assert run["state"] == "failed" and run["error"]["kind"] == "exception"
    on_helper = diags(client, ws, "helper.py")["exception"]
    assert on_helper.range.start.line == 1 and on_helper.severity == types.DiagnosticSeverity.Error
    assert "KeyError" in on_helper.message and on_helper.source == "labls"
    assert on_helper.data["runId"] == run["runId"]
    related = on_helper.related_information
    assert related and related[0].location.uri.endswith("/train_exc.py")
    assert related[0].location.range.start.line == 2
    assert "metrics" in diags(client, ws, "train_exc.py")


async def test_positions_are_utf16_with_tabs_and_non_ascii(client, ws):
    source = 'print("loss: 1")\nif True:\n\tname = "héllo 😀 wörld"; raise ValueError(name)\n'
    (ws / "unicode.py").write_text(source)
    run = await command(client, "labls.run.start", {"script": "unicode.py", "wait": True})
    assert "héllo 😀 wörld" in run["error"]["message"]  # (answers are encoded off the loop)
    d = diags(client, ws, "unicode.py")["exception"]
    line = source.splitlines()[2]
    assert d.range.start.line == 2 and d.range.start.character == 1  # after the tab
    assert d.range.end.character == len(line.encode("utf-16-le")) // 2
    assert d.range.end.character == len(line) + 1  # the emoji is two UTF-16 units


async def test_timeout_diagnostic_at_the_running_line(client, ws):
    write(ws, "hang.py", """
        import time
        print("loss: 2.0")
        def train_forever():
            while True:
                time.sleep(0.01)
        train_forever()
    """)
    run = await command(client, "labls.run.start",
                        {"script": "hang.py", "wait": True, "timeoutSec": 1.0})
    assert run["state"] == "timedOut"
    d = diags(client, ws, "hang.py")["timeout"]
    assert d.range.start.line == 4 and "budget" in d.message  # time.sleep(0.01)


async def test_network_diagnostic_with_hint(client, ws):
    write(ws, "fetch.py", """
        import urllib.request
        print("loss: 1.0")
        urllib.request.urlopen("http://example.org/cifar.tar.gz", timeout=3)
    """)
    run = await command(client, "labls.run.start", {"script": "fetch.py", "wait": True})
    assert run["error"]["kind"] == "network"
    d = diags(client, ws, "fetch.py")["network"]
    assert d.range.start.line == 2 and "dataset cache" in d.message


async def test_nan_no_metrics_and_dataset_diagnostics(client, ws):
    cache = (await command(client, "labls.datasets.list"))["cacheRoot"]
    write(ws, "nan.py", 'print("loss: nan")\n')
    write(ws, "silent.py", 'print("done")\n')
    write(ws, "missing.py", f"""
        import os
        root = "{cache}/cifar-10-batches-py"
        if not os.path.isdir(root):
            raise FileNotFoundError(f"CIFAR10 is not in the cache: {{root}}")
    """)
    write(ws, "unread.py", 'print("DATASET_USED: MNIST")\nprint("loss: 0.3")\n')
    write(ws, "twice.py", f"""
        data = open("{cache}/MNIST/raw/train-labels-idx1-ubyte", "rb").read()
        print("DATASET_USED: MNIST")
        print("DATASET_USED: MNIST")
        print("loss: 0.3")
    """)
    runs = await asyncio.gather(*(
        command(client, "labls.run.start", {"script": s, "wait": True})
        for s in ("nan.py", "silent.py", "missing.py", "unread.py", "twice.py")))
    assert [r["error"]["kind"] if r["error"] else None for r in runs] == [
        "nan", "noMetrics", "datasetMissing", None, None]
    assert "nan" in diags(client, ws, "nan.py")
    assert "no-metrics" in diags(client, ws, "silent.py")
    missing = diags(client, ws, "missing.py")["dataset-missing"]
    assert missing.range.start.line == 3 and "synthetic" in missing.message
    assert runs[2]["metrics"] == {}
    unread = diags(client, ws, "unread.py")["dataset-unread"]
    assert unread.range.start.line == 0 and runs[3]["provenance"]["verdict"] == "unverified"
    twice = diags(client, ws, "twice.py")["dataset-stamp"]
    assert twice.range.start.line == 1 and "2 times" in twice.message


async def test_baseline_comparison_and_regression_diagnostic(client, ws):
    def script(loss: float) -> None:
        write(ws, "cmp.py", f'print("loss: {loss}")\n')

    script(1.0)
    base = await command(client, "labls.run.start", {"script": "cmp.py", "wait": True})
    script(1.2)
    worse = await command(client, "labls.run.start", {"script": "cmp.py", "wait": True})
    d = diags(client, ws, "cmp.py")
    assert "regression" in d and d["regression"].severity == types.DiagnosticSeverity.Warning
    cmp = await command(client, "labls.run.compare",
                        {"runId": worse["runId"], "baselineId": base["runId"]})
    assert cmp["verdict"] == "regression" and cmp["delta"] == pytest.approx(0.2)
    assert cmp["pct"] == pytest.approx(20.0) and cmp["baseline"] == 1.0
    script(0.995)  # better, but within min_delta = 0.01
    same = await command(client, "labls.run.start", {"script": "cmp.py", "wait": True})
    cmp = await command(client, "labls.run.compare",
                        {"runId": same["runId"], "baselineId": base["runId"]})
    assert cmp["verdict"] == "noChange"
    d = diags(client, ws, "cmp.py")  # replaced by the newer run, judged against the 1.2 run
    assert "regression" not in d and d["improvement"].data["comparison"]["baseline"] == 1.2
    script(0.5)
    better = await command(client, "labls.run.start", {"script": "cmp.py", "wait": True})
    assert "improvement" in diags(client, ws, "cmp.py")
    cmp = await command(client, "labls.run.compare", {"runId": better["runId"]})
    assert cmp["verdict"] == "improvement" and cmp["baselineId"] == same["runId"]


async def test_next_run_replaces_the_scripts_diagnostics(client, ws):
    write(ws, "flaky.py", 'raise RuntimeError("first")\n')
    await command(client, "labls.run.start", {"script": "flaky.py", "wait": True})
    assert "exception" in diags(client, ws, "flaky.py")
    write(ws, "flaky.py", 'print("loss: 0.1")\n')
    await command(client, "labls.run.start", {"script": "flaky.py", "wait": True})
    assert "exception" not in diags(client, ws, "flaky.py")


async def test_progress_with_the_requests_token(client, ws):
    write(ws, "progress.py", """
        import time
        for step in range(12):
            print(f"loss: {1.0 / (step + 1)}", flush=True)
            time.sleep(0.2)
    """)
    client.progress_reports.setdefault("tok-progress", [])  # the client knows its own token
    run = await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="labls.run.start", arguments=[{"script": "progress.py", "wait": True}],
        work_done_token="tok-progress"))
    reports = client.progress_reports["tok-progress"]
    kinds = [r.kind for r in reports]
    assert kinds[0] == "begin" and kinds[-1] == "end" and "report" in kinds
    assert "progress.py" in reports[0].title and run["runId"] in reports[0].message
    report = next(r for r in reports if r.kind == "report")
    assert "/300 s" in report.message and "loss=" in report.message
    assert "succeeded" in reports[-1].message


async def test_progress_token_created_by_the_server(client, ws):
    write(ws, "p2.py", 'print("loss: 1")\n')
    before = set(client.progress_reports)
    run = await command(client, "labls.run.start", {"script": "p2.py", "wait": True})
    created = [t for t in client.progress_reports if t not in before]
    assert len(created) == 1
    reports = client.progress_reports[created[0]]
    assert reports[0].kind == "begin" and reports[-1].kind == "end"
    assert run["runId"] in reports[-1].message


@pytest.mark.parametrize(("name", "args", "match"), [
    ("labls.run.get", {"runId": "nope"}, "runId.*names no run"),
    ("labls.run.cancel", {"runId": "nope"}, "names no run"),
    ("labls.run.compare", {"runId": "nope"}, "names no run"),
    ("labls.run.start", {"script": "../etc/passwd"}, "inside the workspace"),
    ("labls.run.start", {"script": "/etc/passwd"}, "inside the workspace"),
    ("labls.run.start", {"script": "absent.py"}, "does not exist"),
    ("labls.run.start", {"script": "quick.py", "timeoutSec": -1}, "timeoutSec"),
    ("labls.run.start", {"script": "quick.py", "timeoutSec": 1e12}, "timeoutSec"),
    # an agent's arguments may only tighten what the user's config allows
    ("labls.run.start", {"script": "quick.py", "timeoutSec": 3601},
     "field 'timeoutSec'.*trusted ceiling run.max_timeout_sec"),
    ("labls.run.start", {"script": "quick.py", "env": {"AWS_SECRET_ACCESS_KEY": "x"}},
     "field 'env'.*AWS_SECRET_ACCESS_KEY is not in the trusted allow-list run.env"),
    ("labls.run.start", {"script": "quick.py", "env": {"PYTHONPATH": "/x"}}, "field 'env'"),
    ("labls.run.start", {"script": "quick.py", "gpus": [7]}, "field 'gpus'"),
    ("labls.loop.start", {"model": "openai/elsewhere"}, "field 'model'"),
    ("labls.loop.start", {"prepare": "quick.py"}, "field 'prepare'.*dataset cache"),
    ("labls.loop.start", {"program": "../../etc/passwd"}, "field 'program'"),
    ("labls.loop.start", {"script": "quick.py"}, "field 'script'.*loop.script"),
    ("labls.experiment.step", {"hypothesis": "x", "script": "quick.py",
                               "edit": {"format": "whole", "path": "quick.py", "text": "x"}},
     "field 'script'.*only the user's config chooses what a step is judged by"),
    ("labls.run.start", {"script": "quick.py", "timeoutSec": "10"}, "timeoutSec"),
    ("labls.run.start", {"script": 5}, "script"),
    ("labls.run.start", {"script": "quick.py", "gpus": "all"}, "gpus"),
    ("labls.run.start", {"script": "quick.py", "args": "--x"}, "args"),
    ("labls.run.list", {"limit": 0}, "limit"),
    ("labls.run.list", {"state": "sleeping"}, "state"),
])
async def test_bad_input_is_invalid_params(client, ws, name, args, match):
    if not (ws / "quick.py").exists():
        write(ws, "quick.py", 'print("loss: 1.0")\n')
    with pytest.raises(JsonRpcInvalidParams, match=match):
        await command(client, name, args)


async def test_cancel_and_many_requests_while_runs_stream(client, ws):
    write(ws, "stream.py", """
        import sys, time
        line = "x" * 200 + "\\n"
        t0 = time.time()
        while time.time() - t0 < 30:
            sys.stdout.write(line * 500)
    """)
    a = await command(client, "labls.run.start", {"script": "stream.py"})
    b = await command(client, "labls.run.start", {"script": "stream.py"})
    await asyncio.sleep(0.5)
    t0 = time.monotonic()
    answers = await asyncio.gather(*(
        command(client, "labls.run.get", {"runId": (a, b)[i % 2]["runId"]}) for i in range(100)))
    assert len(answers) == 100 and all(r["state"] == "running" for r in answers)
    assert time.monotonic() - t0 < 10
    cancelled = await asyncio.gather(*(
        command(client, "labls.run.cancel", {"runId": r["runId"]}) for r in (a, b)))
    assert [r["state"] for r in cancelled] == ["cancelled", "cancelled"]


async def test_a_refused_run_file_is_a_warning_diagnostic(client, ws):
    write(ws, "fifo.py", """
        import os
        os.mkfifo("results.json")
        print("val_bpb: 0.5")
    """)
    run = await command(client, "labls.run.start", {"script": "fifo.py", "wait": True})
    assert run["state"] == "succeeded", run
    d = diags(client, ws, "fifo.py")["hostile-input"]
    assert d.severity == types.DiagnosticSeverity.Warning
    assert "work/results.json" in d.message and "FIFO" in d.message


async def test_a_run_with_many_metric_keys_is_listed_and_announced_bounded(client, ws):
    write(ws, "wide.py", """
        import sys
        sys.stdout.write("".join(f"k{i}: {i}.5\\n" for i in range(20000)))
        print("loss: 0.25")
    """)
    full = await command(client, "labls.run.start", {"script": "wide.py", "wait": True})
    assert full["state"] == "succeeded"  # wait: the record with its first page of metrics
    assert len(full["metrics"]) == 10_000 and full["metricsCount"] == 20001
    assert full["metricsNext"] == 10_000 and "k0" in full["metrics"]
    announced = await client.finished.wait(full["runId"])
    assert len(json.dumps(announced)) < 20_000, len(json.dumps(announced))
    assert announced["metricsCount"] == 20001 and announced["metrics"]["loss"] == 0.25
    assert len(announced["metrics"]) == 51 and "k0" in announced["metrics"]  # judged + first 50
    listed = next(r for r in (await command(client, "labls.run.list", {"limit": 5}))["runs"]
                  if r["runId"] == full["runId"])
    assert listed["metricsCount"] == 20001 and len(listed["metrics"]) == 51
    pages, offset = [], 0
    while offset is not None:  # the whole set, page by page
        got = await command(client, "labls.run.get", {"runId": full["runId"],
                                                     "metricsOffset": offset})
        pages.append(got)
        offset = got["metricsNext"]
    assert [len(page["metrics"]) for page in pages] == [10_000, 10_000, 1]
    whole = {k: v for page in pages for k, v in page["metrics"].items()}
    on_disk = json.loads(Path(full["resultsPath"]).read_text())
    assert list(whole.items()) == list(on_disk["metrics"].items())  # all, in the order printed
    assert {k: v for page in pages for k, v in page["metricSources"].items()} == on_disk[
        "metricSources"]
    across = await command(client, "labls.run.get", {"runId": full["runId"], "metricsOffset":
                                                    9_998, "metricsLimit": 4})
    assert list(across["metrics"]) == ["k9998", "k9999", "k10000", "k10001"]
    with pytest.raises(JsonRpcInvalidParams, match=r"metricsLimit.*0 to 10000"):
        await command(client, "labls.run.get", {"runId": full["runId"], "metricsLimit": 10**6})
    some = await command(client, "labls.run.get", {"runId": full["runId"],
                                                  "fields": ["state", "metricsSource"]})
    assert some == {"runId": full["runId"], "state": "succeeded", "metricsSource": "stdout"}
    with pytest.raises(JsonRpcInvalidParams, match=r"fields.*names no field.*nope"):
        await command(client, "labls.run.get", {"runId": full["runId"], "fields": ["nope"]})
    metrics_diag = diags(client, ws, "wide.py")["metrics"]
    assert metrics_diag.data["metricsCount"] == 20001 and len(metrics_diag.data["metrics"]) <= 51


async def test_a_module_runs_diagnostics_go_on_its_file_or_stay_in_the_record(client, ws):
    (ws / "pkg").mkdir()
    write(ws, "pkg/__init__.py", "")
    write(ws, "pkg/train.py", """
        print("loss: 0.5")
        raise ValueError("diverged")
    """)
    run = await command(client, "labls.run.start", {"script": "-m pkg.train", "wait": True})
    assert run["state"] == "failed" and run["error"]["file"] == "pkg/train.py", run
    on_file = diags(client, ws, "pkg/train.py")
    assert on_file["exception"].range.start.line == 1 and "metrics" in on_file
    outside = await command(client, "labls.run.start", {"script": "-m json.tool",
                                                        "args": ["nope.json"], "wait": True})
    assert outside["state"] == "failed", outside
    assert not [uri for uri in client.diagnostics if "-m" in uri], list(client.diagnostics)
