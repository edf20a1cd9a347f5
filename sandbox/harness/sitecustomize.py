"""labls run probe, loaded by Python at start-up from the run's PYTHONPATH.

It records, into the run's probe folder (outside the working folder):
- which files under the dataset cache root the run opened (a `sys.addaudithook` on "open"),
- every attempt to reach the network, with the workspace file and line that made it,
- where the code was when the budget ran out: `faulthandler` dumps every thread's stack on SIGUSR1,
  which the engine sends just before SIGTERM.
It also makes stdout and stderr line-buffered, as on a terminal: each line reaches the log (and
the live metrics) when it is printed and a kill loses no whole line, at one write per line
(`PYTHONUNBUFFERED` makes two per `print`, and tears lines).
Only the standard library; it must cost nothing measurable for events it does not care about.
"""

import contextlib
import faulthandler
import os
import signal
import sys
import types


def _line_buffered() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]


def _install() -> None:
    probe = os.environ.get("LABLS_PROBE_DIR")
    if not probe or not os.path.isdir(probe):
        return
    try:
        stack_file = open(os.path.join(probe, "stack.txt"), "w")  # noqa: SIM115
        faulthandler.register(signal.SIGUSR1, file=stack_file, all_threads=True)
        events = open(os.path.join(probe, "events.jsonl"), "a", buffering=1)  # noqa: SIM115
    except OSError:
        return
    roots = {os.path.normpath(os.environ.get("LABLS_DATASET_ROOT", "/nonexistent"))}
    roots.add(os.path.realpath(next(iter(roots))))
    prefixes = tuple(r + os.sep for r in roots)
    work = os.environ.get("LABLS_WORK_DIR", "\0")
    seen = set()
    local_hosts = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "", None}

    def where():  # -> (file, line) of the innermost workspace frame
        frame: types.FrameType | None = sys._getframe(2)
        first = None
        while frame is not None:
            name = frame.f_code.co_filename
            if first is None:
                first = (name, frame.f_lineno)
            if name.startswith(work):
                return name, frame.f_lineno
            frame = frame.f_back
        return first or ("", 0)

    def emit(record):
        import json  # lazily: most runs never emit, and json costs a millisecond at start-up

        with contextlib.suppress(OSError, ValueError):
            events.write(json.dumps(record) + "\n")

    def hook(event, args):
        if event == "open":
            path = args[0]
            if isinstance(path, int) or path is None:
                return
            try:
                full = os.path.normpath(os.path.abspath(os.fsdecode(path)))
            except (TypeError, ValueError):
                return
            if (full in roots or full.startswith(prefixes)) and full not in seen:
                seen.add(full)
                emit({"event": "open", "path": full})
        elif event == "socket.connect":
            address = args[1]
            host = address[0] if isinstance(address, tuple) and address else address
            file, line = where()
            emit({"event": "connect", "address": repr(address), "host": str(host),
                  "local": host in local_hosts or str(host).startswith("127."),
                  "file": file, "line": line})
        elif event == "socket.getaddrinfo":
            host = args[0]
            if isinstance(host, bytes):
                host = host.decode("ascii", "replace")
            if host not in local_hosts and not str(host).startswith("127."):
                file, line = where()
                emit({"event": "resolve", "host": str(host), "local": False,
                      "file": file, "line": line})

    sys.addaudithook(hook)


_line_buffered()
_install()
del _install, _line_buffered
