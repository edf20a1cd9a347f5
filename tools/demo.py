"""`make demo`: a real experiment end to end, driven over stdio as an agent would drive labls.

1. Stage scikit-learn's bundled handwritten digits (real data, no download) into a fresh,
   non-default dataset cache root, and copy `examples/digits-norms` into a fresh git workspace.
2. Start `labls serve` and, with the project's own small JSON-RPC client: list the datasets,
   render the network-disabled guidance, run `train.py` (3 norms x 3 seeds) with `wait`, read the
   diagnostics, then one `labls.experiment.step` that changes a hyperparameter.
3. Check, loudly: one `DATASET_USED: digits` and provenance `verified`; per-condition, per-seed
   metrics with every test accuracy above 90 %; the canonical results.json holding the
   structured results from `resultsFile` or `harness`, not `stdout`.
4. Empty the cache and run again: it must fail with FileNotFoundError, a `dataset-missing`
   diagnostic and no metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from labls.sandbox.staging import stage_digits
from tools.rpc_client import LspClient

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "digits-norms"


class Checks:
    def __init__(self) -> None:
        self.failed: list[str] = []

    def check(self, name: str, ok: bool, detail: str) -> None:
        say(f"  [{'PASS' if ok else 'FAIL'}] {name}: {detail}")
        if not ok:
            self.failed.append(name)


def say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def prepare(base: Path, epochs: int | None) -> tuple[Path, Path]:
    cache = base / "datasets"
    workspace = base / "digits-norms"
    shutil.copytree(EXAMPLE, workspace, ignore=shutil.ignore_patterns(".labls", "results.json"))
    toml = workspace / "labls.toml"
    toml.write_text(re.sub(r'(?m)^dataset_cache_root = ".*"$',
                           f'dataset_cache_root = "{cache}"', toml.read_text()))
    if epochs is not None:
        train = workspace / "train.py"
        train.write_text(re.sub(r"(?m)^EPOCHS = \d+$", f"EPOCHS = {epochs}", train.read_text()))
    for args in (["init", "-q"], ["add", "."], ["-c", "user.name=labls demo", "-c",
                 "user.email=demo@localhost", "commit", "-qm", "digits-norms example"]):
        subprocess.run(["git", "-C", str(workspace), *args], check=True)
    stage_digits(cache)
    return workspace, cache


def diagnostics_of(client: LspClient, path: Path, run_id: str) -> list[dict[str, Any]]:
    uri = path.resolve().as_uri()
    client.wait_for(lambda n: n.get("method") == "textDocument/publishDiagnostics"
                    and n["params"]["uri"] == uri
                    and any(d.get("data", {}).get("runId") == run_id
                            for d in n["params"]["diagnostics"]), timeout=30)
    return client.diagnostics(uri)


def run_demo(base: Path, epochs: int | None = None) -> list[str]:
    """The whole demo in `base`; returns the names of the checks that failed."""
    checks = Checks()
    workspace, cache = prepare(base, epochs)
    train = workspace / "train.py"
    say(f"workspace {workspace}\ndataset cache root {cache} (not the default /opt/datasets)")
    # The demo is the user here, with a user config dir of its own (never the machine's): it
    # trusts the example's labls.toml, which names the cache root and the judged metric.
    env = {**os.environ, "XDG_CONFIG_HOME": str(base / "user-config")}
    trusted = subprocess.run([sys.executable, "-m", "labls.server.cli", "trust"], cwd=workspace,
                             env=env, capture_output=True, text=True)
    say("\n> labls trust\n" + "\n".join(f"  {ln}" for ln in trusted.stdout.splitlines()))
    checks.check("trust", trusted.returncode == 0, trusted.stderr.strip())
    with LspClient(workspace, env=env) as client:
        client.initialize()
        listing = client.command("labls.datasets.list")
        present = [d["name"] for d in listing["datasets"] if d["present"]]
        say(f"\n> labls.datasets.list\n  cache root {listing['cacheRoot']}; present: {present}; "
            f"absent: {len(listing['datasets']) - len(present)} known datasets")
        guidance = client.command("labls.prompt.render",
                                  {"template": "network_disabled_guidance"})["text"]
        say("\n> labls.prompt.render network_disabled_guidance (lines naming the root)")
        for line in guidance.splitlines():
            if str(cache) in line and ("digits" in line or "MNIST(" in line):
                say(f"  | {line}")

        say("\n> labls.run.start train.py (wait)")
        t0 = time.monotonic()
        run = client.command("labls.run.start", {"script": "train.py", "wait": True})
        say(f"  {run['runId']}: {run['state']} in {run['durationSec']:.1f} s "
            f"({run['isolation']}, network {run['network']}, {run['device']})")
        for d in diagnostics_of(client, train, run["runId"]):
            say(f"  diagnostic {d['code']} (line {d['range']['start']['line'] + 1}): "
                f"{d['message'].splitlines()[0][:110]}")
        say(f"  wall time {time.monotonic() - t0:.1f} s")

        say("\nThe three checks:")
        log = Path(run["logPath"]).read_text(errors="replace")
        stamps = [ln for ln in log.splitlines() if ln.strip() == "DATASET_USED: digits"]
        prov = run["provenance"]
        checks.check("1. provenance", len(stamps) == 1 and prov["verdict"] == "verified",
                     f"{len(stamps)} `DATASET_USED: digits` line(s); {prov['verdict']} "
                     f"({prov['reason']})")
        per_seed = {k: v for k, v in run["metrics"].items() if k.count("/") == 2}
        accs = {k: v for k, v in per_seed.items() if k.endswith("/test_accuracy")}
        checks.check("2. structured metrics",
                     len(accs) == 9 and all(v > 0.9 for v in accs.values()),
                     f"{len(per_seed)} per-condition/per-seed keys, e.g. "
                     f"{sorted(accs)[0]} = {accs[sorted(accs)[0]]:.4f}; lowest test accuracy "
                     f"{min(accs.values()):.4f}" if accs else "no per-seed accuracies")
        canonical = json.loads(Path(run["resultsPath"]).read_text())
        conditions = canonical.get("structured", {}).get("conditions", {})
        checks.check("3. canonical results.json",
                     canonical["metricsSource"] in ("resultsFile", "harness")
                     and set(conditions) == {"batchnorm", "layernorm", "rmsnorm"},
                     f"{run['resultsPath']}: metricsSource {canonical['metricsSource']}, "
                     f"conditions {sorted(conditions)}")

        say("\n> labls.experiment.step: 'raise the learning rate from 0.05 to 0.1'")
        edit = {"format": "searchReplace",
                "text": "train.py\n<<<<<<< SEARCH\nLR = 0.05\n=======\nLR = 0.1\n"
                        ">>>>>>> REPLACE\n"}
        step = client.command("labls.experiment.step",
                              {"hypothesis": "raise the learning rate from 0.05 to 0.1",
                               "edit": edit})
        if step.get("ok"):
            base_acc = step["baseline"]["metrics"].get("test_accuracy")
            new_acc = (step["run"] or {}).get("metrics", {}).get("test_accuracy")
            say(f"  verdict {step['verdict']}: test_accuracy {new_acc} vs baseline {base_acc} "
                f"({step['reason']})")
            say(f"  commit {step['commit']}" if step["commit"] else
                f"  code kept under {step['discardedRef']}")
        checks.check("step", bool(step.get("ok")) and step["verdict"] in ("keep", "discard"),
                     f"verdict {step.get('verdict')}")
        history = subprocess.run([sys.executable, "-m", "labls.server.cli", "history"],
                                 cwd=workspace, env=env, capture_output=True, text=True).stdout
        say("  labls history:\n" + "\n".join(f"    {ln}" for ln in history.splitlines()))

        say("\n> the same run with the cache emptied")
        shutil.rmtree(cache / "digits")
        missing = client.command("labls.run.start", {"script": "train.py", "wait": True})
        error = missing["error"] or {}
        codes = [d["code"] for d in diagnostics_of(client, train, missing["runId"])]
        say(f"  {missing['runId']}: {missing['state']}, exit code {missing['exitCode']}: "
            f"{error.get('kind')} at {error.get('file')}:{error.get('line')}")
        say(f"  {error.get('message', '')[:160]}")
        checks.check("4. missing data fails loudly",
                     missing["state"] == "failed" and error.get("kind") == "datasetMissing"
                     and "FileNotFoundError" in error.get("message", "")
                     and "dataset-missing" in codes and not missing["metrics"],
                     f"state {missing['state']}, diagnostics {codes}, "
                     f"metrics {missing['metrics'] or 'none'}")
    return checks.failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="labls-demo", description=__doc__)
    parser.add_argument("--epochs", type=int, help="fewer epochs for a quicker run")
    parser.add_argument("--keep", action="store_true", help="keep the demo folder")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="labls-demo-"))
    t0 = time.monotonic()
    try:
        failed = run_demo(base, args.epochs)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    say(f"\ndemo finished in {time.monotonic() - t0:.0f} s: "
        + ("all checks passed" if not failed else f"FAILED: {', '.join(failed)}"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
