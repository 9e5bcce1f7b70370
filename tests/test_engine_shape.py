"""The engine's shape (issue 32): every function of minigrpo/*.py (the engine; minigrpo/course/ is the course
built on it) is at most 60 lines, its docstring included, and every shape comment, `# (N, T)`, speaks in the one
symbol table of minigrpo/__init__.py. (test_layout.py checks that the engine never imports the course and has no
import cycle.)
"""
import ast
import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINE = sorted(glob.glob(os.path.join(ROOT, "minigrpo", "*.py")))
LONGEST = 60


def _tree(path):
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read(), filename=path)


@pytest.mark.parametrize("path", ENGINE, ids=os.path.basename)
def test_no_engine_function_is_longer_than_60_lines(path):
    long = [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(_tree(path))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > LONGEST]
    assert not long, f"{os.path.basename(path)}: functions over {LONGEST} lines: {long}"


def test_the_checks_see_every_engine_module():
    """So that the tests above cannot pass by finding no file."""
    names = {os.path.basename(p) for p in ENGINE}
    assert {"loss.py", "optim.py", "sampler.py", "trainer.py", "doctor.py"} <= names


def _symbols() -> set[str]:
    """The symbols the table in minigrpo/__init__.py's docstring defines (its first column)."""
    import minigrpo
    table = minigrpo.__doc__.split("Symbol | Meaning", 1)[1]
    return {line.split("|", 1)[0].strip() for line in table.strip().splitlines() if "|" in line}


def test_the_symbol_table_names_what_the_engine_uses():
    assert {"B", "G", "N", "P", "T", "V", "K", "k", "n", "m", "N'", "n'", "m'", "Tb", "h", "h_kv", "C", "w"} <= _symbols()


@pytest.mark.parametrize("path", ENGINE, ids=os.path.basename)
def test_shape_comments_use_the_symbol_table(path):
    symbols, unknown = _symbols(), []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            for shape in re.findall(r"# \(([^)\"]*)\)", line):
                if "," not in shape and not shape.endswith(","):
                    continue   # a parenthesis, not a shape
                unknown += [f"line {number}: {name} in ({shape})" for name in re.findall(r"[A-Za-z_]\w*'?", shape)
                            if name not in symbols]
    assert not unknown, f"{os.path.basename(path)}: shape symbols missing from minigrpo/__init__.py's table: {unknown}"
