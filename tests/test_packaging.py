"""Packaging: environment.yml agrees with pyproject.toml; the engine imports only what it may."""
import ast
import os
import re
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINE_MAY_IMPORT = {"torch", "transformers", "tokenizers", "safetensors", "numpy", "tqdm", "yaml", "minigrpo"}
LAZY_ONLY = {"matplotlib", "ipywidgets", "IPython"}  # allowed inside functions of viz/plot code


def pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def environment_pip_lines():
    text = open(os.path.join(ROOT, "environment.yml")).read()
    return [m.group(1).strip() for m in re.finditer(r"^\s+-\s+(\S.*)$", text, re.M)
            if text[:m.start()].count("- pip:") == 1]


def test_environment_installs_the_project_with_the_same_torch_pin():
    deps = pyproject()["dependencies"]
    torch_pin = next(d for d in deps if d.startswith("torch"))
    assert torch_pin == "torch==2.13.0"
    lines = environment_pip_lines()
    assert torch_pin in lines                      # same pin, so conda users get the same torch
    assert "-e .[dev]" in lines                    # and the rest comes from pyproject itself
    for line in lines:                             # nothing pinned in one place only
        name = re.split(r"[=<>\[ ]", line)[0]
        assert name in ("-e", "torch"), f"environment.yml pins {line!r}; put it in pyproject.toml"


def test_python_versions_agree():
    text = open(os.path.join(ROOT, "environment.yml")).read()
    conda_python = re.search(r"python=(\d+)\.(\d+)", text).groups()
    low = re.search(r">=(\d+)\.(\d+)", pyproject()["requires-python"]).groups()
    assert tuple(map(int, conda_python)) >= tuple(map(int, low))


def test_engine_imports_only_its_dependencies():
    pkg = os.path.join(ROOT, "minigrpo")
    files = sorted(os.path.relpath(os.path.join(d, f), pkg) for d, _, fs in os.walk(pkg) for f in fs)
    for name in files:  # every module, subpackages (viz/, exercises/) included
        if not name.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(pkg, name), encoding="utf-8").read())
        top_level = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                mods = [node.module]
            else:
                continue
            for mod in mods:
                root = mod.split(".")[0]
                if root in ENGINE_MAY_IMPORT or root in __import__("sys").stdlib_module_names:
                    continue
                assert root in LAZY_ONLY and id(node) not in top_level, \
                    f"minigrpo/{name} imports {mod} (engine may import only {sorted(ENGINE_MAY_IMPORT)})"


def test_ci_runs_the_readme_test_command():
    readme = open(os.path.join(ROOT, "README.md")).read()
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    assert "make test" in readme and "make test" in ci
    assert "make train" in readme
