"""Fixtures shared by the engine and sandbox tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from labls.sandbox.config import Config, merge
from labls.sandbox.engine import Engine, RunRequest
from labls.sandbox.records import RunRecord
from tests.helpers import make_cache


@pytest.fixture
def lab(tmp_path: Path):
    """A workspace, a dataset cache holding MNIST, and an engine; yields a helper."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    cache = make_cache(tmp_path / "cache", ["MNIST"])

    class Lab:
        ws = workspace
        root = cache

        def __init__(self) -> None:
            self.engine: Engine | None = None

        def configure(self, **run: object) -> Engine:
            cfg, problems = merge(Config(), {"dataset_cache_root": str(cache),
                                             "run": {"kill_grace_sec": 1, **run}})
            assert not problems
            if self.engine:
                self.engine.close()
            self.engine = Engine(workspace, cfg)
            return self.engine

        def run(self, source: str, timeout: float = 30, name: str = "exp.py",
                args: list[str] | None = None, **run_cfg: object) -> RunRecord:
            (workspace / name).write_text(textwrap.dedent(source))
            engine = self.configure(**run_cfg) if run_cfg or self.engine is None else self.engine
            started = engine.start(RunRequest(name, args or [], timeout_sec=timeout))
            final = engine.wait(started.run_id, timeout + 30)
            assert final is not None and final.final, final
            return final

    helper = Lab()
    yield helper
    if helper.engine:
        helper.engine.close()
