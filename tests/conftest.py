"""The tests never read or write the machine's real user config: the whole session gets a config
dir of its own, set before any test module is imported (so module-level server environments
can name it), and a test that writes a user config file takes a fresh one
(`user_config_home`)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_SESSION_HOME: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _SESSION_HOME
    _SESSION_HOME = tempfile.mkdtemp(prefix="labls-test-xdg-config-")
    os.environ["XDG_CONFIG_HOME"] = _SESSION_HOME


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SESSION_HOME is not None:
        shutil.rmtree(_SESSION_HOME, ignore_errors=True)


@pytest.fixture
def user_config_home(tmp_path_factory: pytest.TempPathFactory,
                     monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh user config dir for this test; returns its `labls` folder."""
    home = tmp_path_factory.mktemp("xdg-config")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home / "labls"
