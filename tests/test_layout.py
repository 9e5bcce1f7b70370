"""The package's shape: no import cycle (lazy imports inside functions included), the course apart from the engine."""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "minigrpo")


def modules() -> dict[str, str]:
    """{dotted module name: file} of every module under minigrpo/ (a package by its __init__)."""
    out = {}
    for folder, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                out[name.removesuffix(".__init__")] = path
    return out


def imports(name: str, path: str, known: set[str]) -> set[str]:
    """The minigrpo modules `name` imports anywhere in its file (top level or inside a function)."""
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package
                for _ in range(node.level - 1):
                    parent = parent.rpartition(".")[0]
                base = f"{parent}.{base}" if base else parent
            targets = [base] + [f"{base}.{a.name}" for a in node.names]   # `from . import x` imports x
        else:
            continue
        for t in targets:
            while t and t not in known:       # `import minigrpo.loss.x` imports minigrpo.loss
                t = t.rpartition(".")[0]
            if t and t != name and not t.startswith(name + "."):   # a package may import its own submodules
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(m, p, set(mods)) for m, p in mods.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(u):
        state[u] = "open"
        stack.append(u)
        for v in sorted(edges[u]):
            if state.get(v) == "open":
                return stack[stack.index(v):] + [v]
            if v not in state and (c := visit(v)):
                return c
        stack.pop()
        state[u] = "done"
        return None

    for u in sorted(edges):
        if u not in state and (c := visit(u)):
            return c
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_import_graph_sees_lazy_and_relative_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("from .b import x\n\ndef g():\n    from ..c import y\n    import minigrpo.d.e\n")
    assert imports("minigrpo.a.m", str(f), {"minigrpo.a.b", "minigrpo.c", "minigrpo.d"}) == \
        {"minigrpo.a.b", "minigrpo.c", "minigrpo.d"}


def test_no_import_cycle_in_minigrpo():
    edges = graph()
    assert len(edges) > 20 and "minigrpo.trainer" in edges["minigrpo.pipeline"]
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_engine_does_not_import_the_course():
    """The course's helpers (minigrpo.course) use the engine, never the other way round, except the command
    line's `compare` command, which runs lesson 8's experiment."""
    for module, targets in graph().items():
        if module.startswith("minigrpo.course") or module == "minigrpo.__main__":
            continue
        into_course = sorted(t for t in targets if t.startswith("minigrpo.course"))
        assert not into_course, f"{module} imports {into_course}"
