"""Bad input, clear errors: every mistake a learner is likely to make, through the CLI.

Each case runs `python -m minigrpo ...` in-process and checks what the learner
sees: exit status 2, exactly one line on stderr, no traceback, and the words
that name the problem (and, where there is one, the fix). The config, data,
tokenizer and checkpoint modules have unit tests of their own; this file is the
catalogue of the whole surface, listed in the README's reliability section.
"""
import json
import os
import shutil

import pytest
import torch

from minigrpo.__main__ import main
from minigrpo.checkpoint import save_checkpoint
from minigrpo.config import make_config
from minigrpo.model import build_model
from minigrpo.reward import score
from minigrpo.tokenizer import build_tokenizer

GOOD = {"task": "arithmetic", "prompt": "12+34=", "answer": "46"}


def write_data(root, bad_split=None, bad_line=None):
    """data/arithmetic/{sft,train,test}.jsonl of good records; `bad_line` becomes line 2 of `bad_split`."""
    folder = root / "arithmetic"
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("sft", "train", "test"):
        lines = [json.dumps(GOOD)] * 3
        if split == bad_split:
            lines[1] = bad_line
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def run_cli(argv, capsys):
    """(exit status, stderr lines) of `python -m minigrpo argv`, argparse's own exits included."""
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    return rc, [line for line in err.splitlines() if line.strip()], err


def tiny(tmp_path, *extra):
    return ["train", "--preset", "tiny", "--sft_steps", "1", "--steps", "1", "--no-progress",
            "--out_dir", str(tmp_path / "run"), *extra]


@pytest.fixture
def data(tmp_path):
    return write_data(tmp_path / "data")


@pytest.fixture
def sft_checkpoint(tmp_path):
    """A checkpoint with weights but no GRPO state (what the SFT stage saves)."""
    cfg = make_config("tiny")
    tok = build_tokenizer()
    return save_checkpoint(str(tmp_path / "sft"), build_model(cfg, tok), tok, cfg=cfg)


CONFIG_CASES = [
    (["--preset", "huge"], "unknown preset 'huge'; choose one of: cpu, gpu, equations, long, tiny"),
    (["--task", "algebra"], "task='algebra' is not one of: arithmetic, arithmetic_hard, equations"),
    (["--group_size", "1"], "group_size=1 must be >= 2"),
    (["--eps_low", "-0.1"], "eps_low=-0.1 must be in [0, 1)"),
    (["--eps_high", "-0.1"], "eps_high=-0.1 must be >= 0"),
    (["--beta", "-0.5"], "beta=-0.5 must be >= 0"),
    (["--temperature", "0"], "temperature=0.0 must be > 0"),
    (["--max_new_tokens", "0"], "max_new_tokens=0 must be >= 1"),
    (["--max_seq_len", "6"], "max_seq_len=6 must exceed max_new_tokens"),
    (["--loss_type", "mean"], "loss_type='mean' is not one of"),
    (["--algo", "a2c"], "algo='a2c' is not one of: grpo, ppo, reinforce, rloo"),
    (["--gae_lambda", "1.5"], "gae_lambda=1.5 must be in [0, 1]"),
    (["--reward", "corect"], "unknown reward 'corect'; valid names:"),
    (["--reward", "correct:lots"], "reward weight 'lots' for 'correct' is not a number"),
    (["--reward", "rubric"], "uses the rubric, which scores equation solutions"),
    (["--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
    (["--mask_truncated", "maybe"], "'maybe' is not a boolean"),
]


@pytest.mark.parametrize("options, words", CONFIG_CASES, ids=[c[0][0] + "=" + c[0][1] for c in CONFIG_CASES])
def test_bad_config_values(tmp_path, data, capsys, options, words):
    rc, lines, err = run_cli(tiny(tmp_path, "--data_dir", str(data), *options), capsys)
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert words in lines[0]
    assert not (tmp_path / "run").exists()  # refused before any work was done


DATA_CASES = [
    ("sft", "{not json", "sft.jsonl, line 2: bad JSON"),
    ("train", "[1, 2]", "train.jsonl, line 2: expected a JSON object, got list"),
    ("test", json.dumps({"task": "arithmetic", "prompt": "1+2="}), "test.jsonl, line 2: missing 'answer'"),
    ("train", json.dumps({"task": "arithmetic", "prompt": "12a3=", "answer": "0"}),
     "train.jsonl, line 2: character 'a' (U+0061) at position 2 of '12a3=' is not in the tokenizer's vocabulary"),
    ("test", json.dumps({"task": "arithmetic", "prompt": "1" * 100 + "=", "answer": "0"}),
     "test.jsonl, line 2: a prompt of 101 characters with max_new_tokens=6 needs 108 positions "
     "but max_seq_len=96; raise --max_seq_len to at least 108"),
    ("sft", json.dumps({"task": "arithmetic", "prompt": "1+1=", "answer": "2", "solution": "二"}),
     "sft.jsonl, line 2: character '二' (U+4E8C)"),
]


@pytest.mark.parametrize("split, line, words", DATA_CASES, ids=[c[2].split(": ", 1)[1][:24] for c in DATA_CASES])
def test_bad_data_lines_name_file_line_and_problem(tmp_path, capsys, split, line, words):
    root = write_data(tmp_path / "data", bad_split=split, bad_line=line)
    rc, lines, err = run_cli(tiny(tmp_path, "--data_dir", str(root)), capsys)
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert words in lines[0]


@pytest.mark.parametrize("name, text, words", [
    ("nope.json", None, "config file {path} not found"),
    ("bad.json", '{"group_size": 3,', "{path}: not valid JSON (Expecting property name"),
    ("bad.yaml", "group_size: [3", "{path}: not valid YAML ("),
    ("list.json", "[1, 2]", "{path}: expected a mapping of config fields, got list"),
    ("typo.yaml", "group_sise: 3", "{path}: unknown config field 'group_sise'"),
    ("value.json", '{"group_size": 1}', "group_size=1 must be >= 2"),
])
def test_bad_config_files(tmp_path, capsys, name, text, words):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    rc, lines, err = run_cli(tiny(tmp_path, "--config", str(path)), capsys)
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert words.format(path=path) in lines[0]
    assert not (tmp_path / "run").exists()


def test_missing_data_says_how_to_generate_it(tmp_path, capsys):
    rc, lines, _ = run_cli(tiny(tmp_path, "--data_dir", str(tmp_path / "nowhere")), capsys)
    assert rc == 2 and len(lines) == 1
    assert "not found" in lines[0] and "python -m minigrpo data" in lines[0]


def test_missing_checkpoint(tmp_path, capsys):
    rc, lines, _ = run_cli(["eval", "--checkpoint", str(tmp_path / "nope"), "--data", "x.jsonl"], capsys)
    assert rc == 2 and len(lines) == 1
    assert "does not exist (train one with: python -m minigrpo train)" in lines[0]


def test_folder_that_is_not_a_checkpoint(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc, lines, _ = run_cli(["train", "--resume", str(tmp_path / "empty")], capsys)
    assert rc == 2 and len(lines) == 1 and "is not a minigrpo checkpoint: config.json is missing" in lines[0]


def test_corrupt_weights(tmp_path, data, capsys, sft_checkpoint):
    weights = os.path.join(sft_checkpoint, "model.safetensors")
    with open(weights, "r+b") as f:
        f.truncate(100)
    rc, lines, _ = run_cli(["eval", "--checkpoint", sft_checkpoint,
                            "--data", str(data / "arithmetic" / "test.jsonl")], capsys)
    assert rc == 2 and len(lines) == 1 and "could not be loaded: SafetensorError" in lines[0]


def test_corrupt_trainer_state(tmp_path, capsys, sft_checkpoint):
    with open(os.path.join(sft_checkpoint, "trainer_state.json"), "w") as f:
        f.write("not json")
    rc, lines, _ = run_cli(["train", "--resume", sft_checkpoint], capsys)
    assert rc == 2 and len(lines) == 1 and "trainer_state.json' is corrupt" in lines[0]


class WritesAFile:
    """A pickle that, when loaded, writes a file: what a shared checkpoint could do to a learner's machine."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_checkpoint_cannot_run_code_when_evaluated_or_resumed(tmp_path, data, capsys, sft_checkpoint):
    marker = tmp_path / "the-pickle-ran"
    # minigrpo 0.1 kept the trainer state as a pickle; one that runs code when unpickled
    os.remove(os.path.join(sft_checkpoint, "trainer_state.json"))
    torch.save({"config": {}, "step": 5, "payload": WritesAFile(str(marker))},
               os.path.join(sft_checkpoint, "minigrpo_state.pt"))
    torch.load(os.path.join(sft_checkpoint, "minigrpo_state.pt"), weights_only=False)   # what 0.1 did with it
    assert marker.exists()                                 # the file is a working exploit ...
    marker.unlink()
    rc, lines, _ = run_cli(["eval", "--checkpoint", sft_checkpoint,
                            "--data", str(data / "arithmetic" / "test.jsonl")], capsys)
    assert rc == 0 and not marker.exists()                 # evaluated from the weights; the pickle never read
    rc, lines, _ = run_cli(tiny(tmp_path, "--data_dir", str(data), "--resume", sft_checkpoint), capsys)
    assert rc == 2 and len(lines) == 1 and not marker.exists()
    assert "holds its trainer state as a pickle (minigrpo_state.pt" in lines[0] and "is not read" in lines[0]
    # weights as a pickle (pytorch_model.bin) in place of model.safetensors: refused, not unpickled
    os.remove(os.path.join(sft_checkpoint, "model.safetensors"))
    torch.save({"model.embed_tokens.weight": WritesAFile(str(marker))},
               os.path.join(sft_checkpoint, "pytorch_model.bin"))
    rc, lines, _ = run_cli(["eval", "--checkpoint", sft_checkpoint,
                            "--data", str(data / "arithmetic" / "test.jsonl")], capsys)
    assert rc == 2 and len(lines) == 1 and "could not be loaded" in lines[0] and not marker.exists()


def test_resuming_from_an_sft_checkpoint_points_to_init(tmp_path, data, capsys, sft_checkpoint):
    rc, lines, _ = run_cli(tiny(tmp_path, "--data_dir", str(data), "--resume", sft_checkpoint), capsys)
    assert rc == 2 and len(lines) == 1
    assert "is not a GRPO checkpoint" in lines[0] and f"use --init {sft_checkpoint}" in lines[0]


def test_eval_checks_prompts_against_the_checkpoint(tmp_path, capsys, sft_checkpoint):
    bad = write_data(tmp_path / "bad", bad_split="test", bad_line=json.dumps({"prompt": "1€1=", "answer": "2"}))
    rc, lines, _ = run_cli(["eval", "--checkpoint", sft_checkpoint,
                            "--data", str(bad / "arithmetic" / "test.jsonl")], capsys)
    assert rc == 2 and len(lines) == 1  # one line: no "Loading weights" bar either
    assert "test.jsonl, line 2: character '€' (U+20AC)" in lines[0]


def test_usage_mistakes_are_one_line(capsys):
    for argv, words in ([[], "the following arguments are required: command"],
                        [["trian"], "invalid choice: 'trian'"],
                        [["eval"], "the following arguments are required: --checkpoint, --data"]):
        rc, lines, _ = run_cli(argv, capsys)
        assert rc == 2 and len(lines) == 1 and words in lines[0] and "--help" in lines[0]


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ValueError, match="group_size=1"):
        main(["--debug", *tiny(tmp_path, "--group_size", "1")])


# A reward function is Python the learner writes, so it is passed to the engine, not named on the
# command line. Behaviour chosen (reward.score): stop and name the prompt and completion. TRL instead
# leaves an unscorable completion out of its group's statistics, which hides the bug that caused it.

def flaky(prompt, completion, **_):
    if completion == "7":
        raise KeyError("answer")
    return float("nan") if completion == "nan" else 1.0


@pytest.mark.parametrize("completion, words", [
    ("7", "reward flaky failed on prompt '3+4=', completion '7': KeyError: 'answer'"),
    ("nan", "reward flaky returned nan on prompt '3+4=', completion 'nan'"),
])
def test_a_reward_that_raises_or_returns_nan_names_prompt_and_completion(completion, words):
    group = ["8", completion, "6"]
    with pytest.raises(ValueError) as e:
        score(flaky, ["3+4="] * 3, group, [{"answer": "7"}] * 3)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_a_reward_that_raises_stops_training_with_its_message(tmp_path, data, capsys, monkeypatch):
    import minigrpo.trainer as trainer
    monkeypatch.setattr(trainer, "parse_reward", lambda spec: lambda p, c, **kw: 1 / 0)
    rc, lines, err = run_cli(tiny(tmp_path, "--data_dir", str(data)), capsys)
    assert rc == 2 and "Traceback" not in err
    assert "failed on prompt '12+34=', completion" in lines[-1] and "ZeroDivisionError" in lines[-1]
    assert os.path.isdir(tmp_path / "run" / "sft")  # the SFT start it had made is kept
