"""The language server object: one `LanguageServer` subclass holding labls's state."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import importlib
import json
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cattrs import transform_error
from cattrs.errors import ClassValidationError
from lsprotocol import types
from pygls.exceptions import JsonRpcInternalError, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol, lsp_method
from pygls.protocol.json_rpc import JsonRPCNotification

from labls.lab import version

if TYPE_CHECKING:
    from labls.lab.session import LabSession
    from labls.sandbox.config import Config, ConfigProblem

    from .runs import RunService

log = logging.getLogger("labls")

# The workDoneToken of the executeCommand request being handled (pygls hands commands only
# their arguments). Tasks copy the context when created, so each command sees its own token.
current_work_done_token: contextvars.ContextVar[str | int | None] = contextvars.ContextVar(
    "work_done_token", default=None
)


# What a request answered at once as malformed becomes: a notification no handler takes.
DROPPED = JsonRPCNotification(method="$/labls/answeredMalformed", jsonrpc="2.0", params=None)


class Encoded:
    """An answer already encoded to JSON by a worker thread (`commands._translated`): pygls
    would encode it on the event loop (cattrs's walk, then `json.dumps`: 60-100 ms for a page
    of 10^4 metrics, during which no other request is served)."""

    __slots__ = ("body",)

    def __init__(self, value: Any) -> None:
        self.body = json.dumps(value).encode()  # (pygls's own settings: ASCII, NaN allowed)


class LabProtocol(LanguageServerProtocol):
    def _execute_handler(self, msg_id: Any, handler: Any, callback: Any,
                         args: Any = None, kwargs: Any = None) -> None:
        """pygls runs the step a generator handler yields (every `executeCommand`: its
        command) under a made-up id in `_request_futures` and never takes it out: each
        command's finished task and its answer stayed in memory for the server's life (4,061
        after bench_lsp_wide.py, its pages ~1 MB each). Now it leaves when done."""
        super()._execute_handler(msg_id, handler, callback, args, kwargs)
        future = self._request_futures.get(msg_id)
        if future is not None:
            def forget(done: Any) -> None:
                if self._request_futures.get(msg_id) is done:
                    del self._request_futures[msg_id]

            future.add_done_callback(forget)

    def _send_data(self, data: Any) -> None:
        """A response whose result is `Encoded` is framed around its bytes; the rest as pygls
        sends it."""
        result = getattr(data, "result", None)
        if not isinstance(result, Encoded) or self.writer is None:
            super()._send_data(data)
            return
        body = b'{"id": %s, "jsonrpc": "2.0", "result": %s}' % (
            json.dumps(data.id).encode(), result.body)
        header = (f"Content-Length: {len(body)}\r\n"
                  f"Content-Type: {self.CONTENT_TYPE}; charset={self.CHARSET}\r\n\r\n"
                  if self._include_headers else "")
        self.writer.write(header.encode() + body)  # (stdio's writer: synchronous)

    def structure_message(self, data: dict[str, Any]) -> Any:
        """A request whose params do not have the LSP shape is answered -32602 naming what is
        wrong (pygls would log it and leave the client waiting for ever); a malformed
        notification is dropped, as before."""
        try:
            return super().structure_message(data)
        except (JsonRpcInvalidParams, JsonRpcInternalError) as exc:
            if not (isinstance(data, dict) and "id" in data and "method" in data):
                raise
            cause = exc.__cause__
            why = "; ".join(transform_error(cause)[:5]) if isinstance(
                cause, ClassValidationError) else repr(cause)
            self._send_response(data["id"], error=types.ResponseError(
                code=types.ErrorCodes.InvalidParams,
                message=f"{data['method']}: the request does not have the LSP shape: {why}"))
            return DROPPED

    @lsp_method(types.WORKSPACE_EXECUTE_COMMAND)
    def lsp_workspace__execute_command(self, params: types.ExecuteCommandParams) -> Any:
        current_work_done_token.set(params.work_done_token)
        server = self._server
        if isinstance(server, LabServer):
            server.refresh_config()  # labls.toml, the user's config or trust changed on disk
        return (yield from super().lsp_workspace__execute_command(params))


def _unwrap(settings: Any) -> Any:
    """Clients send either the settings themselves or `{"labls": {...}}`."""
    if isinstance(settings, dict) and isinstance(settings.get("labls"), dict):
        return settings["labls"]
    return settings


class LabServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("labls", version(), protocol_cls=LabProtocol)
        self._config: Config | None = None
        self._init_options: Any = None
        self._client_settings: Any = None
        self._config_stamp: tuple[Any, ...] | None = None
        self.runs: RunService | None = None  # built on `initialized`, once the config is known
        self.runs_error: str | None = None  # why they could not be (e.g. the state dir)
        self.main_loop: asyncio.AbstractEventLoop | None = None  # set by `initialize`
        self._ready: asyncio.Future[None] | None = None  # the runs opened, on `initialized`

    @property
    def root(self) -> Path:
        root = self.workspace.root_path if self.workspace else None
        return Path(root).resolve() if root else Path.cwd().resolve()

    @property
    def config(self) -> Config:
        if self._config is None:
            self.load_config()
        assert self._config is not None
        return self._config

    def remember_init_options(self, options: Any) -> None:
        self.main_loop = asyncio.get_running_loop()
        self._init_options = _unwrap(options or {})

    def load_config(self, settings: Any = None) -> list[ConfigProblem]:
        """Rebuild the config from every layer; keep what was valid, return the problems."""
        from labls.sandbox import config as config_model

        if settings is not None:
            self._client_settings = _unwrap(settings)
        self._config_stamp = config_model.files_stamp(self.root)
        self._config, problems = config_model.load(
            self.root, self._init_options, self._client_settings
        )
        if self.runs is not None:  # new runs use the new settings; running ones keep theirs
            self.runs.session.config = self._config
        for problem in problems:
            log.warning("%s", problem)
            self.window_show_message(
                types.ShowMessageParams(type=types.MessageType.Warning, message=str(problem))
            )
        return problems

    def refresh_config(self) -> None:
        """Reload when a file the config comes from changed since it was read: a `labls
        trust` in a terminal, or a labls.toml written outside the editor, counts at the next
        command (warnings shown again), not only after a didSave or a restart."""
        from labls.sandbox import config as config_model

        if self._config is not None and config_model.files_stamp(self.root) != (
                self._config_stamp):
            self.load_config()

    async def on_initialized(self) -> None:
        """The lab core is imported and its session opened by a worker thread (40-120 ms of
        imports: on the loop, every message behind them would wait); what needs it meanwhile
        waits for it (`until_ready`), the rest is served."""
        log.info("labls initialized for %s", self.root)
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        try:
            self.runs = await asyncio.to_thread(self._open_runs, loop)
            self.runs.session.config = self.config  # (settings the editor sent meanwhile)
            self.runs.watch_soon()
        except Exception as exc:  # an unusable state dir: every command says so, by path
            state = self.config.state_path(self.root)
            self.runs_error = f"labls cannot use its state dir {state}: {exc}"
            log.error("%s", self.runs_error)
            self.window_show_message(types.ShowMessageParams(
                type=types.MessageType.Error, message=self.runs_error))
        finally:
            self._ready.set_result(None)
        threading.Thread(target=_prewarm, name="labls-prewarm", daemon=True).start()

    def _open_runs(self, loop: asyncio.AbstractEventLoop) -> RunService:
        from .runs import RunService

        runs = RunService(self, loop)
        runs.session.resume_loops()
        return runs

    async def until_ready(self) -> None:
        """Once `initialized` has come, wait until the runs are open (or failed to)."""
        if self._ready is not None:
            await asyncio.shield(self._ready)

    def require_runs(self) -> RunService:
        if self.runs is None:
            from pygls.exceptions import JsonRpcInternalError, JsonRpcServerNotInitialized

            if self.runs_error is not None:
                raise JsonRpcInternalError(self.runs_error)
            raise JsonRpcServerNotInitialized("labls: the `initialized` notification has not come")
        return self.runs

    def require_session(self) -> LabSession:
        return self.require_runs().session

    def framing_problem(self, message: str) -> None:
        """A message the framing dropped (called from pygls's reader thread): tell the user
        from the server's loop, the only place that writes the wire."""
        notice = types.ShowMessageParams(type=types.MessageType.Error,
                                         message=f"labls: {message}")
        if self.main_loop is not None and not self.main_loop.is_closed():
            self.main_loop.call_soon_threadsafe(self.window_show_message, notice)

    def stop_all_runs(self) -> None:
        """Every run of this server stops (whole process trees) and is recorded `cancelled`."""
        if self.runs is not None:
            self.runs.stop_all()


def _prewarm() -> None:
    """Import what the first commands need, off the request path."""
    for name in ("labls.lab.params", "labls.lab.prompting", "jinja2", "labls.server.edits",
                 "labls.lab.session"):
        importlib.import_module(name)
    from labls.prompts import _environment

    _environment()
    # What is loaded by now lives as long as the server: out of the cyclic GC's full
    # collections, which otherwise walk its ~70,000 objects again every few hundred ms while
    # answers are being built (30-45 ms each on 2 busy cores, in bench_lsp_wide.py).
    gc.freeze()
