"""The house rules of the source tree (issue 17): no import circle among our modules, and no
module over :data:`MAX_LINES` lines without a one-line reason at its top, and no routing by
module-name strings (``importlib.import_module``) except where a lazy import keeps an optional
dependency out of the way (:data:`STRING_IMPORTS`).

The import graph is built from the source with :mod:`ast` (nothing is imported): every
``import`` and ``from ... import`` of ``streams``, ``detectors`` or ``dashboard`` in a module,
at any depth — top level, inside functions (lazy imports run too, only later) and under
``if TYPE_CHECKING:`` (a circle a type checker sees is still a tangle a reader sees). An edge
goes to the module a name resolves to (``from streams.influx import sink`` → ``streams.influx.sink``;
``from streams.worker.pipeline import Pipeline`` → ``streams.worker.pipeline``). A package's
``__init__`` is not implied by importing one of its modules: a package that re-exports its own
modules would otherwise always be a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("streams", "detectors", "dashboard")
#: a module longer than this says why on its first line: ``# size: <reason>``
MAX_LINES = 600
SIZE_TAG = "# size:"
#: the modules allowed to import by a module-name string, and why
STRING_IMPORTS = {
    "streams.cli": "the router imports a command's module when it runs: commands need extras the SDK install lacks",
    "benchmarks.cli": "the same for `driftwatch bench NAME`: benchmarks need the [test] extra",
    "detectors": "lazy exports: `import detectors` must not load scipy, scikit-learn or alibi-detect",
    "detectors.adversarial": "lazy exports: the adversarial detectors need scikit-learn",
    "dashboard.server": "warms the pages' imports (the [dashboard] extra: pyarrow, altair) as the server starts",
}


def modules(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted module name → source file, for every ``.py`` under ``packages``."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` (a module or a module's attribute) lies in."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(known: dict[str, Path]) -> dict[str, set[str]]:
    """Module → the modules of ours it imports (anywhere in its source)."""
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package, one level up per extra dot
                    anchor = package
                    for _ in range(node.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    base = f"{anchor}.{base}" if base else anchor
                targets.update(f"{base}.{alias.name}" for alias in node.names)
        resolved = {_resolve(t, known) for t in targets}
        graph[name] = {t for t in resolved if t is not None and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
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


def _describe(component: list[str], graph: dict[str, set[str]]) -> str:
    members = set(component)
    return "; ".join(f"{m} → {', '.join(sorted(graph[m] & members))}" for m in component)


def test_no_import_circle_among_our_modules() -> None:
    graph = import_graph(modules())
    assert len(graph) > 100  # the walk found the tree (it would pass vacuously otherwise)
    found = cycles(graph)
    assert not found, "import circles:\n" + "\n".join(_describe(c, graph) for c in found)


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"a"}, "c": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}, [["a", "b"], ["c", "d"]]),
    ],
)
def test_cycles_finds_every_circle_and_nothing_else(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert sorted(cycles(graph)) == expected


def test_the_graph_sees_lazy_relative_and_type_checking_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "streams"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("def f():\n    from streams.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import X\n")
    (pkg / "sub" / "c.py").write_text("from ..sub.a import f\nimport json\n")
    graph = import_graph(modules(tmp_path, ("streams",)))
    assert graph["streams.sub.a"] == {"streams.sub.b"}
    assert graph["streams.sub.b"] == {"streams.sub.c"}
    assert graph["streams.sub.c"] == {"streams.sub.a"}
    assert cycles(graph) == [["streams.sub.a", "streams.sub.b", "streams.sub.c"]]


def size_problems(known: dict[str, Path]) -> list[str]:
    """Modules over :data:`MAX_LINES` lines without a reason, and reasons left on modules that no longer need one."""
    problems = []
    for name, path in sorted(known.items()):
        lines = path.read_text().splitlines()
        first = lines[0] if lines else ""
        has_reason = first.startswith(SIZE_TAG) and len(first[len(SIZE_TAG) :].split()) >= 5
        if len(lines) > MAX_LINES and not has_reason:
            problems.append(f"{name}: {len(lines)} lines and no '{SIZE_TAG} <reason of five words or more>' first line")
        elif len(lines) <= MAX_LINES and first.startswith(SIZE_TAG):
            problems.append(f"{name}: {len(lines)} lines, its '{SIZE_TAG}' line is stale")
    return problems


def test_no_module_over_600_lines_without_a_reason_at_its_top() -> None:
    known = modules(ROOT, (*PACKAGES, "benchmarks"))
    long = [name for name, path in known.items() if len(path.read_text().splitlines()) > MAX_LINES]
    assert long  # the rule has modules to look at (it would pass vacuously otherwise)
    assert not size_problems(known), "\n".join(size_problems(known))


def test_size_rule_flags_a_long_module_and_a_stale_reason(tmp_path: Path) -> None:
    pkg = tmp_path / "streams"
    pkg.mkdir()
    body = "x = 1\n" * MAX_LINES
    (pkg / "long.py").write_text(body + "y = 2\n")
    (pkg / "excused.py").write_text(f"{SIZE_TAG} one table that must stay whole\n" + body)
    (pkg / "vague.py").write_text(f"{SIZE_TAG} big\n" + body)
    (pkg / "short.py").write_text(f"{SIZE_TAG} one table that must stay whole\nx = 1\n")
    problems = size_problems(modules(tmp_path, ("streams",)))
    assert [p.split(":")[0] for p in problems] == ["streams.long", "streams.short", "streams.vague"]


def string_imports(known: dict[str, Path]) -> dict[str, int]:
    """Module → how many ``importlib.import_module(...)`` / ``__import__(...)`` calls it makes."""
    found: dict[str, int] = {}
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                fn = node.func
                called = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
                if called in ("import_module", "__import__"):
                    found[name] = found.get(name, 0) + 1
    return found


def test_no_routing_by_module_name_strings_except_lazy_optional_dependencies() -> None:
    found = string_imports(modules(ROOT, (*PACKAGES, "benchmarks")))
    assert set(found) == set(STRING_IMPORTS), (
        f"importing by a module-name string outside {sorted(STRING_IMPORTS)}: {sorted(set(found) - set(STRING_IMPORTS))}; "
        f"allowed but no longer needed: {sorted(set(STRING_IMPORTS) - set(found))}"
    )
