"""The engine's shape (issue 32): every function of minigrpo/*.py (the engine; minigrpo/course/ is the course
built on it) is at most 60 lines, its docstring included. (test_layout.py checks that the engine never imports the
course and has no import cycle.)
"""
import ast
import glob
import os

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
