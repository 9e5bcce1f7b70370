"""Lesson 8's baselines (ppo.py): numbers by hand from the papers' formulas, then the engine end to end."""
import copy
import os

import pytest
import torch

from minigrpo.advantage import baseline_advantages
from minigrpo.checkpoint import load_model, load_state
from minigrpo.course.values import monte_carlo_values, value_errors
from minigrpo.config import make_config
from minigrpo.model import build_model
from minigrpo.ppo import Critic, gae, ppo_step, value_loss, whiten
from minigrpo.tokenizer import build_tokenizer
from minigrpo.trainer import grpo_step, train_grpo

RECORDS = [{"task": "arithmetic", "prompt": f"{a}+{b}=", "answer": str(a + b)} for a, b in [(1, 2), (3, 4), (12, 30)]]


def test_reinforce_subtracts_the_batch_mean():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0])            # mean 5/8
    expected = torch.tensor([3, -5, -5, 3, 3, 3, 3, -5]) / 8
    torch.testing.assert_close(baseline_advantages(r, 4, "reinforce"), expected)


def test_rloo_subtracts_the_mean_of_the_other_samples():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    # sample 0: others (0, 0, 1) -> 1 - 1/3; sample 1: others (1, 0, 1) -> 0 - 2/3; a constant group -> 0
    expected = torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3, 0, 0, 0, 0])
    torch.testing.assert_close(baseline_advantages(r, 4, "rloo"), expected)
    with pytest.raises(ValueError, match="unknown baseline 'ppo'"):
        baseline_advantages(r, 4, "ppo")


def test_gae_by_hand():
    # row 0: V = (0.5, 0.6, 0.8), R = 1 at the last token; row 1: two tokens, V = (0.3, 0.4), R = 0, padded
    values = torch.tensor([[0.5, 0.6, 0.8], [0.3, 0.4, 9.9]])
    mask = torch.tensor([[1.0, 1, 1], [1, 1, 0]])
    rewards = torch.tensor([1.0, 0.0])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # row 0: delta = (0.6-0.5, 0.8-0.6, 1-0.8) = (0.1, 0.2, 0.2); A2 = 0.2, A1 = 0.2 + 0.5*0.2, A0 = 0.1 + 0.5*0.3
    # row 1: delta = (0.4-0.3, 0-0.4) = (0.1, -0.4); A1 = -0.4, A0 = 0.1 + 0.5*(-0.4)
    torch.testing.assert_close(adv, torch.tensor([[0.25, 0.3, 0.2], [-0.1, -0.4, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[0.75, 0.9, 1.0], [0.2, 0.0, 0.0]]))
    # lambda = 1, gamma = 1: A_t = R - V(s_t) (Monte Carlo advantage)
    adv1, _ = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(adv1, torch.tensor([[0.5, 0.4, 0.2], [-0.3, -0.4, 0.0]]))
    # gamma = 0.5, lambda = 0: one-step TD, delta_t = r_t + 0.5 V(s_{t+1}) - V(s_t)
    adv0, _ = gae(rewards, values, mask, gamma=0.5, lam=0.0)
    torch.testing.assert_close(adv0, torch.tensor([[-0.2, -0.2, 0.2], [-0.1, -0.4, 0.0]]))


def test_value_loss_takes_the_larger_of_clipped_and_unclipped():
    values, old = torch.tensor([[1.0, 0.6]]), torch.tensor([[0.5, 0.5]])
    returns, mask = torch.tensor([[0.8, 1.0]]), torch.ones(1, 2)
    # token 0: clipped V = 0.7; max(0.2^2, 0.1^2) = 0.04; token 1: clipped = 0.6; max(0.16, 0.16)
    assert value_loss(values, old, returns, mask, clip=0.2).item() == pytest.approx(0.5 * (0.04 + 0.16) / 2)
    # clip 1.0 never binds: plain 1/2 (V - R)^2
    assert value_loss(values, old, returns, mask, clip=1.0).item() == pytest.approx(0.5 * (0.04 + 0.16) / 2)
    values2 = torch.tensor([[0.9, 0.6]])   # token 0 moved past the clip towards R: clipped 0.7 is further
    assert value_loss(values2, old, returns, mask, clip=0.2).item() == pytest.approx(0.5 * (0.01 + 0.16) / 2)


def test_whiten_over_real_tokens_only():
    x = torch.tensor([[1.0, 3.0, 100.0]])
    w = whiten(x, torch.tensor([[1.0, 1.0, 0.0]]))
    torch.testing.assert_close(w, torch.tensor([[-1.0, 1.0, 0.0]]), atol=1e-6, rtol=0)


def setup(**over):
    cfg = make_config("tiny", **over)
    tok = build_tokenizer()
    torch.manual_seed(0)
    return cfg, tok, build_model(cfg, tok)


def test_critic_starts_at_zero_and_trains_apart_from_the_policy():
    cfg, tok, model = setup()
    critic = Critic(model, cfg)
    ids = torch.tensor([[2, 5, 6], [0, 2, 7]])
    pmask = torch.tensor([[1, 1, 1], [0, 1, 1]])
    comp, cmask = torch.tensor([[8, 1], [1, 0]]), torch.tensor([[1, 1], [1, 0]])
    v = critic(ids, pmask, comp, cmask)
    assert v.shape == (2, 2) and torch.equal(v, torch.zeros(2, 2))
    before = copy.deepcopy(model.state_dict())
    for _ in range(20):
        loss = ((critic(ids, pmask, comp, cmask) - 0.7) ** 2 * cmask).sum()
        critic.opt.zero_grad()
        loss.backward()
        critic.opt.step()
    v = critic(ids, pmask, comp, cmask)
    assert v[1, 1] == 0.0 and abs(v[0, 0].item() - 0.7) < 0.2
    assert all(torch.equal(t, before[k]) for k, t in model.state_dict().items())   # the policy is untouched


@pytest.mark.parametrize("algo", ["ppo", "reinforce", "rloo"])
def test_each_method_learns_from_reward_alone(algo):
    cfg, tok, model = setup(algo=algo, group_size=8, max_new_tokens=2, lr=1e-2)
    critic = Critic(model, cfg) if algo == "ppo" else None
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    reward = lambda p, c, **f: float(c[:1].isdigit())
    step = (lambda: ppo_step(model, critic, tok, opt, RECORDS, reward, cfg, gen)) if critic else \
        (lambda: grpo_step(model, None, tok, opt, RECORDS, reward, cfg, gen))
    rows = [step() for _ in range(15)]
    assert rows[-1]["reward_mean"] > 2 * rows[0]["reward_mean"], [r["reward_mean"] for r in rows]


def test_the_critic_learns_the_value_of_a_constant_reward():
    cfg, tok, model = setup(algo="ppo", group_size=4, max_new_tokens=2, critic_lr=1e-2)
    critic = Critic(model, cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    rows = [ppo_step(model, critic, tok, opt, RECORDS, lambda p, c, **f: 1.0, cfg, gen) for _ in range(20)]
    assert rows[0]["value_mae"] == 1.0                      # V = 0 at first, R = 1
    assert rows[-1]["value_mae"] < 0.2, [round(r["value_mae"], 3) for r in rows]


def test_rloo_skipping_constant_groups_gives_the_same_update():
    results = []
    reward = lambda p, c, **f: float(ord(c[0]) % 2 if c else 0) if p == "1+2=" else 1.0
    for skip in (True, False):
        cfg, tok, model = setup(algo="rloo", group_size=8, skip_zero_adv=skip, grad_clip=0.0)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        grpo_step(model, None, tok, opt, RECORDS, reward, cfg, torch.Generator().manual_seed(0))
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-5)


def test_monte_carlo_values_of_a_reward_decided_by_the_first_token():
    cfg, tok, model = setup()
    reward = lambda p, c, **f: float(c.startswith("1"))
    traces = monte_carlo_values(model, tok, RECORDS, reward, max_new_tokens=3, rollouts=8)
    for tr in traces:
        first = tok.convert_ids_to_tokens(tr["completion_ids"][:1])[0]
        # after the first token the outcome is decided: V(s_t) = 1 or 0 exactly, for every t >= 1
        assert tr["values"][1:] == [float(first == "1")] * (len(tr["values"]) - 1)
        assert 0.0 <= tr["values"][0] <= 1.0


def test_value_errors_by_position():
    traces = [{"values": [0.5, 1.0, 1.0], "critic": [0.4, 0.5, 0.9]},
              {"values": [0.2, 0.0], "critic": [0.2, 0.3]}]
    e = value_errors(traces, group_size=2)
    # the mean m of G = 2 rewards: p = 0.5 gives m = 0, 0.5, 1 w.p. 1/4, 1/2, 1/4; p = 0.2 gives 0, 0.5, 1 w.p.
    # 0.64, 0.32, 0.04
    at = lambda v, probs: sum(q * abs(m - v) for m, q in zip((0.0, 0.5, 1.0), probs))
    half, fifth = (0.25, 0.5, 0.25), (0.64, 0.32, 0.04)
    assert e[0] == pytest.approx({"n": 2, "critic": 0.05, "prompt_baseline": 0.0,
                                  "group_mean": (at(0.5, half) + at(0.2, fifth)) / 2})
    assert e[1] == pytest.approx({"n": 2, "critic": (0.5 + 0.3) / 2, "prompt_baseline": (0.5 + 0.2) / 2,
                                  "group_mean": (at(1.0, half) + at(0.0, fifth)) / 2})
    assert e[2] == pytest.approx({"n": 1, "critic": 0.1, "prompt_baseline": 0.5, "group_mean": at(1.0, half)})


def test_ppo_checkpoint_holds_the_critic_and_resumes_exactly(tmp_path):
    def run(name, steps, resume=None):
        cfg, tok, model = setup(algo="ppo", out_dir=str(tmp_path / name), steps=steps, save_every=2, eval_every=2,
                                reward="correct,format:0.5")
        if resume:
            model = load_model(resume)[0]
        return train_grpo(model, tok, cfg, RECORDS * 4, RECORDS, resume=resume, progress=False)

    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("sample_s", "learn_s")} for r in rows]
    full = run("full", 4)
    run("split", 2)
    ckpt = str(tmp_path / "split" / "checkpoint")
    assert "critic" in load_state(ckpt)["extra"]
    assert strip(run("split", 4, resume=ckpt)) == strip(full)
    assert all("value_loss" in r and "value_mae" in r for r in full)
