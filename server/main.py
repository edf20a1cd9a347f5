"""Build the server and serve LSP over stdio. Logs go to stderr or a file, never stdout."""

from __future__ import annotations

import logging
import sys

from . import commands, editor, lifecycle
from .app import LabServer
from .framing import BoundedStdin, QueuedStdout


def build_server() -> LabServer:
    server = LabServer()
    lifecycle.register(server)
    commands.register(server)
    editor.register(server)
    return server


SWITCH_INTERVAL_SEC = 0.001


def serve(log_file: str | None = None, verbose: bool = False) -> int:
    handler: logging.Handler = (
        logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    )
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        handlers=[handler],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:  # pygls logs every message at INFO: too costly while runs stream
        logging.getLogger("pygls").setLevel(logging.WARNING)
    # The run threads (parsing a run's output, judging it) share the interpreter with the event
    # loop: at the default 5 ms switch interval a request waited up to ~350 ms behind a run of
    # 10^6 metric lines on 2 cores; at 1 ms the loop gets its turn sooner (bench_lsp_wide).
    sys.setswitchinterval(SWITCH_INTERVAL_SEC)
    server = build_server()
    stdin = BoundedStdin(sys.stdin.buffer, on_problem=server.framing_problem)
    stdout = QueuedStdout(sys.stdout.buffer)
    try:
        server.start_io(stdin=stdin, stdout=stdout)  # type: ignore[arg-type]  # (BinaryIO)
    finally:
        server.stop_all_runs()
        stdout.close()
    return 0
