"""`labls serve` over stdio: initialize, config layers, datasets, prompts, bad input."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams, JsonRpcMethodNotFound
from pytest_lsp import ClientServerConfig, LanguageClient

from tests.helpers import SERVER_COMMAND, command, make_cache, start_session, trust

pytestmark = pytest.mark.asyncio(loop_scope="module")

SIX = ["MNIST", "FashionMNIST", "CIFAR10", "CIFAR100", "SVHN", "STL10"]


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("foundation")
    workspace = base / "ws"
    workspace.mkdir()
    cache = make_cache(base / "cache", ["MNIST", "CIFAR10"])
    # a partial dataset: one file of SVHN only
    (cache / "SVHN").mkdir()
    (cache / "SVHN" / "train_32x32.mat").write_bytes(b"x" * 10)
    # the file layer sets the root and the timeout; initializationOptions override the timeout
    (workspace / "labls.toml").write_text(
        f'dataset_cache_root = "{cache}"\n[run]\ntimeout_sec = 120\n[metric]\nname = "accuracy"\n'
    )
    trust(workspace)
    return {"workspace": workspace, "cache": cache}


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=SERVER_COMMAND))
async def client(lsp_client: LanguageClient, paths: dict[str, Path]):
    await start_session(
        lsp_client, paths["workspace"],
        options={"run": {"timeoutSec": 60, "killGraceSec": "soon"}, "metric": {"goal": "maximize"}},
    )
    yield
    await lsp_client.shutdown_session()


async def test_bad_initialization_option_is_named_and_defaulted(client: LanguageClient):
    rendered = await command(client, "labls.prompt.render", {"template": "experiment"})
    # the message is sent while `initialized` is handled, so before this command's answer
    messages = [m.message for m in client.messages]
    assert any("run.kill_grace_sec" in m and "number" in m for m in messages), messages
    assert "accuracy" in rendered["text"]  # from labls.toml
    assert "maximize" in rendered["text"]  # from initializationOptions
    assert "60 seconds" in rendered["text"]  # initializationOptions beat labls.toml's 120


async def test_did_change_configuration_wins_and_bad_values_keep_defaults(
    client: LanguageClient, paths: dict[str, Path]
):
    before = len(client.messages)
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(
            settings={"labls": {"run": {"timeoutSec": 45, "network": "wifi"}}}
        )
    )
    rendered = await command(client, "labls.prompt.render", {"template": "experiment"})
    assert "45 seconds" in rendered["text"]
    new = [m.message for m in client.messages[before:]]
    assert any("run.network" in m and "none, host" in m for m in new), new
    # restore for the other tests
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={}))


async def test_datasets_list_reports_present_partial_and_absent(
    client: LanguageClient, paths: dict[str, Path]
):
    result = await command(client, "labls.datasets.list")
    assert result["cacheRoot"] == str(paths["cache"])
    by_name = {d["name"]: d for d in result["datasets"]}
    assert set(SIX) <= set(by_name)
    assert by_name["MNIST"]["present"] and by_name["CIFAR10"]["present"]
    assert by_name["MNIST"]["bytes"] > 0 and len(by_name["MNIST"]["files"]) == 4
    svhn = by_name["SVHN"]
    assert not svhn["present"]
    assert svhn["files"] == ["train_32x32.mat"] and svhn["missing"] == ["test_32x32.mat"]
    assert not by_name["STL10"]["present"] and not by_name["STL10"]["files"]


@pytest.mark.parametrize("template", ["network_disabled_guidance", "experiment"])
async def test_dataset_templates_carry_the_custom_root(
    client: LanguageClient, paths: dict[str, Path], template: str
):
    result = await command(client, "labls.prompt.render", {"template": template})
    text = result["text"]
    root = str(paths["cache"])
    assert result["datasets"]["available"] == ["MNIST", "CIFAR10"]
    for name in SIX:  # one example per dataset, each pointing at the configured root
        line = next(ln for ln in text.splitlines() if f"datasets.{name}(root=" in ln)
        assert f'"{root}' in line and "download=False" in line, line
    assert 'split="train"' in text and "train=True" in text
    assert "/opt/datasets" not in text
    assert "FileNotFoundError" in text and "synthetic" in text
    assert "DATASET_USED: <name>" in text and "exactly once" in text
    unavailable = text.split("Unavailable")[1].split("Load with")[0]
    assert f"{root}/SVHN" in unavailable
    assert "SVHN" in unavailable and "MNIST" not in unavailable.replace("FashionMNIST", "")


async def test_repair_template_with_explicit_vars(client: LanguageClient):
    result = await command(client, "labls.prompt.render", {
        "template": "repair",
        "vars": {"run_id": "manual", "script": "train.py", "state": "failed",
                 "error": {"kind": "exception", "message": "ZeroDivisionError: x", "file":
                           "train.py", "line": 3},
                 "source": "    3  1/0", "log_tail": "Traceback ..."},
    })
    assert "ZeroDivisionError" in result["text"] and "`train.py` line 3" in result["text"]


async def test_missing_template_variable_is_named(client: LanguageClient):
    with pytest.raises(JsonRpcInvalidParams, match="log_tail"):
        await command(client, "labls.prompt.render", {
            "template": "repair",
            "vars": {"run_id": "r", "script": "t.py", "state": "failed", "source": "",
                     "error": {"kind": "x", "message": "y", "file": None, "line": None}},
        })


async def test_unknown_template_lists_valid_ones(client: LanguageClient):
    with pytest.raises(JsonRpcInvalidParams, match=r"network_disabled_guidance.*repair"):
        await command(client, "labls.prompt.render", {"template": "nope"})


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"template": 5}, "template"),
        ({}, "template"),
        ({"template": "experiment", "vars": [1]}, "vars"),
        ({"template": "experiment", "bogus": 1}, "bogus"),
    ],
)
async def test_bad_arguments_name_the_field(client: LanguageClient, args: dict, field: str):
    with pytest.raises(JsonRpcInvalidParams, match=field):
        await command(client, "labls.prompt.render", args)
    assert (await command(client, "labls.datasets.list"))["datasets"]  # still serving


async def test_arguments_must_be_one_object(client: LanguageClient):
    with pytest.raises(JsonRpcInvalidParams, match="one object"):
        await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="labls.datasets.list", arguments=[{}, {}])
        )
    with pytest.raises(JsonRpcInvalidParams, match="must be an object"):
        await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="labls.prompt.render", arguments=["experiment"])
        )


async def test_unknown_command_and_method_are_errors_and_server_keeps_serving(
    client: LanguageClient,
):
    with pytest.raises(JsonRpcInvalidParams, match=r"labls\.nope"):
        await command(client, "labls.nope")
    with pytest.raises(JsonRpcMethodNotFound):
        await client.protocol.send_request_async("labls/doesNotExist", {})
    results = await asyncio.gather(*(command(client, "labls.datasets.list") for _ in range(20)))
    assert all(r["datasets"] for r in results)
