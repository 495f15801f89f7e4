"""The house's shape, checked: no import circles, and one place per fact.

The import graph is read with ``ast`` from the source (lazy imports inside functions
count: they are arrows too), over ``vaebench/`` and the folders installed as its
subpackages (``kernels/`` -> ``vaebench.kernels``, ``plugins/`` -> ``vaebench.plugins``).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"vaebench": "vaebench", "vaebench.kernels": "kernels", "vaebench.plugins": "plugins"}


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = [p for p in path.relative_to(REPO / folder).with_suffix("").parts]
            parts = [p for p in parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports, anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            candidates = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in known:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
    return targets


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def test_the_checker_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "vaebench.kernels.reparam_kl" in graph["vaebench.kernels.api"]  # inside a function
    assert "vaebench.config" in graph["vaebench.tasks"]
    assert "vaebench.resolve" in graph["vaebench.cli"]


def test_no_import_circles():
    assert cycles(import_graph()) == []


def test_config_declares_and_parses_only():
    """config.py imports nothing of the project but errors and the kernels' backend names."""
    graph = import_graph()
    assert graph["vaebench.config"] <= {"vaebench.errors", "vaebench.kernels"}
    assert "vaebench.config" not in {t for t in graph["vaebench.tasks"] if t != "vaebench.config"}


def test_no_lower_module_draws_a_report():
    """The runner runs and writes files; its callers (the CLI, a sweep cell) ask for reports."""
    graph = import_graph()
    lower = ("runner", "train", "step", "timing", "metrics", "evaluate", "io", "data", "model")
    for name in (f"vaebench.{module}" for module in lower):
        if name in graph:
            assert not {t for t in graph[name] if t.startswith("vaebench.present")}, name


def test_component_kinds_come_from_the_hookspecs():
    from vaebench import hookspecs
    from vaebench.registry import KINDS

    hooks = [name for name in vars(hookspecs) if name.startswith("vaebench_register_")]
    assert list(KINDS.values()) == hooks
    assert {"encoder", "decoder", "prior", "likelihood", "model", "dataset"} <= set(KINDS)


def files_naming(identifier: str) -> set[str]:
    """The modules of vaebench/ whose code uses ``identifier`` (an attribute, a name, a key)."""
    found = set()
    for name, path in modules().items():
        if not name.startswith("vaebench.") or name.startswith(
            ("vaebench.kernels", "vaebench.plugins")
        ):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            text = (
                getattr(node, "attr", None)
                or getattr(node, "id", None)
                or getattr(node, "arg", None)
            )
            if (isinstance(node, ast.Constant) and node.value == identifier) or text == identifier:
                found.add(path.relative_to(REPO).as_posix())
    return found


def test_a_run_option_the_step_uses_touches_config_and_step_only():
    """The worked example of docs/architecture.md: --grad-clip is a field in config.py and a
    field read in step.py; its flag, sweep key, row column, docs row and check follow."""
    assert files_naming("grad_clip") == {"vaebench/config.py", "vaebench/step.py"}
    from vaebench.schema import column

    assert column("grad_clip") is not None and column("grad_clip").group == "setting"


def test_a_result_column_touches_the_schema_and_the_module_that_measures_it():
    """elbo_gap is declared in schema.py and computed in evaluate.py; no other module
    (runner, tables, report, sweep, compare) names it."""
    assert files_naming("elbo_gap") == {"vaebench/schema.py", "vaebench/evaluate.py"}
