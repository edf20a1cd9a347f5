"""`make demo`: drive `labls serve` over stdio as an agent would, and check the results loudly.

Stages scikit-learn's bundled digits into a non-default cache root, then asks the server for the
datasets it sees and the dataset guidance it would give a model.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from labls.lab.rpc_client import LspClient
from labls.sandbox.staging import stage_digits


def say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def main() -> int:
    base = Path(tempfile.mkdtemp(prefix="labls-demo-"))
    cache = base / "datasets"
    workspace = base / "ws"
    workspace.mkdir()
    (workspace / "labls.toml").write_text(f'dataset_cache_root = "{cache}"\n')
    stage_digits(cache)
    say(f"staged scikit-learn digits under {cache}")
    failures = 0
    with LspClient(workspace) as client:
        client.initialize()
        listing = client.command("labls.datasets.list")
        present = [d["name"] for d in listing["datasets"] if d["present"]]
        say(f"labls.datasets.list: cache root {listing['cacheRoot']}, present: {present}")
        guidance = client.command("labls.prompt.render", {"template": "network_disabled_guidance"})
        text = guidance["text"]
        say("\n--- network_disabled_guidance (first 30 lines) ---")
        say("\n".join(text.splitlines()[:30]))
        say("---")
        for name, ok in [("root in prompt", str(cache) in text),
                         ("digits available", present == ["digits"]),
                         ("no-synthetic rule", "FileNotFoundError" in text)]:
            say(f"[{'PASS' if ok else 'FAIL'}] {name}")
            failures += not ok
    shutil.rmtree(base, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
