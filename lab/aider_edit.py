"""Ask a model for an edit through aider, in a subprocess of its own.

    python -m labls.lab.aider_edit --model openai/x --dir DIR --message-file M --reply-file R FILE…

aider (the `labls[aider]` extra) builds the prompt with the files, calls the model through litellm
and returns its reply; with `dry_run` it writes nothing. It runs in its own process because it
pins its own dependencies, takes a second to import and prints to stdout, which in the language
server is the JSON-RPC wire. The reply is written to the reply file; labls applies its
SEARCH/REPLACE blocks itself, atomically.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--message-file", required=True)
    parser.add_argument("--reply-file", required=True)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no cost-map download
    os.chdir(args.dir)
    from aider.coders import Coder
    from aider.io import InputOutput
    from aider.models import Model, model_info_manager

    if args.model not in model_info_manager.local_model_metadata:  # no model-info download
        model_info_manager.local_model_metadata[args.model] = {
            "max_input_tokens": 128_000, "max_output_tokens": 8_192, "mode": "chat",
            "input_cost_per_token": 0.0, "output_cost_per_token": 0.0,
            "litellm_provider": args.model.split("/", 1)[0]}
    io = InputOutput(yes=True, pretty=False, fancy_input=False, input_history_file=None,
                     chat_history_file=None)
    coder = Coder.create(main_model=Model(args.model), io=io, fnames=args.files,
                         edit_format="diff", auto_commits=False, dirty_commits=False,
                         dry_run=True, use_git=False, stream=False, map_tokens=0,
                         suggest_shell_commands=False, detect_urls=False, auto_lint=False)
    message = Path(args.message_file).read_text(encoding="utf-8")
    reply = coder.run(with_message=message) or ""
    Path(args.reply_file).write_text(reply, encoding="utf-8")
    return 0 if reply.strip() else 3


if __name__ == "__main__":
    sys.exit(main())
