"""The baselines GRPO is measured against (lesson 8): PPO with a critic, REINFORCE and RLOO.

All four methods share everything but the advantage: the sampler (G completions per
prompt, trainer.sample_and_score), the rewards, the clipped policy loss with
eps_low / eps_high and the loss_type aggregation, the logging and the checkpoints.
What differs is how much each sampled token is pushed up or down:

    grpo       A_i = (r_i - mean_group) / std_group            every token of completion i
    reinforce  A_i = r_i - mean_batch                          Williams (1992), batch-mean baseline
    rloo       A_i = r_i - mean_{j != i in the group} r_j      Kool et al. (2019); Ahmadian et al. (2024)
    ppo        A_t = sum_k (gamma lam)^k delta_{t+k},           GAE, Schulman et al. (2016),
               delta_t = r_t + gamma V(s_{t+1}) - V(s_t)        with a learned critic V

The reward is sparse: r_t = 0 for every token but the last, which gets the
completion's reward R. The critic V(s_t) estimates the expected final reward
from the state s_t = prompt + the completion's first t tokens; PPO whitens its
advantages over the batch (as TRL's PPOTrainer does) and trains the critic on
the GAE returns A_t + V(s_t) with PPO2's clipped value loss.

    adv = baseline_advantages(rewards, G, "rloo")             # (B*G,)
    values = critic(prompt_ids, prompt_mask, ids, mask)       # (B*G, T)
    adv_t, returns = gae(rewards, values, mask, gamma=1.0, lam=0.95)
"""
from __future__ import annotations

import copy
import time

import torch

from .config import Config
from .loss import aggregate, clipped_surrogate
from .model import completion_logprobs, positions
from .reward import score
from .sampler import pad_prompts, sample_group
from .tokenizer import decode_batch, encode
from .trainer import check_finite, kept_rows, loss_mask, optimizer_step, sample_and_score, step_row


class Critic(torch.nn.Module):
    """V(s_t): a copy of the policy's transformer body with a scalar head, and its own optimizer.

    Starting from the (SFT) policy's body is the usual choice for LLM PPO (the critic
    needs to read the prompt); the head starts at 0, so V = 0 everywhere at first.
    """

    def __init__(self, policy, cfg: Config):
        super().__init__()
        self.body = copy.deepcopy(policy.model)                 # LlamaModel: ids -> hidden states
        self.head = torch.nn.Linear(policy.config.hidden_size, 1)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)
        self.to(next(policy.parameters()).device)
        self.opt = torch.optim.AdamW(self.parameters(), lr=cfg.critic_lr, weight_decay=0.0, betas=(0.9, 0.99))

    def forward(self, prompt_ids, prompt_mask, completion_ids, completion_mask) -> torch.Tensor:
        """Values (N, T): V(s_t) before completion token t is chosen (0 where masked)."""
        P, T = prompt_ids.shape[1], completion_ids.shape[1]
        ids = torch.cat([prompt_ids, completion_ids], dim=1)                # (N, P+T)
        attn = torch.cat([prompt_mask, completion_mask], dim=1)             # (N, P+T)
        h = self.body(input_ids=ids, attention_mask=attn, position_ids=positions(attn),
                      use_cache=False).last_hidden_state                   # (N, P+T, H)
        v = self.head(h[:, P - 1:P + T - 1].float()).squeeze(-1)           # (N, T) state before c_t
        return v * completion_mask

    def state(self) -> dict:
        return {"model": self.state_dict(), "optimizer": self.opt.state_dict()}

    def load(self, state: dict) -> None:
        self.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])


def baseline_advantages(rewards: torch.Tensor, group_size: int, kind: str) -> torch.Tensor:
    """REINFORCE's A_i = r_i - mean over the batch, or RLOO's leave-one-out mean of the group. (N,) -> (N,)"""
    if kind == "reinforce":
        return rewards - rewards.mean()
    if kind == "rloo":
        grouped = rewards.view(-1, group_size)                              # (B, G)
        others = (grouped.sum(1, keepdim=True) - grouped) / (group_size - 1)  # (B, G) mean of the other G-1
        return (grouped - others).reshape(-1)
    raise ValueError(f"unknown baseline {kind!r}; valid: 'reinforce', 'rloo'")


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates with the reward on each completion's last token.

    | arg     | shape  | meaning                                              |
    |---------|--------|------------------------------------------------------|
    | rewards | (N,)   | the completion's reward R, given at its last token   |
    | values  | (N, T) | V(s_t); the state after the last token has value 0   |
    | mask    | (N, T) | 1 for real completion tokens (EOS included)          |

    Returns advantages (N, T) and returns = advantages + values (N, T), 0 where masked.
    """
    N, T = values.shape
    values = values * mask
    last = mask.sum(1).long().clamp(min=1) - 1                              # (N,) index of the last token
    r = torch.zeros_like(values)                                            # (N, T) sparse rewards
    r[torch.arange(N, device=values.device), last] = rewards.to(values.dtype) * (mask.sum(1) > 0)
    adv = torch.zeros_like(values)                                          # (N, T)
    running = torch.zeros(N, dtype=values.dtype, device=values.device)      # (N,)
    for t in reversed(range(T)):
        next_v = values[:, t + 1] if t + 1 < T else torch.zeros_like(running)  # 0 past the end (masked)
        delta = r[:, t] + gamma * next_v - values[:, t]                     # (N,)
        running = (delta + gamma * lam * running) * mask[:, t]
        adv[:, t] = running
    return adv, (adv + values) * mask


def whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the masked entries; 0 where masked. (N, T) -> (N, T)"""
    n = mask.sum().clamp(min=1)
    mean = (x * mask).sum() / n
    var = (((x - mean) * mask) ** 2).sum() / n
    return (x - mean) * torch.rsqrt(var + eps) * mask


def value_loss(values, old_values, returns, mask, clip: float) -> torch.Tensor:
    """PPO2's clipped value loss: 1/2 max((V - R)^2, (V_old + clip(V - V_old) - R)^2), token mean."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)         # (N, T)
    per_token = 0.5 * torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


def rl_step(policy, critic: Critic | None, tok, opt, records: list[dict], reward_fn, cfg: Config,
            generator: torch.Generator) -> dict:
    """One step of cfg.algo ("ppo", "reinforce" or "rloo"); returns the same log row as grpo_step,
    plus "value_loss" and "value_mae" (|V(s_0) - R|, the critic's error on the prompt) for PPO."""
    G = cfg.group_size
    t0 = time.perf_counter()
    s, rewards, correct, t1 = sample_and_score(policy, tok, records, reward_fn, cfg, generator)
    mask = loss_mask(s, cfg)                                                # (N, T)
    args = (s.prompt_ids, s.prompt_mask, s.completion_ids, s.completion_mask)
    extra = {}
    if cfg.algo == "ppo":
        with torch.no_grad():
            old_values = critic(*args)                                      # (N, T)
        adv_t, returns = gae(rewards, old_values, s.completion_mask.float(), cfg.gamma, cfg.gae_lambda)
        adv_t = whiten(adv_t, mask)                                         # (N, T)
        idx, rescale = kept_rows(torch.ones_like(rewards), mask, cfg, skip=False)  # every row
        extra["value_mae"] = (old_values[:, 0] - rewards).abs().mean().item()
    else:
        adv = baseline_advantages(rewards, G, cfg.algo)                     # (N,)
        adv_t = adv[:, None].expand_as(mask)                                # (N, T) one value per completion
        idx, rescale = kept_rows(adv, mask, cfg, skip=cfg.skip_zero_adv)     # RLOO: constant groups drop out
    sub = lambda x: x[idx]
    loss, grad_norm = torch.zeros(()), torch.zeros(())
    stats = {"kl": 0.0, "clip_low": 0.0, "clip_high": 0.0, "ratio_mean": 1.0}
    policy.train()
    for it in range(cfg.num_iterations if len(idx) else 0):
        logp = completion_logprobs(policy, *map(sub, args), cfg.temperature)  # (K, T)
        old_logp = logp.detach() if cfg.num_iterations == 1 else sub(s.logps)
        ratio = torch.exp((logp - old_logp) * sub(mask))                     # (K, T)
        surrogate = clipped_surrogate(ratio, sub(adv_t), cfg.eps_low, cfg.eps_high)  # (K, T)
        loss = aggregate(-surrogate, sub(mask), cfg.loss_type, cfg.max_new_tokens) * rescale
        check_finite(loss, it)
        grad_norm = optimizer_step(policy, opt, loss, cfg.grad_clip)
        with torch.no_grad():
            m, a, r = sub(mask).bool(), sub(adv_t), ratio.detach()
            n = m.sum().clamp(min=1)
            stats = {"kl": 0.0, "ratio_mean": (r[m].mean().item() if m.any() else 1.0),
                     "clip_low": ((m & (a < 0) & (r < 1 - cfg.eps_low)).sum() / n).item(),
                     "clip_high": ((m & (a > 0) & (r > 1 + cfg.eps_high)).sum() / n).item()}
    policy.eval()
    if critic is not None:  # the critic learns from the same batch, after the policy update
        critic.train()
        for _ in range(cfg.num_iterations):
            vloss = value_loss(critic(*args), old_values, returns, s.completion_mask.float(), cfg.value_clip)
            optimizer_step(critic, critic.opt, vloss, cfg.grad_clip)
        critic.eval()
        extra["value_loss"] = vloss.item()
    return step_row(s, rewards, correct, mask, idx, G, stats, loss, grad_norm, t0, t1, time.perf_counter()) | extra


@torch.no_grad()
def monte_carlo_values(policy, tok, records: list[dict], reward_fn, *, max_new_tokens: int,
                       rollouts: int = 32, temperature: float = 1.0, seed: int = 0) -> list[dict]:
    """True values V^pi(s_t) along one sampled completion per prompt, by Monte Carlo.

    For each record: sample one completion c; for every prefix s_t = prompt + c_<t,
    sample `rollouts` continuations and average their rewards. Returns one dict per
    record: {"prompt", "completion_ids" (list), "values": [V(s_0), ..., V(s_{L-1})]}.
    The standard error of each value is at most 0.5 / sqrt(rollouts) for 0/1 rewards.
    """
    device = next(policy.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    out = []
    for r in records:
        prompt = encode(tok, r["prompt"])
        ids, mask = pad_prompts([prompt], tok.pad_token_id, device)         # (1, P)
        c = sample_group(policy, ids, mask, group_size=1, max_new_tokens=max_new_tokens,
                         eos_id=tok.eos_token_id, pad_id=tok.pad_token_id, temperature=temperature,
                         generator=gen)
        L = int(c.completion_mask.sum())
        tokens = c.completion_ids[0, :L].tolist()
        values = []
        for t in range(L):
            pids, pmask = pad_prompts([prompt + tokens[:t]], tok.pad_token_id, device)  # (1, P+t)
            cont = sample_group(policy, pids, pmask, group_size=rollouts, max_new_tokens=max_new_tokens - t,
                                eos_id=tok.eos_token_id, pad_id=tok.pad_token_id, temperature=temperature,
                                generator=gen)
            prefix = decode_batch(tok, [tokens[:t]])[0]
            texts = [prefix + x for x in decode_batch(tok, cont.completion_ids)]
            values.append(sum(score(reward_fn, [r["prompt"]] * rollouts, texts, [r] * rollouts)) / rollouts)
        out.append({"prompt": r["prompt"], "completion_ids": tokens, "values": values})
    return out


@torch.no_grad()
def critic_values(critic: Critic, tok, traces: list[dict]) -> list[list[float]]:
    """The critic's V(s_t) along each trace of monte_carlo_values (same states)."""
    device = next(critic.parameters()).device
    out = []
    for tr in traces:
        ids, mask = pad_prompts([encode(tok, tr["prompt"])], tok.pad_token_id, device)   # (1, P)
        c = torch.tensor([tr["completion_ids"]], device=device)                         # (1, L)
        out.append(critic(ids, mask, c, torch.ones_like(c))[0].tolist())
    return out
