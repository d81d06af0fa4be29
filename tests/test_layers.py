"""The import graph of ``src/ar2diff``: no circle, and no import from a lower layer to a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first. A module may import modules of its own layer or of lower ones; the most specific
# prefix decides a module's layer. A new module must find its place here.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("ar2diff", "ar2diff.errors", "ar2diff.paths", "ar2diff.rng", "ar2diff.atomic",
              "ar2diff.provenance", "ar2diff.devices", "ar2diff.decoding", "ar2diff.config",
              "ar2diff.tokenization")),
    ("data", ("ar2diff.data",)),
    ("scoring", ("ar2diff.evaluation",)),  # metrics, code harness, sandbox, scoring
    ("models", ("ar2diff.models",)),
    ("losses", ("ar2diff.losses",)),
    ("noise", ("ar2diff.noise",)),
    ("sampling", ("ar2diff.sampling", "ar2diff.likelihood")),
    ("training and generation", ("ar2diff.training", "ar2diff.generation")),
    ("recipes and runs", ("ar2diff.evaluation.run", "ar2diff.evaluation.lm_eval_model",
                          "ar2diff.evaluation.perplexity",
                          "ar2diff.recipes", "ar2diff.demo",
                          "ar2diff.experiments", "ar2diff.speed", "ar2diff.serving")),
    ("python api", ("ar2diff.api",)),
    ("command line", ("ar2diff.cli",)),
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "ar2diff").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The ar2diff modules ``path`` imports (anywhere in the file, function bodies included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("ar2diff")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ar2diff"):
            for alias in node.names:  # ``from ar2diff.x import y`` may name a submodule y
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in modules else node.module)
    return out


def layer_of(module: str) -> int:
    best, rank = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    assert rank is not None, f"{module} has no layer; add it to LAYERS in {__file__}"
    return rank


def test_every_module_has_a_layer_and_imports_only_downward():
    modules = _modules()
    wrong = []
    for name, path in modules.items():
        for target in _imports(path, modules):
            if layer_of(target) > layer_of(name):
                wrong.append(f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} "
                             f"({LAYERS[layer_of(target)][0]})")
    assert not wrong, "imports from a lower layer to a higher one:\n" + "\n".join(sorted(wrong))


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (module → modules it imports) as a path, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                full = [*path, node]
                return [*full[full.index(nxt):], nxt]
            if nxt not in state and (circle := visit(nxt, [*path, node])):
                return circle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (circle := visit(start, [])):
            return circle
    return None


def test_import_graph_has_no_circle():
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    circle = find_circle(graph)
    assert circle is None, "import circle: " + " → ".join(circle)


def test_the_checker_sees_a_violation(tmp_path):
    """The layer check is not vacuous: a model module importing the CLI would be caught."""
    fake = tmp_path / "m.py"
    fake.write_text("from ar2diff.cli import main\n")
    assert _imports(fake, _modules()) == {"ar2diff.cli"}
    assert layer_of("ar2diff.cli") > layer_of("ar2diff.models.backbone")
    circle = find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert circle == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None

