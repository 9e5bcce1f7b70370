"""Lesson 11's section 6: the note's section-1 claim on long answers, a critic against the group baseline.

The note (section 1) says PPO's critic must guess the value of every intermediate token, and guesses it
badly, where GRPO needs one baseline per prompt. Lesson 8 measured it on 3-token answers with a critic that
was still learning. Here, from the long preset's SFT start (results/cpu_long/sft, answers of 13-152 tokens
whose first token picks the style, worked or direct), for each seed:

    1. a critic (lesson 8's: a copy of the policy's body with a value head) is trained on the frozen
       policy's own rollouts until its error on held-out rollouts stops falling (values.warm_up_critic);
    2. along one sampled answer to each of PROMPTS test problems, the true value V(s_t) of every STRIDE-th
       prefix is estimated by Monte Carlo (ROLLOUTS continuations each), beside the critic's V(s_t) and
       the prompt-level baseline V(s_0) that a group mean estimates (values.value_errors).

    python -m minigrpo.course.long_values                     # 3 seeds (resumes): results/cpu_long_values
    python -m minigrpo.course.long_values --seeds 0 --prompts 2 --warmup_steps 4 --out runs/values_smoke
"""
from __future__ import annotations

import argparse
import json
import os

from ..files import atomic_write
from .ablate import LONG, ROOT

OUT = os.path.join(ROOT, "results", "cpu_long_values")
PROMPTS, ROLLOUTS, STRIDE, WARMUP_STEPS = 16, 32, 4, 300


def run_one(seed: int, prompts: int = PROMPTS, rollouts: int = ROLLOUTS, stride: int = STRIDE,
            warmup_steps: int = WARMUP_STEPS, init: str = LONG.start, progress: bool = False) -> dict:
    """Warm a critic up on the policy at `init`, then measure it and the group baseline against Monte Carlo
    values along `prompts` test answers; returns the result (what lesson 11 reads)."""
    import torch
    from ..checkpoint import load_model
    from ..config import make_config
    from ..pipeline import prepare_model, seed_everything, split
    from ..ppo import Critic
    from ..reward import parse_reward
    from .values import critic_values, monte_carlo_values, value_errors, warm_up_critic

    cfg = make_config(LONG.preset, seed=seed, data_dir=os.path.join(ROOT, "data"))
    seed_everything(seed)
    device = torch.device("cpu")
    policy, tok = load_model(init, device)
    policy = prepare_model(policy, device)
    critic = Critic(policy, cfg)                  # a copy of the policy's body, trained, with a value head
    policy.requires_grad_(False)                  # the policy itself stands still
    reward_fn = parse_reward("correct")
    train, test = split(cfg, "train", tok), split(cfg, "test", tok)
    held_out, measured = test[:cfg.prompts_per_step], test[cfg.prompts_per_step:cfg.prompts_per_step + prompts]
    history = warm_up_critic(policy, critic, tok, train, held_out, reward_fn, cfg, max_steps=warmup_steps,
                             progress=progress)
    traces = monte_carlo_values(policy, tok, measured, reward_fn, max_new_tokens=cfg.max_new_tokens,
                                rollouts=rollouts, seed=seed, stride=stride)
    for tr, values in zip(traces, critic_values(critic, tok, traces)):
        tr["critic"] = values
    return {"seed": seed, "init": os.path.relpath(init, ROOT), "prompts": prompts, "rollouts": rollouts,
            "stride": stride, "warmup_steps": warmup_steps, "warmup": history, "traces": traces,
            "errors": value_errors(traces, cfg.group_size)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m minigrpo.course.long_values", description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--prompts", type=int, default=PROMPTS)
    p.add_argument("--rollouts", type=int, default=ROLLOUTS)
    p.add_argument("--stride", type=int, default=STRIDE)
    p.add_argument("--warmup_steps", type=int, default=WARMUP_STEPS, help="the most critic steps before measuring")
    p.add_argument("--out", default=OUT)
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    settings = {k: getattr(args, k) for k in ("prompts", "rollouts", "stride", "warmup_steps")}
    for seed in args.seeds:
        path = os.path.join(args.out, f"values_s{seed}.json")
        if os.path.exists(path):   # finished earlier with the same settings: the experiment resumes
            with open(path) as f:
                if {k: v for k, v in json.load(f).items() if k in settings} == settings:
                    continue
        result = run_one(seed, **settings, progress=True)
        atomic_write(path, lambda f: json.dump(result, f))


if __name__ == "__main__":
    main()
