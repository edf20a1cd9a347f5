"""docs/PROTOCOL.md is the wire contract: this keeps it true to the code. Every command the
language server registers is in the commands table with exactly its params model's fields,
every MCP tool is in the tools table naming its command, every config key is in the
configuration table (and nothing documented is missing from the code)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from labls.lab import params as p
from labls.sandbox.config import Config
from labls.sandbox.wire import camel_case
from labls.server.commands import COMMANDS

DOC = (Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md").read_text()


def table(heading: str, doc: str = DOC) -> list[list[str]]:
    """The body rows (cells, stripped) of the first table after the `heading` line."""
    rows: list[list[str]] = []
    for line in doc[doc.index(heading):].splitlines()[1:]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            break
    return rows[2:]  # past the header and its --- line


def documented_commands(doc: str = DOC) -> dict[str, set[str]]:
    commands = {}
    for row in table("## Commands", doc):
        names = re.findall(r"`(labls\.[\w.]+)`", row[0])
        fields = {f.rstrip("?") for f in re.findall(r"[\w]+\??", row[1].strip("`{}"))}
        for name in names:
            commands[name] = fields
    return commands


def model_fields(model: type) -> set[str]:
    return {camel_case(f.name) for f in dataclasses.fields(model)}


def test_the_commands_table_is_the_registered_commands() -> None:
    assert set(documented_commands()) == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_commands_arguments_are_its_params_models_fields(command: str) -> None:
    model = getattr(p, COMMANDS[command][0])
    assert documented_commands()[command] == model_fields(model)


def test_the_tools_table_is_the_mcp_servers_tools() -> None:
    pytest.importorskip("mcp")
    from labls.mcpserver.server import TOOLS

    rows = {re.sub(r"`", "", r[0]): re.sub(r"`", "", r[1]) for r in table("## MCP tools")}
    assert rows == {t.name: t.command for t in TOOLS}
    for tool in TOOLS:  # a tool over a command takes that command's arguments
        if tool.command in COMMANDS:
            assert tool.params is getattr(p, COMMANDS[tool.command][0]), tool.name


def config_keys(obj: object, prefix: str = "") -> set[str]:
    keys = set()
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            keys |= config_keys(value, f"{prefix}{f.name}.")
        else:
            keys.add(prefix + f.name)
    return keys


def test_the_configuration_table_names_every_key() -> None:
    documented = {re.sub(r"`", "", r[0]) for r in table("## Configuration")}
    assert documented == config_keys(Config())


def test_the_run_states_and_error_kinds_are_the_enums() -> None:
    from labls.sandbox.records import ErrorKind, RunState

    states = DOC[DOC.index("- `state`:"):].split("\n- ")[0]
    kinds = DOC[DOC.index("- `error`:"):].split("`file` is relative")[0]
    assert set(re.findall(r"`(\w+)`", states)) - {"state"} == {str(s) for s in RunState}
    assert set(re.findall(r"`(\w+)`", kinds)) - {"error", "null"} == {str(k) for k in ErrorKind}


def test_the_checker_sees_a_dropped_command_and_a_dropped_argument() -> None:
    """Control: the same document with one row gone, or one argument gone, is caught."""
    row = next(line for line in DOC.splitlines() if line.startswith("| `labls.run.get`"))
    assert set(documented_commands(DOC.replace(row + "\n", ""))) != set(COMMANDS)
    fewer = documented_commands(DOC.replace(row, row.replace(", fields?", "")))
    assert fewer["labls.run.get"] != model_fields(p.RunGetParams)
