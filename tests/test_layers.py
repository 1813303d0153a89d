"""The package imports one way: the import-linter contracts of pyproject.toml hold, no module of
latentforge is part of an import cycle, and ``latentforge --help`` loads only the CLI.

``import_graph`` reads every module's import statements (the ones inside functions too, but not
those under ``if TYPE_CHECKING:``) with ``ast``: no package is imported to build it.
"""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "latentforge"


def _modules(root: Path = PACKAGE) -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def _under_type_checking(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def _in_function(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return True
    return False


def import_graph(root: Path = PACKAGE) -> tuple[dict[str, set[str]], list[tuple[str, int]]]:
    """(module -> the package's modules it imports, [(module, line) of each import statement
    inside a function that imports from the package])."""
    mods = _modules(root)
    top = root.name
    edges: dict[str, set[str]] = {}
    local: list[tuple[str, int]] = []
    for mod, (path, is_pkg) in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        out = edges.setdefault(mod, set())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[:len(base) - node.level + 1]
                    base_name = ".".join([*base, node.module] if node.module else base)
                else:
                    base_name = node.module or ""
                targets = [f"{base_name}.{a.name}" if f"{base_name}.{a.name}" in mods else base_name
                           for a in node.names]
            elif (isinstance(node, ast.Call) and ast.unparse(node.func).endswith("import_module")
                  and node.args and isinstance(node.args[0], ast.Constant)):
                targets = [node.args[0].value]
            else:
                continue
            targets = [t for t in targets if t.split(".")[0] == top]
            if not targets or _under_type_checking(node, parents):
                continue
            for t in targets:
                while t not in mods and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t != mod:
                    out.add(t)
            if _in_function(node, parents):
                local.append((mod, node.lineno))
    return edges, local


def import_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_in_the_package():
    edges, _ = import_graph()
    assert len(edges) > 40                              # the graph is the package's, not empty
    assert import_cycles(edges) == []


def test_the_cycle_finder_finds_cycles(tmp_path):
    pkg = tmp_path / "demo"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .sub import c\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("from ..a import x\nfrom typing import TYPE_CHECKING\n"
                                      "if TYPE_CHECKING:\n    from .. import d\n")
    (pkg / "d.py").write_text("import demo.sub.c\n")
    edges, local = import_graph(pkg)
    assert import_cycles(edges) == [["demo.a", "demo.b", "demo.sub.c"]]
    assert local == [("demo.b", 2)]


def test_import_contracts_hold():
    pytest.importorskip("importlinter", reason="import-linter is a test dependency: pip install -e '.[test]'")
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if exe is None:
        pytest.skip("the lint-imports command of import-linter is not on the PATH")
    res = subprocess.run([exe, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(REPO), "PATH": str(Path(sys.executable).parent)})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout


LIGHT = {"latentforge", "latentforge._version", "latentforge.errors"}
HEAVY = ("torch", "numpy", "matplotlib", "sklearn", "scipy", "PIL", "safetensors", "tqdm")


def test_help_loads_the_cli_only():
    """``latentforge --help`` stays cheap: the modules it imports, not a clock."""
    code = ("import sys\nfrom latentforge.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('\\n'.join(sorted(sys.modules)))")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(REPO), "PATH": str(Path(sys.executable).parent)})
    assert res.returncode == 0, res.stderr
    loaded = set(res.stdout.split())
    ours = {m for m in loaded if m.split(".")[0] == "latentforge"}
    beyond = {m for m in ours - LIGHT if not m.startswith("latentforge.cli")}
    assert not beyond, f"--help imports library modules: {sorted(beyond)}"
    assert not [m for m in HEAVY if m in loaded]
    assert "latentforge.cli" in ours
