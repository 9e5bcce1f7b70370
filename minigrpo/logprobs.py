"""Log-probs of chosen tokens without a (N, T, V) log-softmax: from logits, or from hidden states and the LM head.

The training forward needs log pi(c_t | prefix) of one token per position, not the whole distribution.
`selective_log_softmax` takes it from logits (TRL's function of the same name does this row by row);
`LinearLogprob` fuses the LM head into it, block by block, so the (M, V) logits are never held whole, in the
forward or the backward (Liger-Kernel's fused linear cross-entropy, in its log-prob form). `entropy_of` gives
the entropy the same way, for the lessons.

Symbol | Shape     | Description
logits | (N, T, V) | the model's next-token logits
hidden | (M, d)    | hidden states that predict a token each (LinearLogprob)
index  | (N, T)    | the tokens whose log-probs to take ((M,) for LinearLogprob)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


BLOCK = 1 << 24   # logits elements per block of rows in the log-softmax below: 64 MB of temporaries in float32


def _row_blocks(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """`x` (N, T, V) split along N into blocks of at most BLOCK elements (at least one row each)."""
    per_row = max(1, x[0].numel()) if len(x) else 1
    return x.split(max(1, BLOCK // per_row))


def selective_log_softmax(logits: torch.Tensor, index: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / temperature)[index] along the last axis, without a (..., V) log-softmax tensor.

    Symbol | Shape     | Description
    logits | (N, T, V) | any float dtype; float32 / float64 as logit - logsumexp(logits), bf16 / fp16 block by
           |           | block in float32 (a logsumexp in 16 bits loses the log-prob's low digits)
    index  | (N, T)    | the token ids whose log-probs to take
    Returns (N, T) in float32 (or float64). Rows are taken in blocks of at most BLOCK logits, so the
    temporaries stay bounded whatever N is (TRL's selective_log_softmax goes row by row).
    """
    if logits.dtype in (torch.float32, torch.float64):
        scaled = logits if temperature == 1.0 else logits / temperature                 # (N, T, V)
        picked = scaled.gather(-1, index.unsqueeze(-1)).squeeze(-1)                      # (N, T)
        return picked - torch.cat([torch.logsumexp(b, dim=-1) for b in _row_blocks(scaled)])   # (N, T)
    blocks = _row_blocks(logits)
    out = [F.log_softmax(b.float() / temperature, dim=-1).gather(-1, i.unsqueeze(-1)).squeeze(-1)
           for b, i in zip(blocks, index.split(len(blocks[0])))]
    return torch.cat(out)                                                                # (N, T)


def entropy_of(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of softmax(logits / temperature) at each position, block by block, no gradient. (N, T, V) -> (N, T)."""
    with torch.no_grad():
        out = []
        for b in _row_blocks(logits):
            logp = F.log_softmax(b.float() / temperature, dim=-1)                        # (n, T, V)
            out.append(-(logp.exp() * logp).sum(-1))                                     # (n, T)
        return torch.cat(out)


class LinearLogprob(torch.autograd.Function):
    """log softmax(h W^T + b)[index] for rows of hidden states h, block by block: the (M, V) logits are never held
    whole, in the forward or the backward (which recomputes each block's logits). Memory O(M d + block V).

    d logp / d logits = onehot(index) - softmax(logits), so each block's gradient is made and used at once.
    Liger-Kernel's fused linear cross-entropy does the same for SFT; this is its log-prob form.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, index, dtype: torch.dtype):
        rows = max(1, BLOCK // weight.shape[0])
        lse, picked = [], []
        for h, i in zip(hidden.split(rows), index.split(rows)):
            logits = _block_logits(h, weight, bias, dtype)                        # (n, V) float32
            lse.append(torch.logsumexp(logits, dim=-1))                           # (n,)
            picked.append(logits.gather(-1, i.unsqueeze(-1)).squeeze(-1))         # (n,)
        lse, picked = torch.cat(lse), torch.cat(picked)
        ctx.save_for_backward(hidden, weight, bias, index, lse)
        ctx.dtype, ctx.rows = dtype, rows
        return picked - lse                                                        # (M,)

    @staticmethod
    def backward(ctx, grad):
        hidden, weight, bias, index, lse = ctx.saved_tensors
        grad_hidden = torch.empty_like(hidden)
        wide = torch.float64 if ctx.dtype == torch.float64 else torch.float32
        grad_weight = torch.zeros(weight.shape, dtype=wide, device=weight.device)
        grad_bias = torch.zeros(weight.shape[0], dtype=wide, device=weight.device) if bias is not None else None
        start = 0
        for h, i, l, g in zip(hidden.split(ctx.rows), index.split(ctx.rows), lse.split(ctx.rows), grad.split(ctx.rows)):
            logits = _block_logits(h, weight, bias, ctx.dtype)                     # (n, V) recomputed
            d_logits = -torch.exp(logits - l.unsqueeze(-1)) * g.unsqueeze(-1)     # (n, V) -softmax * grad
            d_logits.scatter_add_(-1, i.unsqueeze(-1), g.unsqueeze(-1))           # + onehot * grad
            grad_hidden[start:start + len(h)] = (d_logits.to(ctx.dtype) @ weight.to(ctx.dtype)).to(hidden.dtype)
            grad_weight += (d_logits.to(ctx.dtype).T @ h.to(ctx.dtype)).to(wide)
            if grad_bias is not None:
                grad_bias += d_logits.sum(0)
            start += len(h)
        return (grad_hidden, grad_weight.to(weight.dtype), None if bias is None else grad_bias.to(bias.dtype),
                None, None)


def _block_logits(h, weight, bias, dtype):
    """(n, V) float32 (float64 for float64) logits of one block of hidden states, the matmul in `dtype`
    (autocast's, or float32)."""
    wide = torch.float64 if dtype == torch.float64 else torch.float32
    logits = (h.to(dtype) @ weight.to(dtype).T).to(wide)
    if bias is not None:
        logits = logits + bias.to(wide)
    return logits
