"""The layout rules of STYLE.md and the README's Layout section that code can check: few top-level modules,
folders that import only downward in the order data flows, a training loop without optuna or the fault
injector, an inspection side without torch, a worker loop that only executes the scheduler's actions, and CLI
commands that parse and call the library."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import hpsearch

PACKAGE = Path(hpsearch.__file__).parent
MAX_TOP_LEVEL_MODULES = 8
MAX_COMMAND_LINES = 8  # body lines of a click command, docstring and blank lines excluded
MAX_WORKER_LOOP_LINES = 30

# Each room's rank in the order data flows; a module may import its own room and lower ranks only. storage/
# sits below search/ (the search stores through it) and inspect/ below runtime/ (the worker prints the console
# progress; the inspection only reads what is stored and starts nothing).
RANKS = {"errors": 0, "params": 1, "logs": 1, "models": 2, "spec": 3, "data": 4, "training": 5, "storage": 6,
         "search": 7, "inspect": 8, "runtime": 9, "deploy": 9, "cli": 10}
# what the inspection side imports; none of it may import torch (`hpsearch status`, `report` and `export` run
# on machines without a GPU stack, and start in a fraction of the time)
TORCH_FREE = ("hpsearch.inspect.console", "hpsearch.inspect.collect", "hpsearch.inspect.report",
              "hpsearch.inspect.status", "hpsearch.inspect.export", "hpsearch.inspect.dashboard",
              "hpsearch.storage.attrs", "hpsearch.search.scheduler", "hpsearch.search.lineage", "hpsearch.spec")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, top_level_only: bool = False) -> set[str]:
    """Modules ``path`` imports (``from a import b`` lists ``a`` and ``a.b``); with ``top_level_only``, only
    the imports run when the module is imported (not those inside functions)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def room(module: str) -> str:
    """``hpsearch.search.asha`` → ``search``; ``hpsearch.cli`` → ``cli``."""
    return module.split(".")[1]


def upward_imports(package: Path, ranks: dict[str, int]) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        me = module_name(path)
        if me == "hpsearch":
            continue  # the public API's lazy table names every room (as strings, imported on first use)
        for target in imports_of(path):
            if target.startswith("hpsearch.") and target.split(".")[1] in ranks and room(target) != room(me) \
                    and ranks[room(target)] >= ranks[room(me)]:
                found.append(f"{me} imports {target}")
    return found


def test_at_most_eight_top_level_modules_and_every_folder_has_a_rank():
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    folders = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert len(modules) <= MAX_TOP_LEVEL_MODULES, modules
    assert set(folders) | {m.removesuffix(".py") for m in modules} - {"__init__"} <= set(RANKS), folders


def test_no_room_imports_upward():
    assert upward_imports(PACKAGE, RANKS) == []


def test_the_rank_check_can_fail():
    """The check above finds an upward import when the order is reversed for one pair (search below training)."""
    swapped = RANKS | {"search": 4}
    assert any(line.startswith("hpsearch.search.") and "hpsearch.training" in line
               for line in upward_imports(PACKAGE, swapped))


def test_the_training_loop_imports_neither_optuna_nor_the_fault_injector():
    for path in sorted((PACKAGE / "training").glob("*.py")):
        imports = imports_of(path)
        assert not {m for m in imports if m.split(".")[0] == "optuna"}, path.name
        if path.name != "faults.py":
            assert not {m for m in imports if m.startswith("hpsearch.training.faults")}, path.name
    for path in (PACKAGE / "data" / "loader.py", PACKAGE / "data" / "base.py"):
        assert not {m for m in imports_of(path) if m.split(".")[0] == "optuna"}, path.name


def module_imports_torch(module: str, seen: set[str]) -> str | None:
    """The chain of top-level imports from ``module`` to torch, or None (static: what ``import module`` runs)."""
    if module in seen:
        return None
    seen.add(module)
    parts = module.split(".")
    candidates = [PACKAGE.parent.joinpath(*parts).with_suffix(".py"), PACKAGE.parent.joinpath(*parts, "__init__.py")]
    path = next((p for p in candidates if p.exists()), None)
    if path is None:
        return None
    targets = imports_of(path, top_level_only=True)
    if any(t.split(".")[0] in ("torch", "torchvision") for t in targets):
        return module
    # importing a.b.c runs the __init__ of a and a.b first
    parents = {".".join(parts[:i]) for i in range(2, len(parts))}
    for t in sorted(t for t in targets | parents if t.startswith("hpsearch")):
        if chain := module_imports_torch(t, seen):
            return f"{module} -> {chain}"
    return None


@pytest.mark.parametrize("module", TORCH_FREE)
def test_the_inspection_side_imports_no_torch(module):
    assert module_imports_torch(module, set()) is None


@pytest.mark.slow
def test_importing_the_inspection_side_leaves_torch_out_of_sys_modules():
    """The same rule in a fresh interpreter, which also sees imports that the static check cannot."""
    code = (f"import sys\nimport {', '.join(TORCH_FREE)}\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_worker_loop_only_executes_the_schedulers_actions():
    """``run_worker`` is short and decides nothing itself: a ``match`` over ``next_action``, no ``if``."""
    tree = ast.parse((PACKAGE / "runtime" / "worker.py").read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run_worker")
    lines = fn.end_lineno - fn.lineno + 1
    assert lines < MAX_WORKER_LOOP_LINES, lines
    nodes = list(ast.walk(fn))
    assert any(isinstance(n, ast.Match) for n in nodes)
    assert not any(isinstance(n, ast.If | ast.IfExp) for n in nodes)
    assert "next_action" in ast.unparse(fn)


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


def test_test_files_have_unique_names():
    """pytest imports test files by basename (the test folders are not packages): two files of one name in
    different folders stop the collection."""
    names = [p.name for p in (PACKAGE.parent / "tests").rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []


@pytest.mark.slow  # importing every module starts ldconfig (ctypes looks for a library)
def test_every_import_of_the_package_resolves():
    """Imports inside functions run only when the function does (``hpsearch slurm`` imports the scheduler when it
    creates the study): each ``from hpsearch... import name`` in the package must name something that exists."""
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("hpsearch"):
                module = importlib.import_module(node.module)
                missing += [f"{path.name}:{node.lineno} {node.module}.{a.name}" for a in node.names
                            if not hasattr(module, a.name) and not (
                                hasattr(module, "__path__") and importlib.util.find_spec(f"{node.module}.{a.name}"))]
    assert missing == []
