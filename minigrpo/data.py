"""The course's datasets: deterministic train / sft / test splits stored as JSONL.

Source: the course document, section 6 (the equation example) for `equations`;
`arithmetic` and `arithmetic_hard` are the simpler curriculum that a tiny model
learns on a laptop CPU (resp. a GPU) before it meets equations.

Each dataset is a folder of three files, one JSON object per line:

    data/<dataset>/sft.jsonl    demonstrations for supervised warm-up ("solution" field)
    data/<dataset>/train.jsonl  prompts for GRPO (the model samples its own completions)
    data/<dataset>/test.jsonl   held-out problems for evaluation

Generation is deterministic: each split draws from its own `random.Random`
seeded by (dataset, split, seed), never the global one, so the same seed gives
byte-identical files. The test split is drawn first and sft / train then skip
every prompt already drawn, so no held-out problem is ever trained on.

    write_all("data", seed=0)                       # python -m minigrpo data
    rows = read_jsonl(dataset_path("equations", "test"))
"""
from __future__ import annotations

import json
import os
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from minigrpo.tasks import STYLES, make_arithmetic, make_equation, solution

SPLITS = ("test", "sft", "train")  # the order in which they are drawn
REQUIRED_KEYS = ("prompt", "answer")
HOW_TO_GENERATE = "run: python -m minigrpo data (from the repository root)"


@dataclass(frozen=True)
class DatasetSpec:
    """What one dataset holds and how big each split is."""
    task: str                      # "arithmetic" or "equation"
    sizes: dict                    # split name -> number of problems
    kinds: tuple = ()              # arithmetic: (op, digits) pairs, cycled in turn
    params: dict = field(default_factory=dict)  # equation: make_equation keyword args
    description: str = ""          # one line for the data card and the CLI


DATASETS: dict[str, DatasetSpec] = {
    "arithmetic": DatasetSpec(
        task="arithmetic", kinds=(("+", 2), ("-", 2)),
        sizes={"test": 500, "sft": 1250, "train": 15000},
        description="a+b= and a-b= with operands in [0, 99]; the default CPU curriculum"),
    "arithmetic_hard": DatasetSpec(
        task="arithmetic", kinds=(("+", 3), ("-", 3), ("*", 2)),
        sizes={"test": 1000, "sft": 2000, "train": 20000},
        description="a+b=, a-b= with operands in [0, 999] and a*b= in [0, 99]; for a GPU"),
    "equations": DatasetSpec(
        task="equation", params={"a_max": 9, "x_max": 10, "b_max": 20},
        sizes={"test": 300, "sft": 5000, "train": 1400},
        description="求解方程 ax+b=c。 with an integer root (section 6); each sft problem in all three styles"),
}


def dataset_path(name: str, split: str, data_dir: str | os.PathLike = "data") -> Path:
    """Path of one split's file: <data_dir>/<name>/<split>.jsonl."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return Path(data_dir) / name / f"{split}.jsonl"


# ---------------------------------------------------------------------------
# Reading and writing JSONL
# ---------------------------------------------------------------------------

def read_jsonl(path: str | os.PathLike, check=None) -> list[dict]:
    """The records of a JSONL file, in file order.

    Blank lines are skipped. Any other line must be a JSON object with at least
    "prompt" and "answer"; otherwise a ValueError names the file, the 1-based
    line number and what is wrong. `check(record)`, if given, may raise a
    ValueError of its own (a character the tokenizer lacks, a prompt too long
    for the model); it is reported the same way. A missing file raises
    FileNotFoundError with the command that generates the data.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} not found; {HOW_TO_GENERATE}")
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: bad JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            missing = [k for k in REQUIRED_KEYS if k not in obj]
            if missing:
                raise ValueError(f"{where}: missing {', '.join(repr(k) for k in missing)}")
            if check is not None:
                try:
                    check(obj)
                except ValueError as e:
                    raise ValueError(f"{where}: {e}") from None
            records.append(obj)
    return records


def write_jsonl(path: str | os.PathLike, records) -> None:
    """Write `records` (dicts) to `path` as UTF-8 JSONL, atomically.

    The lines go to a temporary file in the same folder, which then replaces
    `path` in one `os.replace`: a reader never sees a half-written file, and a
    failure (e.g. a value JSON cannot encode) leaves any old file untouched.
    Non-ASCII text is written as is ("求解方程", not "\\u6c42...").
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_split(name: str, split: str, data_dir: str | os.PathLike = "data") -> list[dict]:
    """read_jsonl(dataset_path(name, split, data_dir))."""
    return read_jsonl(dataset_path(name, split, data_dir))


# ---------------------------------------------------------------------------
# Generating the splits
# ---------------------------------------------------------------------------

def make_splits(name: str, seed: int = 0) -> dict[str, list[dict]]:
    """Draw every split of dataset `name` (pure: writes nothing).

    Returns {split: records}. Splits are drawn in SPLITS order (test first);
    a problem is never repeated across splits. Every record gets a "split"
    field; sft records get "solution" (the completion to imitate). An
    equation's sft problem gives three records in a row, one per style (guess,
    short, complete, with a "style" field), like section 6's group of answers
    to one prompt; sizes count problems, so equations/sft holds 3 x sizes["sft"].
    """
    spec = DATASETS[name]
    seen: set[str] = set()  # prompts already drawn, in any split
    splits = {}
    for split in SPLITS:
        rng = random.Random(f"minigrpo/{name}/{split}/{seed}")  # str seeds are stable across runs
        records, problems = [], 0
        while problems < spec.sizes[split]:
            record = _draw(spec, rng, problems)
            if record["prompt"] in seen:
                continue  # redraw: keeps splits disjoint and problems unique
            seen.add(record["prompt"])
            problems += 1
            record["split"] = split
            if split == "sft" and spec.task == "equation":  # one demonstration per style, as section 6's group
                records += [{**record, "solution": solution(record, style), "style": style} for style in STYLES]
                continue
            if split == "sft":
                record["solution"] = solution(record)
            records.append(record)
        splits[split] = records
    return splits


def write_all(out_dir: str | os.PathLike = "data", seed: int = 0) -> dict[str, int]:
    """Generate and write every dataset in DATASETS under `out_dir`.

    Returns {"<dataset>/<split>": number of records written}. The same seed
    always gives byte-identical files.
    """
    counts = {}
    for name in DATASETS:
        for split, records in make_splits(name, seed).items():
            write_jsonl(dataset_path(name, split, out_dir), records)
            counts[f"{name}/{split}"] = len(records)
    return counts


def _draw(spec: DatasetSpec, rng: random.Random, i: int) -> dict:
    """One problem of `spec`; arithmetic kinds are cycled so each gets an equal share."""
    if spec.task == "arithmetic":
        op, digits = spec.kinds[i % len(spec.kinds)]
        return make_arithmetic(rng, op, digits)
    if spec.task == "equation":
        return make_equation(rng, **spec.params)
    raise ValueError(f"unknown task {spec.task!r}")


def _umask() -> int:
    """The process umask (reading it means setting it, so it is set back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
