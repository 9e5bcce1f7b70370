"""Peak memory of one GRPO update on a model with a 32k vocabulary: the full log-softmax against the selective one.

Each case runs in a fresh process: a Qwen2-style model with random weights (vocabulary 32,000, width 64,
2 layers, so that the logits dominate), one batch of N rows with P prompt and T completion tokens, and one
`optim.update_policy` (forward, loss, backward, AdamW). The peak is the most memory PyTorch's tensors held
at once during the update, above what they held when it began: on the CPU from the profiler's memory
timeline (every allocation and free), on a GPU from torch.cuda.max_memory_allocated.

    full       minigrpo 0.2's completion_logprobs: logits at all P+T positions, then a (N, T, V) log-softmax
    kept       the LM head at the T completion positions only (logits_to_keep), then logit - logsumexp
               (logprobs.selective_log_softmax): what a model with soft-capped or scaled logits gets
    fused      the LM head and the log-softmax fused, block by block (logprobs.LinearLogprob): the (N, T, V)
               logits never exist, in the forward or the backward; what plain-head models (Llama, Qwen2, ...) get
    micro      fused, with micro_batch_size rows per forward and backward (the same gradient)

    python benchmarks/memory.py --out benchmarks/memory_cpu.json   # N=64, P=32, T=128, micro-batches of 8
    python benchmarks/memory.py --device cuda --rows 256 --completion 300
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = ("full", "kept", "fused", "micro")


def full_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature=1.0,
                  with_entropy=False, share_prompts=False, merge=False):
    """minigrpo 0.2's training forward, kept here to measure against: float32 logits at every position and a
    full log-softmax over the completion's (N, T, V)."""
    import torch.nn.functional as F
    import torch
    from minigrpo.model import positions
    P, T = prompt_ids.shape[1], completion_ids.shape[1]
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attn = torch.cat([prompt_mask, completion_mask], dim=1)
    out = model(input_ids=input_ids, attention_mask=attn, position_ids=positions(attn), use_cache=False)
    logits = out.logits[:, P - 1:P + T - 1, :].float() / temperature
    logp = F.log_softmax(logits, dim=-1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
    return logp * completion_mask


def measure(case: str, rows: int, prompt: int, completion: int, vocab: int, micro: int, device: str) -> dict:
    """One update of `case` in this process; returns its peak memory above the start, in MB."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    import minigrpo.optim as optim
    from minigrpo.config import make_config
    from minigrpo.doctor import cpu_peak
    from minigrpo.sampler import Samples

    torch.manual_seed(0)
    dev = torch.device(device)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=vocab, hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=prompt + completion, tie_word_embeddings=True))
    model = model.to(dev)
    if case == "full":
        optim.completion_logprobs = full_logprobs
    if case == "kept":
        import minigrpo.model
        minigrpo.model.plain_head = lambda model: False
    cfg = make_config("tiny", prompts_per_step=rows // 2, group_size=2, max_new_tokens=completion,
                      max_seq_len=prompt + completion + 1, micro_batch_size=micro if case == "micro" else 0,
                      share_prompts=False, merge_prefixes=False)   # random rows: none is shared; the cases
                      # differ in the head alone
    gen = torch.Generator().manual_seed(0)
    s = Samples(prompt_ids=torch.randint(0, vocab, (rows, prompt), generator=gen).to(dev),
                prompt_mask=torch.ones(rows, prompt, dtype=torch.long, device=dev),
                completion_ids=torch.randint(0, vocab, (rows, completion), generator=gen).to(dev),
                completion_mask=torch.ones(rows, completion, dtype=torch.long, device=dev),
                logps=torch.zeros(rows, completion, device=dev), entropy=torch.zeros(rows, completion, device=dev),
                truncated=torch.zeros(rows, dtype=torch.bool, device=dev))
    adv = torch.randn(rows, generator=gen).to(dev)
    opt = optim.make_optimizer(model.parameters(), 1e-4, 0.9, 0.99, 0.0)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        upd = optim.update_policy(model, opt, s, adv, s.completion_mask.float(), cfg)
        peak = torch.cuda.max_memory_allocated() - before
    else:
        upd, peak = cpu_peak(lambda: optim.update_policy(model, opt, s, adv, s.completion_mask.float(), cfg))
    return {"case": case, "peak_mb": peak / 2**20, "loss": upd.loss, "grad_norm": upd.grad_norm,
            "logits_mb": rows * completion * vocab * 4 / 2**20}


def run(case: str, rows: int, prompt: int, completion: int, vocab: int, micro: int, device: str) -> dict:
    """`measure` in a fresh process (so that each case's peak is its own)."""
    args = json.dumps([case, rows, prompt, completion, vocab, micro, device])
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", args], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": ROOT})
    if done.returncode:
        raise RuntimeError(f"{case}: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), and its core count."""
    import platform
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor() or platform.machine()
    return f"{name}, {os.cpu_count()} cores"


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(json.dumps(measure(*json.loads(sys.argv[2]))))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=64, help="N = B x G rows of the batch")
    p.add_argument("--prompt", type=int, default=32, help="P, prompt tokens per row")
    p.add_argument("--completion", type=int, default=128, help="T, completion tokens per row")
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--micro", type=int, default=8, help="micro_batch_size of the micro case")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="write the results to this JSON file")
    a = p.parse_args()
    results = [run(c, a.rows, a.prompt, a.completion, a.vocab, a.micro, a.device) for c in CASES]
    import torch
    summary = {"device": torch.cuda.get_device_name(0) if a.device.startswith("cuda") else cpu_name(),
               "torch": torch.__version__, "rows": a.rows, "prompt": a.prompt,
               "completion": a.completion, "vocab": a.vocab, "micro": a.micro, "results": results}
    for r in results:
        print(f"{r['case']:10} peak {r['peak_mb']:8.0f} MB   ({r['peak_mb'] / r['logits_mb']:.2f}x one float32 "
              f"(N, T, V) logits tensor of {r['logits_mb']:.0f} MB)   loss {r['loss']:.6f}  grad norm {r['grad_norm']:.6f}")
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
