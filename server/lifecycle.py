"""Lifecycle and configuration notifications."""

from __future__ import annotations

import asyncio
from typing import Any

from lsprotocol import types

from .app import LabServer


def register(server: LabServer) -> None:
    @server.feature(types.INITIALIZE)
    def initialize(ls: LabServer, params: types.InitializeParams) -> None:
        ls.remember_init_options(params.initialization_options)

    @server.feature(types.INITIALIZED)
    async def initialized(ls: LabServer, params: types.InitializedParams) -> None:
        # Config is read here, not in `initialize`: no command can arrive before `initialized`,
        # and keeping `initialize` bare makes the editor's start-up as fast as pygls allows.
        ls.load_config()
        await ls.on_initialized()

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(
        ls: LabServer, params: types.DidChangeConfigurationParams
    ) -> None:
        ls.load_config(settings=params.settings)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: LabServer, params: types.DidSaveTextDocumentParams) -> None:
        if params.text_document.uri.endswith(("/labls.toml", "/pyproject.toml")):
            ls.load_config()

    @server.feature(types.WINDOW_WORK_DONE_PROGRESS_CANCEL)
    async def progress_cancel(ls: LabServer, params: types.WorkDoneProgressCancelParams) -> None:
        """The user cancelled a run's progress in the editor: the run is cancelled."""
        await ls.until_ready()
        run_id = ls.runs.run_of_token(params.token) if ls.runs is not None else None
        if run_id is not None:
            await asyncio.to_thread(ls.require_session().cancel, run_id, "labls.run.cancel")

    @server.feature(types.SHUTDOWN)
    def shutdown(ls: LabServer, params: Any) -> None:
        ls.stop_all_runs()
