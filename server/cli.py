"""The `labls` command line. Heavy imports (pygls, the engine) happen inside the verb that needs
them, so `labls --version` and `labls run` stay fast."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    from labls.lab import version

    parser = argparse.ArgumentParser(prog="labls", description=__doc__)
    parser.add_argument("--version", action="version", version=f"labls {version()}")
    sub = parser.add_subparsers(dest="verb", required=True)

    serve = sub.add_parser("serve", help="speak LSP over stdio (the default for editors)")
    serve.add_argument("--stdio", action="store_true", help="accepted for editor compatibility")
    serve.add_argument("--log-file", help="write logs here instead of stderr")
    serve.add_argument("-v", "--verbose", action="store_true", help="log every message")

    mcp = sub.add_parser("mcp", help="serve the same operations as MCP tools over stdio "
                         "(for coding agents; needs labls[mcp])")
    mcp.add_argument("--workspace", help="the workspace (default: the current folder)")
    mcp.add_argument("--log-file", help="write logs here instead of stderr")
    mcp.add_argument("-v", "--verbose", action="store_true", help="log at debug level")

    run = sub.add_parser("run", help="run a script in the sandbox, time-boxed, metrics captured")
    run.add_argument("script", help="the script's path (from the current folder, inside the "
                     "workspace); `-m MODULE` runs a module instead, e.g. `-m pytest -q`")
    run.add_argument("args", nargs=argparse.REMAINDER,
                     help="the script's arguments: everything after it (labls's go before it)")
    run.add_argument("--timeout", type=float, help="wall-clock budget in seconds")
    run.add_argument("--label", help="a label for the ledger")

    runs = sub.add_parser("runs", help="the run ledger, most recent first")
    runs.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    runs.add_argument("--state", help="only runs in this state")
    runs.add_argument("--json", action="store_true", help="one JSON summary per line")

    show = sub.add_parser("show", help="one run's record")
    show.add_argument("run_id", help="a run id, a unique start of one, or `last`")
    show.add_argument("--json", action="store_true", help="the whole record as JSON")
    show.add_argument("--follow", action="store_true",
                      help="print the run's log as it grows, until the run ends")

    cancel = sub.add_parser("cancel", help="cancel a queued or running run, whichever process "
                            "started it (a `labls run`, an editor's server, `labls mcp`)")
    cancel.add_argument("run_id", help="a run id, a unique start of one, or `last`")
    cancel.add_argument("--wait", type=float, default=60.0,
                        help="seconds to wait for the run's final record (default 60)")

    history = sub.add_parser("history", help="the experiment ledger (keep / discard / crash)")
    history.add_argument("--tsv", action="store_true", help="as autoresearch's results.tsv")
    history.add_argument("--limit", type=int, default=50, help="how many (default 50)")

    compare = sub.add_parser("compare", help="a run against its baseline on the judged metric")
    compare.add_argument("run_id", help="a run id, a unique start of one, or `last`")
    compare.add_argument("--baseline", help="this run as the baseline (default: the last kept "
                         "experiment, else the script's previous success)")

    edit = sub.add_parser("edit", help="apply an edit atomically inside the workspace")
    edit.add_argument("file", help="the edit's text: a file, or - for stdin")
    edit.add_argument("--format", default="searchReplace",
                      choices=["searchReplace", "udiff", "whole"], help="the edit's format")
    edit.add_argument("--path", help="the file a `whole` edit replaces")
    edit.add_argument("--dry-run", action="store_true", help="show what it would change")

    prompt = sub.add_parser("prompt", help="render a dataset-aware prompt template")
    prompt.add_argument("template", help="experiment, repair or network_disabled_guidance")
    prompt.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                        help="a template variable (repeatable)")
    prompt.add_argument("--run", help="fill a repair prompt from this run (id, start, `last`)")
    prompt.add_argument("--json", action="store_true", help="the answer as JSON")

    step = sub.add_parser("step", help="one experiment: edit, run loop.script, keep or discard")
    step.add_argument("hypothesis", help="what the edit tries, for the ledger")
    step.add_argument("file", help="the edit's text: a file, or - for stdin")
    step.add_argument("--format", default="searchReplace",
                      choices=["searchReplace", "udiff", "whole"], help="the edit's format")
    step.add_argument("--path", help="the file a `whole` edit replaces")
    step.add_argument("--timeout", type=float, help="the run's budget in seconds")

    loop = sub.add_parser("loop", help="the autonomous loop: propose, step, keep or discard")
    loop.add_argument("--iterations", type=int, default=3, help="how many (default 3)")
    loop.add_argument("--time-budget", type=float, help="stop starting iterations after SEC")
    loop.add_argument("--model", help="any litellm model name (default: loop.model)")
    loop.add_argument("--program", default="program.md",
                      help="the research program the model reads (default program.md)")
    loop.add_argument("--script", help="the script experiments change and run")
    loop.add_argument("--from", dest="source", help="clone this repository (path or URL) first")
    loop.add_argument("--into", help="where to clone it (default: a new folder here)")
    loop.add_argument("--prepare", help="a script run once before the first iteration")
    loop.add_argument("--prepare-timeout", type=float, default=600.0,
                      help="the prepare script's budget in seconds (default 600)")

    gc = sub.add_parser("gc", help="free the folders of old runs (dry run unless --yes)")
    gc.add_argument("--keep", type=int, help="run folders to keep whole (default: run.keep)")
    gc.add_argument("--logs", action="store_true", help="free their logs and results too")
    gc.add_argument("--yes", action="store_true", help="free them (else only show)")

    trust = sub.add_parser("trust", help="let this workspace's labls.toml (or [tool.labls]) "
                           "loosen the sandbox or change the judgement, as it reads now")
    trust.add_argument("--revoke", action="store_true", help="stop trusting it")

    ds = sub.add_parser("datasets", help="list or stage datasets in the cache root")
    ds_sub = ds.add_subparsers(dest="datasets_verb", required=True)
    ds_list = ds_sub.add_parser("list", help="what the cache root holds")
    ds_list.add_argument("--root", help="cache root (default: from the workspace config)")
    stage = ds_sub.add_parser("stage", help="write a bundled real dataset into the cache root")
    stage.add_argument("name", choices=["digits"])
    stage.add_argument("--root", required=True, help="the dataset cache root to write into")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if list(sys.argv[1:] if argv is None else argv) == ["serve"]:
        # What every editor starts: served before argparse is even imported (~5 ms).
        from .main import serve

        return serve()
    argv = list(sys.argv[1:] if argv is None else argv)
    module = _module_run(argv)
    args = build_parser().parse_args(argv)
    if module is not None:  # `labls run [opts] -m MODULE ARGS...`
        args.script, args.args = f"-m {module[0]}", module[1]
    if args.verb == "serve":
        from .main import serve

        return serve(log_file=args.log_file, verbose=args.verbose)
    if args.verb == "mcp":
        return _mcp(args)
    if args.verb == "datasets":
        return _datasets(args)
    if args.verb == "trust":
        return _trust(args)
    if args.verb == "run":
        # The run's first process starts now and joins its cgroup while the engine imports.
        from labls.sandbox.lifeline import Launcher

        launcher = Launcher(refill=False)  # one run: no spare standby to start and discard
        from . import cli_runs

        return cli_runs.run(args, launcher)
    if args.verb in ("runs", "show", "cancel", "history", "loop", "gc"):
        from . import cli_runs

        return int(getattr(cli_runs, args.verb)(args))
    if args.verb in ("compare", "edit", "prompt", "step"):
        from . import cli_ops

        return cli_ops.dispatch(args)
    return 2


def _module_run(argv: list[str]) -> tuple[str, list[str]] | None:
    """For `run ... -m MODULE ARGS`: the module and its arguments, taken out of `argv` (which
    then holds a stand-in script) so that argparse does not read the module's options."""
    if not argv or argv[0] != "run" or "-m" not in argv:
        return None
    at = argv.index("-m")
    if at + 1 >= len(argv) or any(not a.startswith("-") and argv[i - 1] not in (
            "--timeout", "--label") for i, a in enumerate(argv[1:at], 1)):
        return None  # a script came first: `-m` is its argument
    module, rest = argv[at + 1], argv[at + 2:]
    del argv[at:]
    argv.append("-m")  # (the stand-in script, replaced once parsed)
    argv.insert(len(argv) - 1, "--")
    return module, rest


def _mcp(args: argparse.Namespace) -> int:
    """`labls mcp`: the MCP server, logs to stderr (or a file): stdout is the wire."""
    import logging

    handler: logging.Handler = (logging.FileHandler(args.log_file) if args.log_file
                                else logging.StreamHandler(sys.stderr))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        handlers=[handler], format="%(asctime)s %(name)s %(message)s")
    try:
        from labls.mcpserver.server import main as serve_mcp
    except ImportError as exc:
        sys.stderr.write(f"labls mcp: the MCP SDK is not installed ({exc}): "
                         "pip install 'labls[mcp]'\n")
        return 2
    from pathlib import Path

    root = Path(args.workspace or Path.cwd()).resolve()
    if not root.is_dir():
        sys.stderr.write(f"labls mcp: no such workspace folder: {root}\n")
        return 2
    return serve_mcp(root)


def _trust(args: argparse.Namespace) -> int:
    """Record (or forget) the user's trust in the workspace file, direnv-style."""
    from pathlib import Path

    from labls.sandbox import config, trust

    workspace = Path.cwd()
    source, table, problems = config.workspace_source(workspace)
    if source is None or problems:
        why = problems[0] if problems else "no labls.toml and no [tool.labls] table here"
        sys.stderr.write(f"labls trust: nothing to trust in {workspace}: {why}\n")
        return 2
    if args.revoke:
        trust.record(source, None)
        sys.stdout.write(f"{source}: no longer trusted; it may only tighten\n")
        return 0
    loosening = [key for key in config.flatten(table)
                 if key in trust.RULES]
    trust.record(source, table)
    sys.stdout.write(f"{source}: trusted as it reads now (recorded in {trust.store_path()})\n")
    if loosening:
        sys.stdout.write("  it sets, with your authority: " + ", ".join(loosening) + "\n")
    sys.stdout.write("  any change to its labls settings makes it untrusted until you trust "
                     "it again\n")
    return 0


def _datasets(args: argparse.Namespace) -> int:
    from pathlib import Path

    from labls.sandbox import config, datasets

    if args.datasets_verb == "stage":
        from labls.sandbox.staging import stage_digits

        written = stage_digits(Path(args.root))
        for path in written:
            sys.stderr.write(f"wrote {path}\n")
        return 0
    cfg, _ = config.load(Path.cwd())
    scan = datasets.scan(args.root or cfg.dataset_cache_root, cfg.datasets)
    out = sys.stdout
    problem = f"  ({scan.root_error})" if scan.root_error else ""
    out.write(f"cache root: {scan.cache_root}{problem}\n")
    for d in scan.datasets:
        total = len(d.missing) + len(d.files)
        state = "present" if d.present else f"missing {len(d.missing)} of {total} files"
        out.write(f"  {d.name:<14} {state:<28} {d.path}\n")
    return 0


def console() -> None:
    """The `labls` program. After `labls run` every record is written and every helper reaped,
    so the process ends without the interpreter's teardown of its modules (~15 ms here)."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # `labls runs | head`: the reader is gone, nothing is wrong here
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 141  # as a shell reports a SIGPIPE'd command
    if len(sys.argv) > 1 and sys.argv[1] == "run":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    console()
