"""The package reads top-down: no import cycle between its modules or between its packages,
function-local imports included (every `import` statement in the source is walked)."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "omniquality_r"


def module_name(path: Path) -> str:
    parts = ("omniquality_r", *path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts).removesuffix(".__init__")


def imports_of(path: Path, name: str, modules: set[str]) -> set[str]:
    """The project modules that `path` (module `name`) imports anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        found |= {c for c in candidates if c in modules}
    return found - {name}


def import_graph() -> dict[str, set[str]]:
    files = list(SRC.rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): imports_of(f, module_name(f), modules) for f in files}


def package_of(module: str) -> str:
    """omniquality_r.<top> for a subpackage's modules; top-level modules are their own."""
    parts = module.split(".")
    return ".".join(parts[:2])


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph `edges` as a path [a, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(edges.get(u, ())):
            if state.get(v) == 1:
                return [*stack[stack.index(v) :], v]
            if v not in state and (cycle := visit(v)):
                return cycle
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(edges):
        if u not in state and (cycle := visit(u)):
            return cycle
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_walks_function_local_imports(tmp_path):
    path = tmp_path / "mod.py"
    path.write_text("def f():\n    from .other import g\n")
    modules = {"omniquality_r.pkg.other", "omniquality_r.pkg.unused"}
    assert imports_of(path, "omniquality_r.pkg.mod", modules) == {"omniquality_r.pkg.other"}


def test_no_cycle_between_modules():
    graph = import_graph()
    assert len(graph) > 40
    edges = {m: {t for t in ts if not (m.startswith(t + ".") or t.startswith(m + "."))}
             for m, ts in graph.items()}  # fmt: skip  (a package importing its own modules)
    assert find_cycle(edges) is None


@pytest.mark.parametrize("low, high", [("models", "perception"), ("rl", "modules"),
                                       ("data", "models"), ("modules", "stages")])  # fmt: skip
def test_layers_point_down(low, high):
    graph = import_graph()
    up = {(m, t) for m, ts in graph.items() for t in ts
          if package_of(m) == f"omniquality_r.{low}" and package_of(t) == f"omniquality_r.{high}"}
    assert not up, f"{low} imports {high}: {sorted(up)}"


def test_no_cycle_between_packages():
    edges: dict[str, set[str]] = {}
    for m, ts in import_graph().items():
        edges.setdefault(package_of(m), set()).update(
            package_of(t) for t in ts if package_of(t) != package_of(m))
    cycle = find_cycle(edges)
    assert cycle is None, " -> ".join(cycle)


def test_the_analyst_teacher_never_reads_the_generator():
    """The CoT teacher judges pixels with a rubric fitted on MOS: nothing of cot/ may import
    the synthetic generator, directly or through another module."""
    graph = import_graph()
    seen, todo = set(), [m for m in graph if m.startswith("omniquality_r.cot")]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph[module])
    assert "omniquality_r.data.synthetic" not in seen
