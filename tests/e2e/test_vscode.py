"""The VS Code extension (editors/vscode) builds and type-checks with npm, as CI does. VS Code
itself cannot be launched on these machines, so the extension is not run here."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

EXTENSION = Path(__file__).resolve().parents[2] / "editors" / "vscode"
NPM = shutil.which("npm")


@pytest.mark.skipif(NPM is None or not (EXTENSION / "node_modules").is_dir(),
                    reason="npm or the extension's node_modules are missing (make setup)")
@pytest.mark.parametrize("script", ["compile", "lint"])
def test_the_extension_builds_and_type_checks(script: str) -> None:
    assert NPM is not None
    done = subprocess.run([NPM, "run", "-s", script], cwd=EXTENSION, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    if script == "compile":
        assert (EXTENSION / "out" / "extension.js").is_file()


def test_the_extension_contributes_its_commands_and_settings() -> None:
    manifest = json.loads((EXTENSION / "package.json").read_text())
    commands = {c["command"] for c in manifest["contributes"]["commands"]}
    assert commands == {"labls.runCurrentFile", "labls.showRuns", "labls.cancelRun"}
    source = (EXTENSION / "src" / "extension.ts").read_text()
    for command in commands:
        assert f'registerCommand("{command}"' in source
    assert manifest["activationEvents"] == ["onLanguage:python"]
    assert set(manifest["contributes"]["configuration"]["properties"]) == {
        "labls.command", "labls.settings"}
