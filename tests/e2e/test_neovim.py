"""A second, independent client: Debian's Neovim 0.7 drives labls, reads the diagnostic, runs
from the code lens and lists the code actions."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

NVIM = shutil.which("nvim")
CLIENT = Path(__file__).with_name("nvim_client.lua")
EDITOR = Path(__file__).with_name("nvim_editor.lua")
PLUGIN_DRIVER = Path(__file__).with_name("nvim_plugin.lua")
PLUGIN = Path(__file__).resolve().parents[2] / "editors" / "nvim"


def neovim(tmp_path: Path, driver: Path, files: dict[str, str], cwd: str = "") -> dict:
    """Headless Neovim running `driver` on `train.py` of a workspace holding `files`, from
    the folder `cwd` of it; what the driver wrote to $LABLS_OUT."""
    ws = tmp_path / "ws"
    (ws / cwd).mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (ws / name).write_text(text)
    xdg = tmp_path / "xdg"
    env = {**os.environ, "LABLS_OUT": str(tmp_path / "out.json"), "LABLS_WS": str(ws),
           "LABLS_PYTHON": sys.executable, "LABLS_PLUGIN": str(PLUGIN),
           "LABLS_TESTS": str(Path(__file__).parent)}
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        env[name] = str(xdg / name.lower())
    assert NVIM is not None
    done = subprocess.run([NVIM, "--headless", "-n", "-i", "NONE", "-u", str(driver),
                           str(ws / "train.py")], cwd=ws / cwd, env=env, capture_output=True,
                          timeout=120)
    assert (tmp_path / "out.json").exists(), done.stderr.decode(errors="replace")[-2000:]
    return json.loads((tmp_path / "out.json").read_text())


@pytest.mark.skipif(NVIM is None, reason="neovim is not installed (make test installs it)")
def test_neovim_reads_the_exception_diagnostic_at_the_raising_line(tmp_path: Path) -> None:
    result = neovim(tmp_path, CLIENT, {
        "train.py": "import math\nprint('loss: 1.0')\n\nvalue = math.sqrt(-1)\n"})
    assert not result.get("error") and not result["timed_out"], result
    assert result["answer"]["result"]["runId"]
    errors = [d for d in result["diagnostics"] if d["code"] == "exception"]
    assert len(errors) == 1, result["diagnostics"]
    assert errors[0]["lnum"] == 3 and errors[0]["source"] == "labls"
    assert "ValueError: math domain error" in errors[0]["message"]


@pytest.mark.skipif(NVIM is None, reason="neovim is not installed (make test installs it)")
def test_neovim_runs_from_the_lens_and_gets_the_actions_and_the_last_run(tmp_path: Path) -> None:
    result = neovim(tmp_path, EDITOR, {
        "train.py": 'print("loss: 1.0")\nif __name__ == "__main__":\n    raise KeyError("lr")\n'})
    assert not result.get("error"), result
    assert result["run_lens"]["title"] == "▶ Run in labls"
    assert result["started"]["runId"]
    assert result["actions"][:2] == ["Repair with the repair prompt", "Open the run's log"], result
    assert result["last"]["command"]["title"].startswith("last: val_bpb: none (failed, ")


@pytest.mark.skipif(NVIM is None, reason="neovim is not installed (make test installs it)")
def test_the_neovim_plugin_runs_lists_and_cancels(tmp_path: Path) -> None:
    result = neovim(tmp_path, PLUGIN_DRIVER, {
        "labls.toml": "[run]\nkill_grace_sec = 1\n",
        "train.py": 'print("loss: 1.0")\nraise KeyError("lr")\n',
        "forever.py": "import time\ntime.sleep(60)\n"}, cwd="src")
    assert not result.get("error"), result
    assert result["root"] == str(tmp_path / "ws")  # found by walking up to labls.toml
    assert result["diagnostic"] and result["started"] and result["cancelled"], result["notes"]
    assert any("train.py exception" in line for line in result["runs"]), result["runs"]
