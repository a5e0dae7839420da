"""The package's shape, checked from its source with ast (nothing of howsure is imported): no
import cycle, counting function-local imports too; every import points down the layers of
docs/architecture.md; no function-local import that adds no weight (that only hides a cycle or an
upward arrow); nothing in src/ imports an old path kept for users; no source file over 700 lines."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "howsure"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def import_graph() -> dict[str, set[str]]:
    """howsure module -> the howsure modules it imports anywhere in its body. ``from pkg import
    name`` is an edge to the submodule ``pkg.name`` when there is one, else to ``pkg`` itself
    (whose ``__init__`` then runs); migration scripts are loaded by alembic, not imported."""
    modules = {module_name(path): path for path in SRC.rglob("*.py") if "migrations" not in path.parts}

    def resolve(target: str) -> str:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [resolve(alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    kept = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(kept + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else resolve(base)
                           for alias in node.names]
            else:
                continue
            graph[name].update(target for target in targets if target and target != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle_through_a_function_local_import():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_function_local_imports():
    graph = import_graph()
    # howsure.cli.scoring imports the backends inside its command bodies only.
    assert "howsure.backends" in graph["howsure.cli.scoring"]


def test_the_package_imports_form_no_cycle():
    assert cycles(import_graph()) == []


# Layer of each module prefix (the longest matching prefix wins). A module imports its own layer
# or a lower one. The table in docs/architecture.md is this one: keep them in step.
LAYERS: dict[str, int] = {
    "howsure": 0,               # the root package: __version__
    "howsure.errors": 0,
    "howsure.tasks": 0,         # bundled task files
    "howsure.samples": 0,       # bundled sample tables
    "howsure.core": 1,
    "howsure.io": 2,
    "howsure.datasets": 2,
    "howsure.backends": 2,
    "howsure.models": 2,
    "howsure.stats": 3,
    "howsure.calibration": 4,
    "howsure.probes": 4,
    "howsure.decisions": 5,
    "howsure.report": 6,
    "howsure.pipelines": 7,
    "howsure.finetune": 7,
    "howsure.answers": 7,
    "howsure.service": 8,
    "howsure.cli": 9,
    "howsure.__main__": 9,
}

# Old import paths kept for users' code while it moves (each a re-export of its new home's names);
# nothing in src/ may import them. None today: the restructuring of issue 13 moved every caller.
COMPAT: set[str] = set()

# Third-party modules heavy enough to import only where used (start-up time, optional installs).
HEAVY = ("torch", "transformers", "sklearn", "pandas", "scipy", "matplotlib", "jinja2", "alembic",
         "uvicorn", "fastapi", "sqlalchemy", "accelerate", "gguf", "peft", "pyarrow", "psycopg",
         "starlette", "pydantic", "httpx", "rich", "typer")

# Function-local imports of howsure modules kept for behaviour, not weight, and why.
LOCAL_OK: dict[tuple[str, str], str] = {
    ("howsure.service.routers.stats", "howsure.service.drift"):
        "optional: the stats page renders without the drift module (test_pages blanks it)",
    ("howsure.cli.service", "howsure.service.app"):
        "tests patch howsure.service.app.create_app, which serve must look up at call time",
}


def module_path(name: str) -> Path:
    base = SRC.parent.joinpath(*name.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


@functools.cache
def edges(name: str) -> list[tuple[str, int, bool, bool]]:
    """(target howsure module or third-party top name, line, inside a function, under
    TYPE_CHECKING) for every import statement of module ``name``."""
    path = module_path(name)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    modules = set(import_graph())
    found: list[tuple[str, int, bool, bool]] = []

    def resolve(target: str) -> str:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target

    def visit(node: ast.AST, local: bool, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == "howsure":
                        found.append((resolve(alias.name), child.lineno, local, typing_only))
                    else:
                        found.append((alias.name.split(".")[0], child.lineno, local, typing_only))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    kept = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(kept + ([base] if base else []))
                if base.split(".")[0] != "howsure":
                    found.append((base.split(".")[0], child.lineno, local, typing_only))
                    continue
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    found.append((sub if sub in modules else resolve(base), child.lineno, local, typing_only))
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                visit(child, local, True)
            else:
                visit(child, local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)),
                      typing_only)

    visit(ast.parse(path.read_text(encoding="utf-8")), False, False)
    return [edge for edge in found if edge[0] != name]


def layer_of(module: str) -> int:
    prefix = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[prefix]


LIBRARY = sorted(name for name in import_graph() if name not in COMPAT)


def where(source: str, line: int) -> str:
    return f"{module_path(source).relative_to(SRC.parent)}:{line}"


def test_every_module_has_a_layer_below_the_root():
    missing = [name for name in LIBRARY if name != "howsure"
               and not any(name == p or name.startswith(p + ".") for p in LAYERS if p != "howsure")]
    assert not missing, f"modules in no layer (add their folder to LAYERS and docs/architecture.md): {missing}"


def test_imports_point_down_the_layers():
    upward = [f"{where(name, line)} {name} (layer {layer_of(name)}) imports {target} (layer {layer_of(target)})"
              for name in LIBRARY for target, line, _, typing_only in edges(name)
              if target.startswith("howsure") and not typing_only and layer_of(target) > layer_of(name)]
    assert not upward, "imports against the layer order of docs/architecture.md:\n" + "\n".join(upward)


def test_src_never_imports_an_old_path():
    old = [f"{where(name, line)} {name} imports {target}" for name in LIBRARY
           for target, line, _, _ in edges(name) if target in COMPAT]
    assert not old, "import the module's home, not the path kept for users:\n" + "\n".join(old)


@functools.cache
def heavy_at_import() -> dict[str, frozenset[str]]:
    """The HEAVY libraries importing each module loads (its module-level imports, transitively)."""
    loads: dict[str, frozenset[str]] = {}

    def visit(name: str, seen: frozenset[str]) -> frozenset[str]:
        if name in loads:
            return loads[name]
        found: set[str] = set()
        for target, _, local, typing_only in edges(name):
            if local or typing_only:
                continue
            if target in HEAVY:
                found.add(target)
            elif target.startswith("howsure"):
                # importing a.b.c runs a/__init__ and a/b/__init__ first: they count too
                parts = target.split(".")
                for depth in range(2, len(parts) + 1):
                    ancestor = ".".join(parts[:depth])
                    if ancestor in loads or (ancestor not in seen and ancestor != name):
                        found |= visit(ancestor, seen | {name})
        loads[name] = frozenset(found)
        return loads[name]

    for name in import_graph():
        visit(name, frozenset())
    return loads


def test_function_local_imports_are_for_weight_only():
    """Inside a function, import a howsure module only when that loads a heavy library the
    importing module does not load already, or LOCAL_OK says why. Anything else belongs at the
    top of the file: a local import that adds no weight only hides a cycle or an upward arrow."""
    loads = heavy_at_import()
    dodges = [f"{where(name, line)} {name} imports {target}" for name in LIBRARY
              for target, line, local, typing_only in edges(name)
              if local and not typing_only and target.startswith("howsure")
              and not (loads[target] - loads[name]) and (name, target) not in LOCAL_OK]
    assert not dodges, "function-local imports that add no weight (move them to the top):\n" + "\n".join(dodges)


@pytest.mark.parametrize("name", sorted(import_graph()))
def test_no_source_file_over_700_lines(name):
    lines = module_path(name).read_text(encoding="utf-8").count("\n")
    assert lines <= 700, f"{module_path(name).relative_to(SRC.parent)} has {lines} lines: split it by concern"
