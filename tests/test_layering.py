"""The package's layering: no import cycle between its parts, and the engine imports no method.

Every import statement counts, lazy ones inside functions included: a lazy
import hides a cycle from the interpreter but not from a reader, and the
engine is meant to be readable (and reusable) without the methods.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: (importer, imported): never. The engine trains any method and knows none; methods do not
#: depend on model selection or analysis; metrics need no torch and no estimator; the meta-estimators
#: train a user's classifier, never a torch module, and sit below model selection.
FORBIDDEN = [
    ("skgroup.engine", "skgroup.estimators"),
    ("skgroup.engine", "skgroup.model_selection"),
    ("skgroup.engine", "skgroup.analysis"),
    ("skgroup.engine", "skgroup.finetune"),
    ("skgroup.objectives", "skgroup.engine"),
    ("skgroup.objectives", "skgroup.estimators"),
    ("skgroup.estimators", "skgroup.model_selection"),
    ("skgroup.estimators", "skgroup.analysis"),
    ("skgroup.model_selection", "skgroup.analysis"),
    ("skgroup.metrics", "torch"),
    ("skgroup.metrics", "skgroup.estimators"),
    ("skgroup.metrics", "skgroup.engine"),
    ("feature_extraction", "skgroup.estimators"),
    ("skgroup.meta", "skgroup.model_selection"),
    ("skgroup.meta", "skgroup.analysis"),
    ("skgroup.meta", "skgroup.engine"),
    ("skgroup.meta", "skgroup.finetune"),
]


def _module_name(path):
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports():
    """{module: {(imported module, line)}} over skgroup/ and feature_extraction/."""
    edges = {}
    for top in ("skgroup", "feature_extraction"):
        for path in sorted((ROOT / top).rglob("*.py")):
            me = _module_name(path)
            package = me if path.name == "__init__.py" else me.rpartition(".")[0]
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    targets = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    if node.level:
                        base = package.split(".")[: len(package.split(".")) - node.level + 1]
                        targets = [".".join(base + ([node.module] if node.module else []))]
                    else:
                        targets = [node.module or ""]
                else:
                    continue
                edges.setdefault(me, set()).update((t, node.lineno) for t in targets)
    return edges


def _part(module):
    """The part of skgroup a module belongs to: skgroup.<first component>."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "skgroup" and len(parts) > 1 else None


def test_forbidden_imports():
    broken = sorted(
        f"{me}:{line} imports {target}"
        for me, targets in _imports().items()
        for target, line in targets
        for importer, imported in FORBIDDEN
        if (me == importer or me.startswith(importer + "."))
        and (target == imported or target.startswith(imported + "."))
    )
    assert not broken, "layering broken:\n" + "\n".join(broken)


def test_no_import_cycle_between_the_parts_of_the_package():
    graph = {}
    for me, targets in _imports().items():
        a = _part(me)
        for target, _ in targets:
            b = _part(target)
            if a and b and a != b:
                graph.setdefault(a, set()).add(b)
    cycles = set()

    def visit(node, path):
        for nxt in graph.get(node, ()):
            if nxt in path:
                cycles.add(" -> ".join(path[path.index(nxt):] + [nxt]))
            else:
                visit(nxt, path + [nxt])

    for start in list(graph):
        visit(start, [start])
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles))


@pytest.mark.parametrize("fixture", ["cycle", "forbidden"])
def test_the_checks_catch_what_they_are_for(fixture, monkeypatch):
    # the checks above must be able to fail: feed them a planted edge
    planted = {"cycle": {"skgroup.metrics._metrics": {("skgroup.estimators", 1)},
                         "skgroup.estimators._base": {("skgroup.metrics", 1)}},
               "forbidden": {"skgroup.engine._loop": {("skgroup.estimators._erm", 1)}}}[fixture]
    monkeypatch.setitem(globals(), "_imports", lambda: planted)
    check = test_no_import_cycle_between_the_parts_of_the_package if fixture == "cycle" else test_forbidden_imports
    with pytest.raises(AssertionError):
        check()
