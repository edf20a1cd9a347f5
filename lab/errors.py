"""The one error type of the lab core: an operation refused, with a message for the client."""

from __future__ import annotations


class LabError(ValueError):
    """Bad arguments or a refused operation. The message names the operation and, where there
    is one, the field (`labls.run.get: field 'runId' names no run: 'x'`); every front-end shows
    it as it is (LSP -32602, an MCP tool error, CLI exit code 2)."""
