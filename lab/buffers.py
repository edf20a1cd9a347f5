"""An editor's open buffers, as the lab core sees them while a step or a loop edits files.

A step writes its edit on disk (the run reads it there, git commits it there) and restores the
files on disk when it discards. An editor holding one of those files open must neither be left
showing the old text (a save would then undo the step, or mix the two) nor lose what the user
typed and has not saved. A front-end with an editor gives the session an `OpenBuffers`:

- `unsaved(planned)`: those of the paths a step will write (`planned`: path → the text it
  writes) open with text that is neither the file's on disk nor the planned one; a step touching
  one is refused before it edits anything (its edit would be planned, run and committed against
  the disk, not against what the user sees). A buffer already showing the planned text (the
  user's own unsaved edit, run as a step) is no conflict;
- `follow(paths)`: each open buffer of `paths` is brought to the file's text on disk, through
  the editor (versioned minimal edits: cursor, marks and undo stay); the paths the editor
  refused are returned, and the step notes them.

Front-ends without an editor (the CLI, the MCP server) have none: disk is all there is.
"""

from __future__ import annotations

from typing import Protocol


class OpenBuffers(Protocol):
    def unsaved(self, planned: dict[str, str]) -> list[str]: ...

    def follow(self, paths: list[str]) -> list[str]: ...
