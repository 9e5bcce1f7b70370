"""The course's datasets: how data/ was generated, deterministically (`python -m minigrpo data`).

Source: the note, section 6 (the equation example) for `equations`; `arithmetic` and
`arithmetic_hard` are the simpler curriculum a tiny model learns on a laptop CPU (resp. a GPU);
`multiplication` is a long answer, worked digit by digit (tasks.long_multiplication). Each
split draws from its own `random.Random` seeded by (dataset, split, seed), never the global one, so
the same seed gives byte-identical files; the test split is drawn first and sft / train skip every
prompt already drawn, so no held-out problem is ever trained on.

    write_all("data", seed=0)
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

from ..data import SPLITS, dataset_path
from ..files import write_jsonl
from ..tasks import STYLES, direct_product, equation_text, multiplication_prompt, solution

OPS = ("+", "-", "*")


def make_arithmetic(rng: random.Random, op: str, digits: int) -> dict:
    """Draw one arithmetic problem `a op b =`.

    Args:
        rng: the random source (a `random.Random`; never the global one).
        op: "+", "-" or "*".
        digits: operands are uniform in [0, 10**digits - 1].
    Returns:
        a record {"task", "prompt", "answer", "a", "b", "op"}; the answer of a
        subtraction may be negative ("-45"). The completion to learn is `answer`.
    """
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; expected one of {OPS}")
    if digits < 1:
        raise ValueError(f"digits must be >= 1, got {digits}")
    hi = 10 ** digits - 1
    a, b = rng.randint(0, hi), rng.randint(0, hi)
    value = a + b if op == "+" else a - b if op == "-" else a * b
    return {"task": "arithmetic", "prompt": f"{a}{op}{b}=", "answer": str(value),
            "a": a, "b": b, "op": op}


def make_equation(rng: random.Random, a_max: int = 9, x_max: int = 10, b_max: int = 20) -> dict:
    """Draw one equation ax+b=c whose root x is an integer.

    Args:
        rng: the random source.
        a_max: a is uniform in [2, a_max] (a=1 would make "two sides divide by 1").
        x_max: the root x is uniform in [-x_max, x_max].
        b_max: b is uniform in [-b_max, b_max] without 0 (every equation needs a 移项).
    Returns:
        a record {"task", "prompt", "answer", "a", "b", "c"} with c = a*x + b and
        prompt "求解方程 {ax+b=c}。", answer str(x).
    """
    if a_max < 2 or x_max < 0 or b_max < 1:
        raise ValueError(f"need a_max >= 2, x_max >= 0, b_max >= 1; got {a_max}, {x_max}, {b_max}")
    a = rng.randint(2, a_max)
    x = rng.randint(-x_max, x_max)
    b = rng.choice([v for v in range(-b_max, b_max + 1) if v != 0])
    c = a * x + b
    return {"task": "equation", "prompt": f"求解方程 {equation_text(a, b, c)}。",
            "answer": str(x), "a": a, "b": b, "c": c}


def make_multiplication(rng: random.Random, a_digits: int, b_digits: int) -> dict:
    """Draw one multiplication `计算 a*b。` of an `a_digits`-digit a by a `b_digits`-digit b (no leading zeros).

    Returns a record {"task", "prompt", "answer", "a", "b", "op"}; its worked solution, the completion SFT
    teaches, is tasks.long_multiplication(a, b).
    """
    if a_digits < 1 or b_digits < 1:
        raise ValueError(f"digits must be >= 1, got {a_digits} and {b_digits}")
    a = rng.randint(10 ** (a_digits - 1), 10 ** a_digits - 1)
    b = rng.randint(10 ** (b_digits - 1), 10 ** b_digits - 1)
    return {"task": "multiplication", "prompt": multiplication_prompt(a, b), "answer": str(a * b),
            "a": a, "b": b, "op": "*"}


@dataclass(frozen=True)
class DatasetSpec:
    """What one dataset holds and how big each split is."""
    task: str                      # "arithmetic", "equation" or "multiplication"
    sizes: dict                    # split name -> number of problems
    kinds: tuple = ()              # arithmetic: (op, digits) pairs; multiplication: (a digits, b digits); in turn
    params: dict = field(default_factory=dict)  # equation: make_equation keyword args
    direct_share: float = 0.0      # multiplication: share of demonstrations that state the product without working
    description: str = ""          # one line for the data card and the CLI


DATASETS: dict[str, DatasetSpec] = {
    "arithmetic": DatasetSpec(
        task="arithmetic", kinds=(("+", 2), ("-", 2)),
        sizes={"test": 500, "sft": 1250, "train": 15000},
        description="a+b= and a-b= with operands in [0, 99]; the default CPU curriculum"),
    # 20,000 demonstrations: the first GPU run's 2,000 were memorised (SFT loss 0.000, 1.9% held out). Two-digit
    # products left the mix: their 10,000 problems cannot supply splits of this size.
    "arithmetic_hard": DatasetSpec(
        task="arithmetic", kinds=(("+", 3), ("-", 3)),
        sizes={"test": 1000, "sft": 20000, "train": 20000},
        description="a+b= and a-b= with operands in [0, 999]; for a GPU"),
    # Long answers: 53-152 tokens of worked steps, EOS included (4x1 digits 53-65, 2x2 88-116, 3x2 113-152).
    # Half the demonstrations state the product alone (13-16 tokens), so the SFT model answers in both
    # styles, and GRPO can find that the working is what gets products right (lesson 11).
    "multiplication": DatasetSpec(
        task="multiplication", kinds=((4, 1), (2, 2), (3, 2)), direct_share=0.5,
        sizes={"test": 600, "sft": 3000, "train": 15000},
        description="计算 a*b。 4 x 1, 2 x 2 and 3 x 2 digits; half the demonstrations worked digit by digit with "
                    "carries, half the product alone"),
    "equations": DatasetSpec(
        task="equation", params={"a_max": 9, "x_max": 10, "b_max": 20},
        sizes={"test": 300, "sft": 5000, "train": 1400},
        description="求解方程 ax+b=c。 with an integer root (section 6); each sft problem in all three styles"),
}


def make_splits(name: str, seed: int = 0) -> dict[str, list[dict]]:
    """Draw every split of dataset `name` (pure: writes nothing).

    Returns {split: records}. Splits are drawn in SPLITS order (test first);
    a problem is never repeated across splits. Every record gets a "split"
    field; sft records get "solution" (the completion to imitate). An
    equation's sft problem gives three records in a row, one per style (guess,
    short, complete, with a "style" field), like section 6's group of answers
    to one prompt; sizes count problems, so equations/sft holds 3 x sizes["sft"]. A multiplication's sft
    problem is worked (tasks.long_multiplication) or, with probability spec.direct_share, only its product
    stated (tasks.direct_product), with a "style" field; that choice has its own random source, so the
    problems drawn do not depend on it.
    """
    spec = DATASETS[name]
    styles = random.Random(f"minigrpo/{name}/sft-style/{seed}")
    seen: set[str] = set()  # prompts already drawn, in any split
    splits = {}
    for split in SPLITS:
        records = []
        for record in _unseen(spec, f"minigrpo/{name}/{split}/{seed}", spec.sizes[split], seen, name):
            record["split"] = split
            if split == "sft" and spec.task == "equation":  # one demonstration per style, as section 6's group
                records += [{**record, "solution": solution(record, style), "style": style} for style in STYLES]
                continue
            if split == "sft" and spec.task == "multiplication":
                direct = styles.random() < spec.direct_share
                record["solution"] = direct_product(record["a"], record["b"]) if direct else solution(record)
                record["style"] = "direct" if direct else "worked"
            elif split == "sft":
                record["solution"] = solution(record)
            records.append(record)
        splits[split] = records
    return splits


def extra_problems(name: str, n: int, seed: int = 0) -> list[dict]:
    """`n` further problems of dataset `name` that no split holds (sft, train or test of the same seed): a larger
    held-out set, drawn as the splits are (kinds in turn) from a source of its own. Raises ValueError when the
    problem space has fewer than `n` problems left."""
    seen = {r["prompt"] for records in make_splits(name, seed).values() for r in records}
    return [{**r, "split": "extra"} for r in _unseen(DATASETS[name], f"minigrpo/{name}/extra/{seed}", n, seen, name)]


def _unseen(spec: DatasetSpec, source: str, n: int, seen: set[str], name: str) -> list[dict]:
    """`n` problems of `spec` whose prompts are not in `seen` (which they join), from `random.Random(source)`
    (a str seed is stable across runs), kinds in turn; a prompt already drawn is drawn again. ValueError when
    the problem space runs out."""
    rng, out, misses = random.Random(source), [], 0
    while len(out) < n:
        record = _draw(spec, rng, len(out))
        if record["prompt"] in seen:
            misses += 1
            if misses > 100 * (n + 100):
                raise ValueError(f"{name}: found only {len(out)} of {n} problems outside its splits")
            continue
        seen.add(record["prompt"])
        out.append(record)
    return out


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
    if spec.task == "multiplication":
        return make_multiplication(rng, *spec.kinds[i % len(spec.kinds)])
    raise ValueError(f"unknown task {spec.task!r}")
