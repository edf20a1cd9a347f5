"""A third client: Debian's Emacs 28 with eglot 1.9, in batch mode, set up as README.md's
snippet says. It reads a failed run's diagnostic through flymake, lists the code actions on it,
sees the run's progress as log lines (eglot has no work-done progress), edits a buffer that
holds an unsaved change, and sends an edit that eglot answers with an error. (eglot 1.9 has
no code lenses: that part is Neovim's and VS Code's.) And lsp-mode 8.0 running labls as an
add-on client beside the buffer's main Python server, as README.md's other snippet says."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EMACS = shutil.which("emacs")
DRIVER = Path(__file__).with_name("emacs_eglot.el")
pytestmark = pytest.mark.skipif(
    EMACS is None, reason="Emacs is not installed (make setup installs emacs-nox elpa-eglot)")


def in_batch(driver: Path, ws: Path, tmp_path: Path, **extra_env: str) -> dict:
    """Emacs in batch mode loading `driver` in `ws`: what the driver saw (its out.json)."""
    env = {**os.environ, "LABLS_WS": str(ws), "LABLS_OUT": str(tmp_path / "out.json"),
           "LABLS_PYTHON": sys.executable, "HOME": str(tmp_path / "home"), **extra_env}
    assert EMACS is not None
    done = subprocess.run([EMACS, "--batch", "-q", "-l", str(driver)], cwd=ws, env=env,
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=240)
    stderr = done.stderr.decode(errors="replace")[-3000:]
    assert (tmp_path / "out.json").exists(), stderr
    seen = json.loads((tmp_path / "out.json").read_text())
    assert "error" not in seen, (seen, stderr)
    return seen


def test_eglot_shows_the_diagnostic_its_actions_progress_and_keeps_unsaved_work(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "bad.py").write_text("def main():\n    raise ValueError('boom')\n\n\nmain()\n")
    (ws / "buffered.py").write_text("A = 1\nB = 2\n")
    subprocess.run(["git", "init", "-q", str(ws)], check=True)  # (eglot's project: the repo)
    seen = in_batch(DRIVER, ws, tmp_path)
    assert seen["connected"] and seen["state"] == "failed"
    lines = {d["line"]: d["text"] for d in seen["diagnostics"]}
    assert "ValueError" in lines.get(2, ""), seen["diagnostics"]  # the raising line
    assert "Repair with the repair prompt" in seen["actions"], seen["actions"]
    assert "Open the run's log" in seen["actions"], seen["actions"]
    assert seen["log-lines"] >= 2  # the run's start and its end, as window/logMessage
    assert seen["edit-ok"] and seen["edit-via"] == "editor"
    assert seen["buffer"] == "# mine\nA = 1\nB = 20\n"  # the user's unsaved line survives
    assert seen["modified"] and (ws / "buffered.py").read_text() == "A = 1\nB = 2\n"
    # eglot's confirmation could not be asked: eglot answered an error, labls a refused edit
    assert seen["unasked-ok"] is False and "the editor answered an error" in seen[
        "unasked-reason"], seen
    assert seen["buffer-after"] == seen["buffer"]


LSP_MODE = Path(__file__).with_name("emacs_lsp_mode.el")
BARE_SERVER = Path(__file__).resolve().parents[2] / "bench" / "bare_pygls_server.py"


def lsp_mode_installed() -> bool:
    return any(Path("/usr/share/emacs/site-lisp/elpa").glob("lsp-mode-*"))


@pytest.mark.skipif(not lsp_mode_installed(), reason="lsp-mode is not installed "
                    "(make setup installs elpa-lsp-mode)")
def test_lsp_mode_runs_labls_beside_the_python_server(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "bad.py").write_text("def main():\n    raise ValueError('boom')\n\n\nmain()\n")
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    seen = in_batch(LSP_MODE, ws, tmp_path, LABLS_MAIN=str(BARE_SERVER))
    assert sorted(seen["servers"]) == ["labls", "main-python"]  # both serve the buffer
    assert seen["state"] == "failed"
    assert any("ValueError: boom" in text for text in seen["diagnostics"]), seen
    assert sorted(seen["still-both"]) == ["labls", "main-python"]
