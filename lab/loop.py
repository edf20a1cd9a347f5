"""The autonomous loop: hypothesis → edit → time-boxed run → keep or discard, until a budget ends.

Each iteration asks the model (through aider, `aider_edit.py`) for one change to the script, given
`program.md`, the ledger so far and the dataset guidance, and hands the reply to
`Experiment.step`. A crash is followed by up to `loop.repair_attempts` repairs: the crashed code
and the `repair` prompt go back to the model, and the fixed code is stepped again.

State lives in the registry after every iteration, so a loop survives a restart of its server: it
resumes with the iterations left, after setting aside anything a killed step left in the tree.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from labls.prompts import render
from labls.sandbox import gitsafe
from labls.sandbox.wire import named, to_wire

from .commits import StepRefused, git
from .editplan import confine
from .edits import parse_blocks, replace_chunk
from .experiment import Experiment, StepResult, results_tsv
from .prompting import base_context, repair_context
from .protect import Guard

Proposer = Callable[[str, dict[str, str]], str]  # (prompt, {path: text}) → the model's reply


@dataclass
class LoopSpec:
    iterations: int = 3
    time_budget_sec: float | None = None
    model: str = ""
    program: str = "program.md"
    script: str = "train.py"
    timeout_sec: float | None = None
    prepare: str | None = None  # a script run once, before the first iteration
    prepare_timeout_sec: float = 600.0


@dataclass
class LoopState:
    loop_id: str
    spec: LoopSpec
    state: str = "running"  # running | finished | stopped | failed
    iterations: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    started_at: float = field(default_factory=time.time)
    prepared: dict[str, Any] | None = field(default=None, metadata=named("prepare"))


def aider_proposer(model: str, timeout: float = 600) -> Proposer:
    """Ask `model` through aider in a subprocess; its stdout never reaches ours."""

    def propose(prompt: str, files: dict[str, str]) -> str:
        with tempfile.TemporaryDirectory(prefix="labls-model-") as tmp:
            folder = Path(tmp)
            for rel, text in files.items():
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                (folder / rel).write_text(text, encoding="utf-8")
            (folder / ".message").write_text(prompt, encoding="utf-8")
            done = subprocess.run(
                [sys.executable, "-m", "labls.lab.aider_edit", "--model", model, "--dir", tmp,
                 "--message-file", ".message", "--reply-file", ".reply", *files],
                capture_output=True, text=True, timeout=timeout, check=False,
                env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
            reply = folder / ".reply"
            if done.returncode != 0 or not reply.exists():
                tail = (done.stderr or done.stdout)[-1500:]
                raise RuntimeError(f"the model gave no reply (aider exit {done.returncode}): "
                                   f"{tail}")
            return reply.read_text(encoding="utf-8")

    return propose


def hypothesis_of(reply: str) -> str:
    for line in reply.splitlines():
        if line.strip().upper().startswith("HYPOTHESIS:"):
            return line.split(":", 1)[1].strip()[:300]
    first = next((ln.strip() for ln in reply.splitlines() if ln.strip()), "")
    return first[:300] or "(no hypothesis given)"


class AutoLoop:
    def __init__(self, experiment: Experiment, state: LoopState, proposer: Proposer,
                 save: Callable[[LoopState], None]) -> None:
        self.exp = experiment
        self.cfg = experiment.cfg
        self.state = state
        self.spec = state.spec
        self.propose = proposer
        self.save = save
        self.stop_requested = threading.Event()
        self.thread = threading.Thread(target=self._main, name=f"labls-loop-{state.loop_id}",
                                       daemon=True)

    def start(self) -> None:
        self.save(self.state)
        self.thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self.stop_requested.set()
        for run_id in self.exp.engine.active_ids():
            self.exp.engine.cancel(run_id, timeout=0)
        self.thread.join(timeout)

    def _main(self) -> None:
        deadline = (time.monotonic() + self.spec.time_budget_sec
                    if self.spec.time_budget_sec else None)
        try:
            self.exp.recover()  # a step its last process left unfinished is undone first
            set_aside_leftovers(self.exp.workspace, self.state.loop_id)
            if self.spec.prepare and self.state.prepared is None:
                self.state.prepared = self._prepare()
                self.save(self.state)
            while len(self.state.iterations) < self.spec.iterations:
                if self.stop_requested.is_set():
                    self.state.state = "stopped"
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
                self.state.iterations.append(self._iteration(len(self.state.iterations) + 1))
                self.save(self.state)
            if self.state.state == "running":
                self.state.state = "stopped" if self.stop_requested.is_set() else "finished"
        except Exception as exc:  # whatever it was, the loop ends `failed` and says why
            self.state.state, self.state.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            self.save(self.state)

    def _prepare(self) -> dict[str, Any]:
        """Run the prepare script once under its own budget. It is the one run that may write
        into the dataset cache root (its working folder is thrown away like any run's); it
        needs to print no metrics."""
        from labls.sandbox.engine import RunRequest

        assert self.spec.prepare is not None
        started = self.exp.engine.start(RunRequest(
            self.spec.prepare, [], self.spec.prepare_timeout_sec, label="prepare",
            writable_datasets=True))
        record = self.exp.wait(started.run_id)
        kind = (record.error or {}).get("kind")
        if record.state != "succeeded" and kind != "noMetrics":
            raise RuntimeError(f"prepare script {self.spec.prepare} {record.state}: "
                               f"{(record.error or {}).get('message', '')}")
        return {"runId": record.run_id, "state": str(record.state)}

    def _iteration(self, index: int) -> dict[str, Any]:
        script = self.spec.script
        source = _workspace_text(self.exp.workspace, script, "the loop's script")
        reply = self.propose(self._prompt(), {script: source})
        hypothesis = hypothesis_of(reply)
        result = self.exp.step(hypothesis, {"format": "searchReplace", "text": reply}, script,
                               self.spec.timeout_sec)
        attempts: list[dict[str, Any]] = []
        while (result.verdict == "crash" and result.run is not None and result.discarded_ref
               and len(attempts) < self.cfg.loop.repair_attempts
               and not self.stop_requested.is_set()):
            fixed = self._repair(result)
            attempts.append(_summary(result))
            if fixed is None:
                break
            result = self.exp.step(f"{hypothesis} (repair {len(attempts)})",
                                   {"format": "whole", "path": script, "text": fixed}, script,
                                   self.spec.timeout_sec)
        return {"index": index, "hypothesis": hypothesis, **_summary(result),
                "repairs": attempts}

    def _prompt(self) -> str:
        program = (_workspace_text(self.exp.workspace, self.spec.program, "the program")
                   if (self.exp.workspace / self.spec.program).is_file()
                   else "Improve the judged metric.")
        context = base_context(self.cfg)
        context.update(program=program, ledger=results_tsv(self.exp.ledger.rows()),
                       script=self.spec.script, min_delta=self.cfg.metric.min_delta)
        return render("loop_step", context)

    def _repair(self, crashed: StepResult) -> str | None:
        """The crashed code fixed by the model, or None if its reply does not apply."""
        assert crashed.run is not None and crashed.discarded_ref is not None
        script = self.spec.script
        code = git(self.exp.workspace, "show", f"{crashed.discarded_ref}:{script}")
        context = base_context(self.cfg)
        context.update(repair_context(crashed.run, self.exp.workspace, crashed.discarded_ref))
        reply = self.propose(render("repair", context), {script: code})
        for path, search, replace in parse_blocks(reply):
            if path.strip() not in ("", script):
                continue
            updated = replace_chunk(code, search, replace) if search.strip() else None
            if updated is None:
                return None
            code = updated
        return code


@dataclass
class Attempt:
    """One step of an iteration, as the loop's state lists it (wire form: `to_wire`)."""

    verdict: str
    reason: str
    run_id: str | None
    commit: str | None
    discarded_ref: str | None
    metric: float | None


def _summary(result: StepResult) -> dict[str, Any]:
    run, c = result.run, result.comparison
    wire: dict[str, Any] = to_wire(Attempt(result.verdict, result.reason,
                                           run.run_id if run else None, result.commit,
                                           result.discarded_ref, c.current if c else None))
    return wire


def set_aside_leftovers(workspace: Path, loop_id: str) -> None:
    """A step killed mid-run leaves edited files: stash them (nothing lost), leave a clean tree."""
    if git(workspace, "status", "--porcelain", "--untracked-files=no", check=False):
        git(workspace, "-c", "user.name=labls", "-c", "user.email=labls@localhost", "stash",
            "push", "-m", f"labls: files left by an interrupted step of loop {loop_id}")


def clone_into(source: str, into: Path) -> None:
    """A fresh working copy of a repository given by path or URL (git clone handles both).
    The clone is untrusted like any workspace: its own labls.toml may only tighten."""
    if into.exists() and any(into.iterdir()):
        raise RuntimeError(f"{into} exists and is not empty")
    gitsafe.clone(source, into)


def _workspace_text(workspace: Path, rel: str, what: str) -> str:
    """A text file the loop sends to the model: inside the workspace, never through a link
    out of it, never labls's own files."""
    real = confine(workspace, rel)
    why = Guard(workspace).why(real)
    if why:
        raise StepRefused(f"{what} {rel!r} is {why}")
    try:
        return (workspace / real).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise StepRefused(f"{what} {rel!r} is not UTF-8 text") from None


def new_loop_id() -> str:
    return f"loop-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def state_to_json(state: LoopState) -> dict[str, Any]:
    """The form the ledger stores (snake_case, every field)."""
    return asdict(state)


def state_from_json(data: dict[str, Any]) -> LoopState:
    return LoopState(data["loop_id"], LoopSpec(**data["spec"]), data["state"],
                     data["iterations"], data.get("error"), data["started_at"],
                     data.get("prepared"))
