"""Imports go one way: the front-ends (server/, mcpserver/) → lab → sandbox, and lab →
prompts; only server/ speaks LSP and only mcpserver/ the MCP SDK (DESIGN.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# package folder → the labls subpackages and third-party roots it must never import
FRONT_ENDS = {"labls.server", "labls.mcpserver"}
PROTOCOLS = {"pygls", "lsprotocol", "mcp", "mcp_types"}
FORBIDDEN = {
    "sandbox": FRONT_ENDS | PROTOCOLS | {"labls.lab", "labls.prompts"},
    "prompts": FRONT_ENDS | PROTOCOLS | {"labls.lab", "labls.sandbox"},
    "lab": FRONT_ENDS | PROTOCOLS,
    "mcpserver": {"labls.server", "pygls", "lsprotocol"},
    "server": {"mcp", "mcp_types"},  # (its CLI starts labls.mcpserver, the SDK stays there)
}


def imported_modules(path: Path, package: str, subpackage: tuple[str, ...] = ()) -> set[str]:
    """Absolute names of what `path` imports; `subpackage` is its folder below `package`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parts = ["labls", package, *subpackage]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = ".".join(parts[: len(parts) - node.level + 1])
                found.add(base + ("." + node.module if node.module else ""))
            elif node.module:
                found.add(node.module)
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_layers(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no sources found under {package}/"
    violations = [
        f"{f.relative_to(ROOT)} imports {m}"
        for f in files
        for m in imported_modules(f, package, f.parent.relative_to(ROOT / package).parts)
        for bad in FORBIDDEN[package]
        if m == bad or m.startswith(bad + ".")
    ]
    assert not violations, "\n".join(violations)


def test_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("from pygls.lsp.server import LanguageServer\nfrom ..server import app\n")
    assert {"pygls.lsp.server", "labls.server"} <= imported_modules(bad, "sandbox")
