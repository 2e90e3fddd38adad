"""The package's layers import downward only: no cycle between its sub-packages,
counting imports inside functions too (a lazy import may not hide a cycle)."""

import ast
from pathlib import Path

import qretrain

SRC = Path(qretrain.__file__).parent


def unit_of(module: str) -> str:
    """qretrain.X.Y -> qretrain.X: the sub-package (or top-level module) it belongs to."""
    return ".".join(module.split(".")[:2])


def _from_top(name: str) -> str:
    is_module = (SRC / f"{name}.py").exists() or (SRC / name).is_dir()
    return f"qretrain.{name}" if is_module else "qretrain"


def import_graph() -> dict[str, set[tuple[str, str]]]:
    """unit -> {(imported unit, 'file:line')} for every qretrain import in src/."""
    graph: dict[str, set[tuple[str, str]]] = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        module = ".".join(p for p in parts if p != "__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from qretrain import zoo` imports the module qretrain.zoo; a name that
                # is no module (`__version__`) comes from the top package itself.
                targets = ([_from_top(a.name) for a in node.names]
                           if node.module == "qretrain" else [node.module])  # fmt: skip
            else:
                continue
            for target in targets:
                if target.startswith("qretrain") and unit_of(target) != unit_of(module):
                    graph.setdefault(unit_of(module), set()).add(
                        (unit_of(target), f"{path.relative_to(SRC)}:{node.lineno}")
                    )
    return graph


def find_cycle(graph) -> list[str] | None:
    edges = {u: {t for t, _ in targets} for u, targets in graph.items()}
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(unit, stack):
        state[unit] = 1
        for nxt in sorted(edges.get(unit, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt, stack + [nxt])
                if found:
                    return found
        state[unit] = 2
        return None

    for unit in sorted(edges):
        if unit not in state:
            found = visit(unit, [unit])
            if found:
                return found
    return None


def test_no_import_cycle_between_sub_packages():
    graph = import_graph()
    cycle = find_cycle(graph)
    if cycle:
        where = [loc for a, b in zip(cycle, cycle[1:]) for t, loc in graph[a] if t == b]
        raise AssertionError(f"import cycle {' -> '.join(cycle)} via {where}")


def test_only_the_top_package_and_the_cli_import_the_top_package():
    graph = import_graph()
    users = {u for u, targets in graph.items() if any(t == "qretrain" for t, _ in targets)}
    assert users <= {"qretrain.cli"}, users


def test_models_is_the_bottom_layer():
    """Below models only the standard-library leaves every layer shares: the errors,
    the memory budgets and the lazy package names."""
    below = {t for t, _ in import_graph().get("qretrain.models", set())}
    assert below <= {"qretrain.errors", "qretrain._memory", "qretrain._lazy"}, below
    assert {t for t, _ in import_graph().get("qretrain._memory", set())} <= {"qretrain.errors"}
    assert not import_graph().get("qretrain._lazy")


def test_the_checker_sees_a_cycle():
    graph = {"qretrain.a": {("qretrain.b", "a:1")}, "qretrain.b": {("qretrain.a", "b:1")}}
    assert find_cycle(graph) == ["qretrain.a", "qretrain.b", "qretrain.a"]
