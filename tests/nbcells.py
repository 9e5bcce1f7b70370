"""Read the lessons' notebooks in tests: their code cells, and the cells that define inline code.

A lesson marks the cell that builds an idea inline with a comment such as
`# inline: clipped_surrogate`; a test finds that one cell, execs it and
compares what it defines with the package.
"""
import json
import math
import os

import torch


def code_cells(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        nb = json.load(f)
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def source(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def cell_containing(path, text: str, *, whole_line: bool = False) -> str:
    """The source of the one code cell containing `text` (as a line of its own if `whole_line`)."""
    found = [source(c) for c in code_cells(path)
             if (text in source(c).splitlines() if whole_line else text in source(c))]
    assert len(found) == 1, f"{len(found)} cells of {os.path.basename(path)} contain {text!r}"
    return found[0]


def exec_cells(path, *texts: str, whole_line: bool = False) -> dict:
    """Exec the cells containing each text, in order, into one namespace (torch and math preloaded)."""
    namespace = {"torch": torch, "math": math}
    for text in texts:
        code = compile(cell_containing(path, text, whole_line=whole_line),
                       f"{os.path.basename(path)} [{text}]", "exec")
        exec(code, namespace)
    return namespace


def outputs_text(cell) -> str:
    """The stream output (what the cell printed) of an executed cell."""
    return "".join("".join(o["text"]) if isinstance(o["text"], list) else o["text"]
                   for o in cell.get("outputs", []) if o["output_type"] == "stream")


def function_defined(path, name: str, namespace: dict):
    """Exec the one code cell of `path` that starts with `def name(` into `namespace`; return the function."""
    cells = [source(c) for c in code_cells(path) if source(c).startswith(f"def {name}(")]
    assert len(cells) == 1, f"{len(cells)} cells of {os.path.basename(path)} define {name}"
    exec(compile(cells[0], f"{os.path.basename(path)} [{name}]", "exec"), namespace)
    return namespace[name]


def committed_run(run_dir) -> tuple[list[dict], dict]:
    """(metrics rows, results) of a committed run folder under results/."""
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    with open(os.path.join(run_dir, "results.json"), encoding="utf-8") as f:
        return rows, json.load(f)
