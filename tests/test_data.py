"""Tests of minigrpo.data: determinism, disjoint splits, the committed files, JSONL errors."""
import json
from collections import Counter
from pathlib import Path

import pytest

from minigrpo.course.datasets import DATASETS, write_all
from minigrpo.data import dataset_path, load_split, read_records
from minigrpo.files import write_jsonl
from minigrpo.tasks import parse_answer
from minigrpo.tokenizer import VOCAB_CHARS

REPO_DATA = Path(__file__).resolve().parent.parent / "data"
# Sizes as the course specifies them, written out by hand.
EXPECTED_COUNTS = {
    "arithmetic/test": 500, "arithmetic/sft": 1250, "arithmetic/train": 15000,
    "arithmetic_hard/test": 1000, "arithmetic_hard/sft": 20000, "arithmetic_hard/train": 20000,
    "equations/test": 300, "equations/sft": 15000, "equations/train": 1400,  # sft: 5000 problems x 3 styles
    "multiplication/test": 600, "multiplication/sft": 3000, "multiplication/train": 15000,
}
FILES = sorted(EXPECTED_COUNTS)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """write_all run twice, into two fresh folders, with seed 0."""
    d1, d2 = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    return d1, write_all(d1, seed=0), d2, write_all(d2, seed=0)


@pytest.fixture(scope="module")
def splits(generated):
    d1 = generated[0]
    return {key: read_records(d1 / f"{key}.jsonl") for key in FILES}


# --- generation --------------------------------------------------------------------------

def test_counts(generated):
    _, counts1, _, counts2 = generated
    assert counts1 == EXPECTED_COUNTS == counts2


def test_same_seed_gives_identical_bytes(generated):
    d1, _, d2, _ = generated
    for key in FILES:
        assert (d1 / f"{key}.jsonl").read_bytes() == (d2 / f"{key}.jsonl").read_bytes(), key


def test_other_seed_gives_other_problems(generated, tmp_path):
    write_all(tmp_path, seed=1)
    a = (generated[0] / "equations/test.jsonl").read_bytes()
    assert (tmp_path / "equations/test.jsonl").read_bytes() != a


def test_committed_data_is_seed_0_output(generated):
    """data/ in the repository is exactly what `python -m minigrpo data` writes."""
    for key in FILES:
        committed = REPO_DATA / f"{key}.jsonl"
        assert committed.is_file(), f"{committed} missing; run: python -m minigrpo data"
        assert committed.read_bytes() == (generated[0] / f"{key}.jsonl").read_bytes(), key


def test_no_problem_repeats_within_or_across_splits(splits):
    for name in DATASETS:
        prompts = {s: [r["prompt"] for r in splits[f"{name}/{s}"]] for s in ("test", "sft", "train")}
        if name == "equations":  # each sft problem three times in a row, once per style
            assert prompts["sft"][0::3] == prompts["sft"][1::3] == prompts["sft"][2::3]
            prompts["sft"] = prompts["sft"][0::3]
        for s, ps in prompts.items():
            assert len(set(ps)) == len(ps), f"{name}/{s} repeats a problem"
        test, sft, train = (set(prompts[s]) for s in ("test", "sft", "train"))
        assert not test & (sft | train), f"{name}: a test problem is in sft/train"
        assert not sft & train, f"{name}: sft and train share a problem"


def test_records_fields_and_answers(splits):
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
    for key, records in splits.items():
        name, split = key.split("/")
        for r in records:
            assert r["split"] == split
            if name.startswith("arithmetic"):
                assert r["task"] == "arithmetic"
                assert r["prompt"] == f"{r['a']}{r['op']}{r['b']}="
                assert int(r["answer"]) == ops[r["op"]](r["a"], r["b"])
                hi = 99 if name == "arithmetic" or r["op"] == "*" else 999
                assert 0 <= r["a"] <= hi and 0 <= r["b"] <= hi
            elif name == "multiplication":   # its kinds and solutions: test_multiplication_kinds_and_worked_solutions
                assert r["task"] == "multiplication" and int(r["answer"]) == r["a"] * r["b"]
            else:
                assert r["task"] == "equation"
                x = int(r["answer"])
                assert r["a"] * x + r["b"] == r["c"] and r["b"] != 0
                assert 2 <= r["a"] <= 9 and -10 <= x <= 10 and -20 <= r["b"] <= 20
            if split == "sft":  # a demonstration carries the completion to imitate
                assert parse_answer(r["solution"], r["task"]) == r["answer"]
            else:
                assert "solution" not in r


def test_operation_shares(splits):
    assert Counter(r["op"] for r in splits["arithmetic/train"]) == {"+": 7500, "-": 7500}
    hard = Counter(r["op"] for r in splits["arithmetic_hard/train"])
    assert hard == {"+": 10000, "-": 10000}
    assert any(int(r["answer"]) < 0 for r in splits["arithmetic/test"])


def test_equation_sft_gives_every_problem_in_all_three_styles(splits):
    sft = splits["equations/sft"]
    assert Counter(r["style"] for r in sft) == {"guess": 5000, "short": 5000, "complete": 5000}
    assert [r["style"] for r in sft[:6]] == ["guess", "short", "complete"] * 2
    assert sft[0]["prompt"] == sft[1]["prompt"] == sft[2]["prompt"] != sft[3]["prompt"]
    for r in sft:
        a, b, c, x = r["a"], r["b"], r["c"], r["answer"]
        start = {"guess": "直接猜：", "short": f"两边{'减' if b > 0 else '加'}{abs(b)}，",
                 "complete": f"{a}x{'+' if b > 0 else '-'}{abs(b)}={c}，移项得"}[r["style"]]
        assert r["solution"].startswith(start) and r["solution"].endswith(f"x={x}。")


def test_every_character_is_in_the_vocabulary(splits):
    vocab = set(VOCAB_CHARS)
    for key, records in splits.items():
        for r in records:
            text = r["prompt"] + r["answer"] + r.get("solution", "")
            assert set(text) <= vocab, (key, r["prompt"], set(text) - vocab)


# --- JSONL ---------------------------------------------------------------------------------

def test_write_read_roundtrip_keeps_chinese_unescaped(tmp_path):
    rows = [{"prompt": "求解方程 2x+3=7。", "answer": "2", "a": 2}, {"prompt": "1+1=", "answer": "2"}]
    path = tmp_path / "sub" / "x.jsonl"
    write_jsonl(path, rows)
    assert read_records(path) == rows
    text = path.read_text(encoding="utf-8")
    assert "求解方程" in text and "\\u" not in text and text.count("\n") == 2
    assert [p.name for p in path.parent.iterdir()] == ["x.jsonl"]  # no temp file left behind


def test_write_is_atomic_on_failure(tmp_path):
    path = tmp_path / "x.jsonl"
    write_jsonl(path, [{"prompt": "1+1=", "answer": "2"}])
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_jsonl(path, [{"prompt": "1+2=", "answer": "3"}, {"prompt": object(), "answer": "?"}])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.jsonl"]


@pytest.mark.parametrize("line, problem", [
    ('{"prompt": "1+1=", "answer": ', "bad JSON"),
    ('[1, 2]', "expected a JSON object, got list"),
    ('{"answer": "2"}', "missing 'prompt'"),
    ('{"prompt": "1+1="}', "missing 'answer'"),
])
def test_read_errors_name_file_and_line(tmp_path, line, problem):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"prompt": "1+1=", "answer": "2"})
    path.write_text(f"{good}\n\n{line}\n{good}\n", encoding="utf-8")  # the bad line is line 3
    with pytest.raises(ValueError) as e:
        read_records(path)
    msg = str(e.value)
    assert str(path) in msg and "line 3" in msg and problem in msg


def test_text_that_is_not_utf8_or_a_file_with_no_record_is_one_line_naming_the_file(tmp_path):
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(b'{"prompt": "1+1=", "answer": "2"}\n{"prompt": "caf\xe9", "answer": "2"}\n')
    with pytest.raises(ValueError) as e:
        read_records(latin1)
    assert str(e.value) == f"{latin1}, line 2: not UTF-8 text (byte 0xe9); save the file as UTF-8"
    for text in ("", "\n  \n"):
        empty = tmp_path / "empty.jsonl"
        empty.write_text(text, encoding="utf-8")
        with pytest.raises(ValueError) as e:
            read_records(empty)
        assert str(e.value) == f"{empty} holds no records (the file is empty)"


def test_missing_file_says_how_to_generate(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"python -m minigrpo data"):
        read_records(tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match="nope"):
        load_split("arithmetic", "train", tmp_path / "nope")


def test_dataset_path():
    assert dataset_path("equations", "test") == Path("data/equations/test.jsonl")
    assert dataset_path("arithmetic", "sft", "/d") == Path("/d/arithmetic/sft.jsonl")
    with pytest.raises(ValueError, match="arithmetic_hard"):
        dataset_path("algebra", "test")
    with pytest.raises(ValueError, match="split"):
        dataset_path("equations", "dev")


def test_multiplication_kinds_and_worked_solutions(splits):
    """Each kind a third of every split, operands of the kind's digits, answers a*b, solutions that end in them."""
    for split, n in (("test", 600), ("sft", 3000), ("train", 15000)):
        records = splits[f"multiplication/{split}"]
        kinds = Counter((len(str(r["a"])), len(str(r["b"]))) for r in records)
        assert kinds == {(4, 1): n // 3, (2, 2): n // 3, (3, 2): n // 3}
        assert all(r["answer"] == str(r["a"] * r["b"]) and r["prompt"] == f"计算 {r['a']}*{r['b']}。"
                   for r in records)
    for r in splits["multiplication/sft"][:300]:
        assert r["solution"].endswith(f"所以{r['a']}*{r['b']}={r['a'] * r['b']}。")
        lines = 2 * len(str(r["b"]))    # a line per digit of b, a sum per extra one, the product
        assert r["solution"].count("\n") == (lines - 1 if r["style"] == "worked" else 0), r


def test_half_the_multiplication_demonstrations_state_the_product_alone(splits, monkeypatch):
    """direct_share = 0.5: the styles are drawn as fair coins, within 4.5 standard errors of half in every kind;
    the style has a random source of its own, so the problems are the ones drawn without it."""
    import dataclasses
    import minigrpo.course.datasets as datasets
    sft = splits["multiplication/sft"]
    for kind in ((4, 1), (2, 2), (3, 2)):
        styles = [r["style"] for r in sft if (len(str(r["a"])), len(str(r["b"]))) == kind]
        assert abs(styles.count("direct") / len(styles) - 0.5) < 4.5 * 0.5 / len(styles) ** 0.5
    assert all(r["solution"] == f"所以{r['a']}*{r['b']}={r['answer']}。" for r in sft if r["style"] == "direct")
    spec = datasets.DATASETS["multiplication"]
    monkeypatch.setitem(datasets.DATASETS, "multiplication", dataclasses.replace(spec, direct_share=0.0))
    worked_only = datasets.make_splits("multiplication")
    for split in ("test", "sft", "train"):
        assert [r["prompt"] for r in worked_only[split]] == [r["prompt"] for r in splits[f"multiplication/{split}"]]
    assert {r["style"] for r in worked_only["sft"]} == {"worked"}
