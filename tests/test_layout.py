"""The layout rules of STYLE.md that code can check: the training loop imports neither optuna nor the fault
injector, and every CLI command is a few lines that parse and call the library."""

from __future__ import annotations

import ast
from pathlib import Path

import hpsearch

PACKAGE = Path(hpsearch.__file__).parent
MAX_COMMAND_LINES = 8  # body lines of a click command, docstring and blank lines excluded


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_the_training_loop_imports_neither_optuna_nor_faults():
    for module in ("train.py", "augment.py", "data/loader.py"):
        imports = imported_modules(PACKAGE / module)
        assert not {m for m in imports if m.split(".")[0] == "optuna"}, module
        assert "hpsearch.training.faults" not in imports, module  # (`from hpsearch import faults` is listed so too)


def test_cli_commands_are_a_few_lines():
    tree = ast.parse((PACKAGE / "cli.py").read_text())
    long = {}
    for node in tree.body:
        is_command = isinstance(node, ast.FunctionDef) and any(
            isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute) and d.func.attr in ("command", "group")
            for d in node.decorator_list)
        if not is_command:
            continue
        body = node.body[1:] if ast.get_docstring(node) else node.body
        lines = {n.lineno for stmt in body for n in ast.walk(stmt) if hasattr(n, "lineno")}
        if len(lines) > MAX_COMMAND_LINES:
            long[node.name] = len(lines)
    assert long == {}, f"commands longer than {MAX_COMMAND_LINES} lines: {long}"
