"""The GRPO loop: it learns from reward alone, learns nothing from equal rewards, resumes exactly."""
import copy
import math
import os

import pytest
import torch

from minigrpo.checkpoint import load_checkpoint
from minigrpo.config import make_config
from minigrpo.logger import STEP_KEYS, read_metrics
from minigrpo.model import build_model
from minigrpo.tokenizer import build_tokenizer, encode
from minigrpo.data import prompt_batch
from minigrpo.reward import parse_reward
from minigrpo.trainer import grpo_step, train_grpo

DIGITS = "0123456789"
RECORDS = [{"task": "arithmetic", "prompt": f"{a}+{b}=", "answer": str(a + b), "a": a, "b": b, "op": "+"}
           for a, b in [(1, 2), (3, 4), (12, 30), (7, 7)]]


def first_token_digit_prob(model, tok, prompt="1+2="):
    with torch.no_grad():
        logits = model(torch.tensor([encode(tok, prompt)])).logits[0, -1]
    probs = logits.softmax(-1)
    return probs[tok.convert_tokens_to_ids(list(DIGITS))].sum().item()


def setup(**over):
    cfg = make_config("tiny", **over)
    tok = build_tokenizer()
    return cfg, tok, build_model(cfg, tok)


def test_reward_alone_raises_the_probability_of_rewarded_completions():
    cfg, tok, model = setup(group_size=8, max_new_tokens=2, lr=1e-2)
    reward = lambda prompt, completion, **f: float(completion[:1] in DIGITS and completion != "")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    before = first_token_digit_prob(model, tok)
    for _ in range(15):
        grpo_step(model, None, tok, opt, RECORDS, reward, cfg, gen)
    after = first_token_digit_prob(model, tok)
    assert before < 0.1 and after > 3 * before, (before, after)


def test_equal_rewards_teach_nothing():
    # every group has equal rewards -> advantages 0 -> zero gradient -> Adam leaves weights unchanged
    cfg, tok, model = setup(group_size=4)
    start = copy.deepcopy(model.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    row = grpo_step(model, None, tok, opt, RECORDS, lambda p, c, **f: 1.0, cfg, torch.Generator().manual_seed(0))
    assert row["zero_var_frac"] == 1.0 and row["reward_std"] == 0.0
    for k, v in model.state_dict().items():
        assert torch.equal(v, start[k]), k


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo", "seq_sum"])
def test_skipping_zero_advantage_rows_gives_the_same_update(loss_type):
    # rows whose group has equal rewards have A = 0 and add exactly 0 to the loss: leaving them
    # out of the backward pass (and rescaling) must give the same gradient, hence the same update
    reward = lambda p, c, **f: float(ord(c[0]) % 2 if c else 0) if p == "1+2=" else 1.0
    results = []
    for skip in (True, False):
        cfg, tok, model = setup(group_size=8, loss_type=loss_type, skip_zero_adv=skip, grad_clip=0.0)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        row = grpo_step(model, None, tok, opt, RECORDS, reward, cfg, torch.Generator().manual_seed(0))
        results.append((row, [p.detach().clone() for p in model.parameters()]))
    (row_a, params_a), (row_b, params_b) = results
    assert 0 < row_a["zero_var_frac"] < 1          # some groups were skipped, some trained
    assert row_a["loss"] == pytest.approx(row_b["loss"], abs=1e-7)
    assert row_a["grad_norm"] == pytest.approx(row_b["grad_norm"], rel=1e-5)
    for a, b in zip(params_a, params_b):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-5)


def test_kl_to_reference_appears_only_with_beta(tmp_path):
    cfg, tok, model = setup(beta=0.1, num_iterations=2, lr=1e-2, group_size=4)
    ref = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    reward = lambda p, c, **f: float(len(c) % 2)
    gen = torch.Generator().manual_seed(1)
    rows = [grpo_step(model, ref, tok, opt, RECORDS, reward, cfg, gen) for _ in range(3)]
    assert rows[0]["kl"] >= 0.0 and rows[-1]["kl"] > 0.0
    # with mu = 2 the second update sees a ratio that moved away from 1
    assert rows[-1]["ratio_mean"] != pytest.approx(1.0, abs=1e-7)


def test_prompt_batches_are_a_seeded_function_of_step():
    recs = [{"prompt": str(i)} for i in range(10)]
    a = [r["prompt"] for s in range(5) for r in prompt_batch(recs, s, 4, seed=3)]
    b = [r["prompt"] for s in range(5) for r in prompt_batch(recs, s, 4, seed=3)]
    assert a == b and len(a) == 20
    epoch0 = a[:8]  # 10 // 4 = 2 batches per epoch, no repeats within an epoch
    assert len(set(epoch0)) == 8


def test_parse_reward():
    fn = parse_reward("correct:1,format:0.5")
    rec = {"task": "arithmetic", "answer": "3"}
    assert fn("1+2=", "3", **rec) == 1.5
    assert fn("1+2=", "4", **rec) == 0.5
    with pytest.raises(ValueError, match="not a number"):
        parse_reward("correct:x")


def _run(tmp_path, name, steps, resume=None, **over):
    cfg = make_config("tiny", out_dir=str(tmp_path / name), steps=steps, save_every=2, eval_every=2, **over)
    tok = build_tokenizer()
    if resume:
        model = load_checkpoint(resume)[0]
    else:
        model = build_model(cfg, tok)
    test = RECORDS
    rows = train_grpo(model, tok, cfg, RECORDS * 4, test, resume=resume, progress=False)
    return cfg, model, rows


def test_train_writes_fixed_keys_and_resumes_exactly(tmp_path):
    cfg, full_model, full = _run(tmp_path, "full", steps=4)
    assert [r["step"] for r in full] == [1, 2, 3, 4]
    for r in full:
        assert set(STEP_KEYS) <= set(r)
    assert "eval_accuracy" in full[1] and "eval_accuracy" not in full[0]
    assert read_metrics(os.path.join(cfg.out_dir, "metrics.jsonl")) == full
    # stop after 2 steps, then resume from the checkpoint to 4
    cfg2, _, _ = _run(tmp_path, "split", steps=2)
    _, resumed_model, resumed = _run(tmp_path, "split", steps=4, resume=os.path.join(cfg2.out_dir, "checkpoint"))
    drop = ("sample_s", "learn_s")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in drop} for r in rows]
    assert strip(resumed) == strip(full)
    for (k, v), w in zip(full_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(v, w), k


def test_equation_runs_log_the_style_of_correct_test_answers(tmp_path):
    """Evaluation rows of an equations run carry the section-6 style shares; arithmetic rows do not."""
    from minigrpo.sft import train_sft
    from minigrpo.course.datasets import make_equation
    from minigrpo.tasks import STYLES, solution
    import random
    rng = random.Random(0)
    eqs = [make_equation(rng) for _ in range(8)]
    cfg, tok, model = setup(out_dir=str(tmp_path), task="equations", reward="rubric", max_new_tokens=48,
                            steps=2, eval_every=1, eval_size=4, save_every=0)
    demos = [{**r, "solution": solution(r, "complete")} for r in eqs]   # teach the complete style only
    train_sft(model, tok, demos, make_config("tiny", sft_steps=60, sft_batch_size=8, sft_lr=3e-3), progress=False)
    rows = train_grpo(model, tok, cfg, eqs, eqs, progress=False)
    for r in rows:
        shares = r["eval_style_shares"]
        assert set(shares) == {*STYLES, "other"} and r["eval_complete_share"] == shares["complete"]
        assert sum(shares.values()) in (0.0, 1.0) or abs(sum(shares.values()) - 1) < 1e-9
    assert "eval_style_shares" not in _run(tmp_path, "arith", steps=1)[2][0]


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    import minigrpo.optim as optim
    calls = {"n": 0}
    real = optim.grpo_loss

    def nan_from_step_3(*args, **kw):
        loss, stats = real(*args, **kw)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] >= 3 else loss), stats

    monkeypatch.setattr(optim, "grpo_loss", nan_from_step_3)
    cfg, tok, model = setup(out_dir=str(tmp_path), steps=4, save_every=1, eval_every=0, skip_zero_adv=False)
    with pytest.raises(FloatingPointError, match=r"step 3: non-finite GRPO loss .* last good checkpoint \(step 2\)"):
        train_grpo(model, tok, cfg, RECORDS * 4, RECORDS, progress=False)
    _, _, state = load_checkpoint(os.path.join(cfg.out_dir, "checkpoint"))
    assert state["step"] == 2
    assert [r["step"] for r in read_metrics(os.path.join(cfg.out_dir, "metrics.jsonl"))] == [1, 2]


def _kl_run(tmp_path, name, steps, start=None, resume=None):
    """A run with a KL term (beta > 0, so a reference model) that starts from the checkpoint `start`."""
    cfg = make_config("tiny", out_dir=str(tmp_path / name), steps=steps, save_every=2, eval_every=2, beta=0.2,
                      num_iterations=2, lr=1e-2, reward="correct,format:0.5")
    model, tok = load_checkpoint(resume or start)[:2]
    rows = train_grpo(model, tok, cfg, RECORDS * 4, RECORDS, resume=resume, start=None if resume else start,
                      progress=False)
    return cfg, model, rows


@pytest.fixture
def start(tmp_path):
    """An SFT start that answers with numbers, so that the format reward differs within a group."""
    from minigrpo.checkpoint import save_checkpoint
    from minigrpo.sft import train_sft
    cfg, tok, model = setup(sft_steps=60, sft_batch_size=8, sft_lr=3e-3)
    train_sft(model, tok, RECORDS, cfg, progress=False)
    return save_checkpoint(str(tmp_path / "start"), model, tok, cfg=cfg)


def test_the_reference_is_named_not_copied_and_a_kl_run_resumes_exactly(tmp_path, start):
    from minigrpo.checkpoint import file_sha256, load_state
    _, full_model, full = _kl_run(tmp_path, "full", 4, start=start)
    assert full[-1]["kl"] > 0
    cfg, _, _ = _kl_run(tmp_path, "split", 2, start=start)
    ckpt = os.path.join(cfg.out_dir, "checkpoint")
    reference = load_state(ckpt)["extra"]["reference"]
    weights = os.path.join(start, "model.safetensors")
    assert reference == {"path": weights, "sha256": file_sha256(weights)}
    assert "reference.safetensors" not in os.listdir(ckpt)   # the start checkpoint holds pi_ref already
    _, resumed_model, resumed = _kl_run(tmp_path, "split", 4, resume=ckpt)
    drop = lambda rows: [{k: v for k, v in r.items() if k not in ("sample_s", "learn_s")} for r in rows]
    assert drop(resumed) == drop(full)
    for (k, v), w in zip(full_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(v, w), k


def test_a_changed_reference_is_refused_on_resume(tmp_path, start):
    from minigrpo.checkpoint import CheckpointError
    cfg, _, _ = _kl_run(tmp_path, "run", 2, start=start)
    weights = os.path.join(start, "model.safetensors")
    data = bytearray(open(weights, "rb").read())
    data[-1] ^= 1                                            # one bit of one weight
    open(weights, "wb").write(bytes(data))
    with pytest.raises(CheckpointError, match=f"the reference model's weights {weights} changed since the run started"):
        _kl_run(tmp_path, "run", 4, resume=os.path.join(cfg.out_dir, "checkpoint"))


def test_without_a_start_checkpoint_the_reference_is_kept_in_the_checkpoint_and_resumes(tmp_path, start):
    from minigrpo.checkpoint import load_state
    from safetensors.torch import load_file

    def run(name, steps, resume=None):
        cfg = make_config("tiny", out_dir=str(tmp_path / name), steps=steps, save_every=1, eval_every=0, beta=0.2,
                          num_iterations=2, lr=1e-2, reward="correct,format:0.5")
        model, tok = load_checkpoint(resume or start)[:2]
        return cfg, model, train_grpo(model, tok, cfg, RECORDS * 4, RECORDS, resume=resume, progress=False)

    _, _, full = run("full", 3)
    cfg, _, _ = run("split", 1)
    ckpt = os.path.join(cfg.out_dir, "checkpoint")
    assert load_state(ckpt)["extra"]["reference"] == {"path": "reference.safetensors"}
    initial = load_checkpoint(start)[0].state_dict()
    saved = load_file(os.path.join(ckpt, "reference.safetensors"))
    assert saved and all(torch.equal(v, initial[k]) for k, v in saved.items())   # pi_ref: the starting weights
    _, _, resumed = run("split", 3, resume=ckpt)
    drop = lambda rows: [{k: v for k, v in r.items() if k not in ("sample_s", "learn_s", "eval_accuracy")}
                         for r in rows]
    assert drop(resumed) == drop(full) and full[-1]["kl"] > 0


def test_a_checkpoint_that_cannot_be_written_stops_the_run_naming_the_one_kept(tmp_path, monkeypatch):
    import errno
    import safetensors.torch
    real, calls = safetensors.torch.save_file, {"n": 0}

    def disk_full_from_the_second_save(*a, **k):
        calls["n"] += 1
        if calls["n"] >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*a, **k)

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full_from_the_second_save)
    cfg, tok, model = setup(out_dir=str(tmp_path / "run"), steps=4, save_every=1, eval_every=0)
    ckpt = os.path.join(cfg.out_dir, "checkpoint")
    with pytest.raises(Exception) as e:
        train_grpo(model, tok, cfg, RECORDS * 4, RECORDS, progress=False)
    assert str(e.value) == (f"step 2: could not write the checkpoint {ckpt} (No space left on device); "
                            f"training stopped, the last good checkpoint (step 1) is kept in {ckpt}")
    monkeypatch.undo()
    assert load_checkpoint(ckpt)[2]["step"] == 1


def test_dynamic_sampling_fills_the_step_with_informative_groups(monkeypatch):
    """Rounds whose groups are informative (i) or constant (c) as designed: i c i c, then c c c i, then i i c c.
    B = 4 needs 2 + 1 + 2 >= 4 informative groups: three rounds, and the first four are trained on; with a
    cap of two rounds, the three found so far."""
    import dataclasses
    import minigrpo.trainer as trainer
    design = ["icic", "ccci", "iicc"]
    calls = {"n": 0}
    real = trainer.rollout

    def designed(policy, tok, records, reward_fn, cfg, generator, generation=None):
        ro = real(policy, tok, records, reward_fn, cfg, generator, generation)
        pattern = design[calls["n"]]
        calls["n"] += 1
        rewards = torch.tensor([float(i % 2) if kind == "i" else 1.0 for kind in pattern for i in range(4)])
        return dataclasses.replace(ro, rewards=rewards)

    monkeypatch.setattr(trainer, "rollout", designed)
    seen = {}
    real_update = trainer.update_policy

    def spy(policy, opt, samples, adv, *a, **k):
        seen["prompts"] = samples.prompt_ids[::4]
        return real_update(policy, opt, samples, adv, *a, **k)

    monkeypatch.setattr(trainer, "update_policy", spy)
    prompts = lambda r: [{**RECORDS[0], "prompt": f"{r}{i}+0="} for i in range(4)]
    for cap, rounds, kept in ((3, 3, 4), (2, 2, 3)):
        calls["n"] = 0
        cfg, tok, model = setup(dynamic_sampling=True, max_sampling_rounds=cap, group_size=4)
        row = grpo_step(model, None, tok, torch.optim.SGD(model.parameters(), lr=0.0), prompts(0), lambda *a, **k: 0.0,
                        cfg, torch.Generator().manual_seed(0), prompts)
        assert (row["sampling_rounds"], row["samples"], row["kept_groups"]) == (rounds, 16 * rounds, kept)
        assert row["zero_var_frac"] == pytest.approx(1 - (2 + 1 + 2 * (rounds == 3)) / (4 * rounds))  # over all sampled
        trained = ["".join(tok.convert_ids_to_tokens([i for i in p.tolist() if i != tok.pad_token_id][1:]))
                   for p in seen["prompts"]]
        assert trained == ["00+0=", "02+0=", "13+0=", "20+0="][:kept]


def test_dynamic_sampling_trains_only_on_informative_groups(monkeypatch):
    import minigrpo.trainer as trainer
    seen = {}
    real = trainer.update_policy

    def spy(policy, opt, samples, adv, *a, **k):
        seen["rows"], seen["adv"] = samples.completion_ids.shape[0], adv
        return real(policy, opt, samples, adv, *a, **k)

    monkeypatch.setattr(trainer, "update_policy", spy)
    reward = lambda p, c, **f: 1.0 if p == "1+2=" else float(len(c) % 2)
    cfg, tok, model = setup(dynamic_sampling=True, max_sampling_rounds=1, group_size=4)
    row = grpo_step(model, None, tok, torch.optim.SGD(model.parameters(), lr=0.0), RECORDS, reward, cfg,
                    torch.Generator().manual_seed(0), lambda r: RECORDS)
    kept = row["kept_groups"]
    assert seen["rows"] == 4 * kept and kept <= 3            # the constant group '1+2=' is gone
    assert all((g != 0).any() for g in seen["adv"].view(kept, 4))


def test_recomputed_old_logps_make_the_first_ratio_exactly_one():
    cfg, tok, model = setup(num_iterations=3, old_logps="recompute", group_size=4, lr=1e-2)
    reward = lambda p, c, **f: float(len(c) % 2)
    row = grpo_step(model, None, tok, torch.optim.AdamW(model.parameters(), lr=1e-2), RECORDS, reward, cfg,
                    torch.Generator().manual_seed(0), trace=True)
    assert 0 <= row["logp_diff_max"] < 1e-4               # the sampler (KV cache) and the training forward agree
    ratios = [c["ratios"] for c in row["tokens"]]         # per completion: mu lists of per-token ratios
    assert all(r[0] == [1.0] * len(r[0]) for r in ratios)  # update 1: pi_theta = pi_old exactly
    assert any(x != 1.0 for r in ratios for x in r[-1])    # update 3: the policy has moved
    cfg, tok, model = setup(num_iterations=3, old_logps="sampler", group_size=4, lr=1e-2)
    row = grpo_step(model, None, tok, torch.optim.AdamW(model.parameters(), lr=1e-2), RECORDS, reward, cfg,
                    torch.Generator().manual_seed(0), trace=True)
    assert "logp_diff_max" not in row


def test_traced_tokens_are_written_per_traced_step(tmp_path):
    cfg, tok, model = setup(out_dir=str(tmp_path), steps=4, trace_every=2, trace_groups=2, num_iterations=2,
                            save_every=0, eval_every=0, reward="correct,format:0.5")
    train_grpo(model, tok, cfg, RECORDS * 4, RECORDS, progress=False)
    traces = read_metrics(os.path.join(cfg.out_dir, "tokens.jsonl"))
    assert [t["step"] for t in traces] == [2, 4]
    for t in traces:
        assert len(t["completions"]) == 2 * cfg.group_size and t["eps_high"] == cfg.eps_high
        for c in t["completions"]:
            n = len(c["tokens"])
            assert len(c["entropy"]) == n and len(c["ratios"]) == 2 and all(len(r) == n for r in c["ratios"])
            assert c["tokens"][-1] == "<eos>" or n == cfg.max_new_tokens


def test_overlong_punishment_is_added_to_the_reward():
    cfg, tok, model = setup(overlong_cache=2, max_new_tokens=6, group_size=4)
    from minigrpo.sampler import rollout
    ro = rollout(model, tok, RECORDS, lambda p, c, **f: 1.0, cfg, torch.Generator().manual_seed(0))
    lengths = ro.samples.completion_mask.sum(1).tolist()
    expected = [1.0 + (0.0 if n <= 4 else (4 - n) / 2) for n in lengths]
    assert ro.rewards.tolist() == pytest.approx(expected) and min(expected) < 1.0   # some completions were long


def test_log_kl_measures_the_drift_at_beta_0_without_changing_the_run(tmp_path):
    def run(name, **over):
        # the random reward: a fresh model's answers are all wrong, and equal rewards would train nothing
        cfg = make_config("tiny", out_dir=str(tmp_path / name), steps=4, save_every=0, eval_every=0, lr=1e-2,
                          reward="random", **over)
        tok = build_tokenizer()
        torch.manual_seed(0)
        model = build_model(cfg, tok)
        start = copy.deepcopy(model.state_dict())
        return model, start, train_grpo(model, tok, cfg, RECORDS * 4, RECORDS, progress=False)

    plain_model, start, plain = run("plain")
    logged_model, _, logged = run("logged", log_kl=True)
    assert any(not torch.equal(v, plain_model.state_dict()[k]) for k, v in start.items())   # it trained
    assert all("kl_ref" not in r for r in plain)
    # at the first step the sampling policy is the reference itself: every token's log-ratio is 0 (up to the
    # sampler's KV-cache rounding against a full forward), so is k3
    assert logged[0]["kl_ref"] == pytest.approx(0.0, abs=1e-9)
    assert logged[-1]["kl_ref"] > 1e-4    # lr 1e-2 moves the policy within 3 updates
    # a measurement only: the same samples, the same updates, the same weights
    drop = ("sample_s", "learn_s", "kl_ref", "kl")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in drop} for r in rows]
    assert strip(logged) == strip(plain)
    for (k, v), w in zip(plain_model.state_dict().items(), logged_model.state_dict().values()):
        assert torch.equal(v, w), k


def test_kl_ref_is_the_k3_mean_over_every_sampled_token(monkeypatch):
    cfg, tok, model = setup(beta=0.0, log_kl=True, group_size=4)
    ref = copy.deepcopy(model).requires_grad_(False)
    with torch.no_grad():   # a reference that differs: its output layer scaled
        for p in ref.lm_head.parameters():
            p.mul_(0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    captured = {}
    import minigrpo.trainer as trainer
    real = trainer.rollout

    def spy(*args, **kw):
        captured["ro"] = real(*args, **kw)
        return captured["ro"]
    monkeypatch.setattr(trainer, "rollout", spy)
    row = grpo_step(model, ref, tok, opt, RECORDS, lambda p, c, **f: float(len(c) % 2), cfg,
                    torch.Generator().manual_seed(1))
    s = captured["ro"].samples
    # independently: each row's full sequence through both models, the completion tokens' log-probs
    seq = torch.cat([s.prompt_ids, s.completion_ids], 1)
    att = torch.cat([s.prompt_mask, s.completion_mask], 1)
    pos = (att.cumsum(1) - 1).clamp(min=0)      # prompts are left-padded: a token's position counts real tokens
    P, total, count = s.prompt_ids.shape[1], 0.0, 0
    with torch.no_grad():
        for m, name in ((model, "pi"), (ref, "ref")):
            logits = m(seq, attention_mask=att, position_ids=pos).logits[:, P - 1:-1].float()
            captured[name] = logits.log_softmax(-1).gather(-1, s.completion_ids.unsqueeze(-1)).squeeze(-1)
    for n in range(len(seq)):
        for t in range(s.completion_ids.shape[1]):
            if s.completion_mask[n, t]:
                x = (captured["ref"][n, t] - captured["pi"][n, t]).item()   # log(pi_ref / pi) of a sampled token
                total += math.exp(x) - x - 1                                 # Schulman's k3
                count += 1
    assert row["kl_ref"] == pytest.approx(total / count, rel=1e-4, abs=1e-7)


def test_a_random_reward_run_resumes_exactly(tmp_path):
    """The random reward's coins come from the run's generator, which the checkpoint keeps: 2 steps, then 2 more
    from the checkpoint, are the 4-step run."""
    _, full_model, full = _run(tmp_path, "full", steps=4, reward="random")
    assert {r["reward_mean"] for r in full} - {0.0, 1.0}                  # coins differ within the batch
    cfg2, _, _ = _run(tmp_path, "split", steps=2, reward="random")
    _, resumed_model, resumed = _run(tmp_path, "split", steps=4, resume=os.path.join(cfg2.out_dir, "checkpoint"),
                                     reward="random")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("sample_s", "learn_s")} for r in rows]
    assert strip(resumed) == strip(full)
    for (k, v), w in zip(full_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(v, w), k


def test_the_config_is_checked_once_before_training(tmp_path):
    """train_grpo validates its config before anything is built (the loss's chunks no longer check it), so a Config
    changed by hand into one that cannot work stops with the config's one-line error, not inside a step."""
    import dataclasses
    cfg = dataclasses.replace(make_config("tiny", out_dir=str(tmp_path)), eps_low=1.5)
    tok = build_tokenizer()
    with pytest.raises(ValueError, match="eps_low=1.5"):
        train_grpo(build_model(cfg, tok), tok, cfg, [], [], progress=False)
    assert not os.path.exists(tmp_path / "metrics.jsonl")


def test_the_loss_can_skip_its_argument_checks():
    """update_policy's chunks call grpo_loss with check_args=False: the same loss, without the ValueErrors."""
    from minigrpo.loss import grpo_loss
    g = torch.Generator().manual_seed(0)
    logp, old = -torch.rand(3, 4, generator=g), -torch.rand(3, 4, generator=g)
    adv, mask = torch.tensor([1.0, -1.0, 0.5]), torch.ones(3, 4)
    checked, _ = grpo_loss(logp, old, adv, mask)
    unchecked, _ = grpo_loss(logp, old, adv, mask, check_args=False)
    assert torch.equal(checked, unchecked)
    with pytest.raises(ValueError, match="eps_low"):
        grpo_loss(logp, old, adv, mask, eps_low=1.5)


class CountingStep:
    """A step function of the caller's (train_grpo's `step=`): GRPO's, counting the prompts it saw, a count that
    checkpoints keep (state) and a resumed run gets back (load)."""

    def __init__(self):
        from minigrpo.trainer import grpo_run_step
        self.inner, self.prompts, self.loaded = grpo_run_step, 0, None

    def __call__(self, run, step, batch):
        self.prompts += len(batch)
        return self.inner(run, step, batch) | {"prompts_seen": self.prompts}

    def state(self):
        return {"counting": {"prompts": self.prompts}}

    def load(self, extra):
        self.loaded = extra["counting"]["prompts"]
        self.prompts = self.loaded


def test_a_step_function_and_row_hooks_attach_and_resume(tmp_path):
    """The loop runs the caller's step and hooks: the hook sees the completed row (evaluated when due) and what it
    adds reaches metrics.jsonl; the step's own state is checkpointed and restored. The rows are GRPO's own."""
    seen = []

    def hook(row):
        seen.append(("eval_accuracy" in row, row["step"]))
        row["doubled"] = 2 * row["step"]

    def run(name, steps, resume=None, step=None):
        cfg = make_config("tiny", out_dir=str(tmp_path / name), steps=steps, save_every=2, eval_every=2)
        tok = build_tokenizer()
        model = load_checkpoint(resume)[0] if resume else build_model(cfg, tok)
        rows = train_grpo(model, tok, cfg, RECORDS * 4, RECORDS, resume=resume, progress=False, step=step,
                          on_row=[hook])
        return cfg, rows

    counting = CountingStep()
    cfg, rows = run("counted", 2, step=counting)
    prompts_per_step = cfg.prompts_per_step
    assert seen == [(False, 1), (True, 2)]
    assert [r["doubled"] for r in read_metrics(os.path.join(cfg.out_dir, "metrics.jsonl"))] == [2, 4]
    assert [r["prompts_seen"] for r in rows] == [prompts_per_step, 2 * prompts_per_step]
    again = CountingStep()
    _, resumed = run("counted", 4, resume=os.path.join(cfg.out_dir, "checkpoint"), step=again)
    assert again.loaded == 2 * prompts_per_step and resumed[-1]["prompts_seen"] == 4 * prompts_per_step
    # the same run without the attachments: the same GRPO rows, bit for bit
    _, plain = run("plain", 4)
    drop = ("sample_s", "learn_s", "prompts_seen", "doubled")
    assert [{k: v for k, v in r.items() if k not in drop} for r in resumed] == \
           [{k: v for k, v in r.items() if k not in drop} for r in plain]
