"""PPO with a learned critic, the baseline GRPO removes (lesson 8): the critic, GAE and PPO2's value loss.

The reward is sparse (r_t = 0 but at the last token, which gets R) and V(s_t) estimates it from the
state s_t = prompt + the first t completion tokens; GAE (Schulman et al., 2016):

    A_t = sum_k (gamma lam)^k delta_{t+k},   delta_t = r_t + gamma V(s_{t+1}) - V(s_t)

whitened over the batch (as TRL's PPOTrainer), then the same clipped update as GRPO (optim.py).
"""
from __future__ import annotations

import copy
import time

import torch

from .logger import step_row
from .loss import loss_mask
from .model import positions
from .optim import make_optimizer, optimizer_step, update_policy
from .sampler import rollout


class Critic(torch.nn.Module):
    """V(s_t): a copy of the policy's transformer body with a scalar head (at 0: V = 0 at first), and its AdamW.

    Starting from the (SFT) policy's body is the usual choice for LLM PPO: the critic must read the prompt.
    """

    def __init__(self, policy, cfg):
        super().__init__()
        self.body = copy.deepcopy(policy.model)                 # LlamaModel: ids -> hidden states
        self.head = torch.nn.Linear(policy.config.hidden_size, 1)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)
        self.to(next(policy.parameters()).device)
        self.opt = make_optimizer(self.parameters(), cfg.critic_lr, cfg.adam_beta1, cfg.adam_beta2, cfg.weight_decay)

    def forward(self, prompt_ids, prompt_mask, completion_ids, completion_mask) -> torch.Tensor:
        """Values (N, T): V(s_t) before completion token t is chosen (0 where masked)."""
        P, T = prompt_ids.shape[1], completion_ids.shape[1]
        ids = torch.cat([prompt_ids, completion_ids], dim=1)                # (N, P+T)
        attn = torch.cat([prompt_mask, completion_mask], dim=1)             # (N, P+T)
        h = self.body(input_ids=ids, attention_mask=attn, position_ids=positions(attn),
                      use_cache=False).last_hidden_state                   # (N, P+T, d)
        v = self.head(h[:, P - 1:P + T - 1].float()).squeeze(-1)           # (N, T) state before c_t
        return v * completion_mask

    def state(self) -> dict:
        return {"model": self.state_dict(), "optimizer": self.opt.state_dict()}

    def load(self, state: dict) -> None:
        self.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates with the reward on each completion's last token.

    Symbol  | Shape  | Description
    rewards | (N,)   | the completion's reward R, given at its last token
    values  | (N, T) | V(s_t); the state after the last token has value 0
    mask    | (N, T) | 1 for real completion tokens (EOS included)

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


def ppo_step(policy, critic: Critic, tok, opt, records: list[dict], reward_fn, cfg,
             generator: torch.Generator) -> dict:
    """One PPO step; returns grpo_step's row plus "value_mae" (|V(s_0) - R|) and "value_loss"."""
    t0 = time.perf_counter()
    # ---- 1-2. sample G completions per prompt and score them, as GRPO does ----
    ro = rollout(policy, tok, records, reward_fn, cfg, generator)
    s = ro.samples
    args = (s.prompt_ids, s.prompt_mask, s.completion_ids, s.completion_mask)
    mask = loss_mask(s.completion_mask, s.truncated, cfg.mask_truncated)    # (N, T)
    # ---- 3. per-token advantages from the critic: GAE, whitened over the batch ----
    with torch.no_grad():
        old_values = critic(*args)                                          # (N, T)
    adv_t, returns = gae(ro.rewards, old_values, s.completion_mask.float(), cfg.gamma, cfg.gae_lambda)
    adv_t = whiten(adv_t, mask)                                             # (N, T)
    extra = {"value_mae": (old_values[:, 0] - ro.rewards).abs().mean().item()}
    # ---- 4. mu clipped updates of the policy, every row; then the critic, on the same batch ----
    upd = update_policy(policy, opt, s, adv_t, mask, cfg, skip_zero_adv=False)
    critic.train()
    for _ in range(cfg.num_iterations):
        vloss = value_loss(critic(*args), old_values, returns, s.completion_mask.float(), cfg.value_clip)
        optimizer_step(critic, critic.opt, vloss, cfg.grad_clip)
    critic.eval()
    extra["value_loss"] = vloss.item()
    # ---- 5. log ----
    return step_row(ro, upd, cfg.group_size) | {"sample_s": ro.sample_s,
                                                "learn_s": time.perf_counter() - t0 - ro.sample_s} | extra


class PPOStep:
    """PPO as train_grpo's step function (`step=PPOStep(critic)`): ppo_step with this critic on each batch.
    Checkpoints save the critic (state) and a resumed run loads it back (load)."""

    def __init__(self, critic: Critic):
        self.critic = critic

    def __call__(self, run, step: int, batch: list[dict]) -> dict:
        return ppo_step(run.policy, self.critic, run.tok, run.opt, batch, run.reward_fn, run.cfg, run.generator)

    def state(self) -> dict:
        return {"critic": self.critic.state()}

    def load(self, extra: dict) -> None:
        self.critic.load(extra["critic"])
