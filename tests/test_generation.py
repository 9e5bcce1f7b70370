"""The generation seam (generation.py): the default is today's sampler, bit for bit, and a second, trivial
generator (transformers' model.generate plus a scoring forward) plugs in and trains through it.
"""
import copy
import json
import os

import torch

from minigrpo.checkpoint import load_model
from minigrpo.config import make_config
from minigrpo.generation import CacheGeneration
from minigrpo.model import completion_logprobs
from minigrpo.pipeline import split
from minigrpo.sampler import Samples, rollout
from minigrpo.tokenizer import stop_ids
from minigrpo.trainer import train_grpo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class PlainGenerate:
    """G samples per prompt by model.generate (full softmax at the run's temperature), their log-probs and
    entropy by one training forward over [prompt | completion]; it keeps a copy of the weights, as a separate
    inference engine would, and load_weights copies the new ones in."""

    def __init__(self, policy, tok, cfg):
        self.model, self.tok, self.cfg, self.loads = copy.deepcopy(policy).eval(), tok, cfg, 0

    def sample(self, prompt_ids, prompt_mask, *, group_size, generator):
        tok, cfg = self.tok, self.cfg
        ids, mask = prompt_ids.repeat_interleave(group_size, 0), prompt_mask.repeat_interleave(group_size, 0)
        torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=generator)))   # generate draws globally
        stops = stop_ids(tok, self.model)
        with torch.no_grad():
            out = self.model.generate(input_ids=ids, attention_mask=mask, do_sample=True, top_k=0, top_p=1.0,
                                      temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                                      eos_token_id=stops, pad_token_id=tok.pad_token_id)
        completion = out[:, ids.shape[1]:]                                                  # (N, T)
        is_stop = torch.isin(completion, torch.tensor(stops))                               # (N, T)
        ended = is_stop.any(1)                                                              # (N,)
        first = torch.where(ended, is_stop.float().argmax(1), completion.shape[1] - 1)      # (N,)
        completion_mask = (torch.arange(completion.shape[1])[None, :] <= first[:, None]).long()   # (N, T)
        completion = completion.masked_fill(completion_mask == 0, tok.pad_token_id)
        with torch.no_grad():
            logps, entropy = completion_logprobs(self.model, ids, mask, completion, completion_mask,
                                                 cfg.temperature, with_entropy=True)
        return Samples(prompt_ids=ids, prompt_mask=mask, completion_ids=completion, completion_mask=completion_mask,
                       logps=logps * completion_mask, entropy=entropy * completion_mask, truncated=~ended)

    def load_weights(self, policy):
        self.model.load_state_dict(policy.state_dict())
        self.loads += 1


def _world(tmp_path):
    """The CPU preset's committed SFT start (its rewards vary within groups), 3 short steps."""
    cfg = make_config("cpu", out_dir=str(tmp_path), data_dir=os.path.join(ROOT, "data"), steps=3, eval_every=0,
                      eval_size=8, save_every=0, prompts_per_step=8, group_size=4)
    policy, tok = load_model(os.path.join(ROOT, "results", "cpu_arithmetic", "sft"), torch.device("cpu"))
    return cfg, tok, policy


def test_the_default_generation_is_todays_sampler(tmp_path):
    cfg, tok, policy = _world(tmp_path)
    records = split(cfg, "train", tok)[:4]
    a = rollout(policy, tok, records, lambda *a, **k: 0.0, cfg, torch.Generator().manual_seed(1))
    b = rollout(policy, tok, records, lambda *a, **k: 0.0, cfg, torch.Generator().manual_seed(1),
                CacheGeneration(policy, tok, cfg))
    assert a.completions == b.completions and torch.equal(a.samples.logps, b.samples.logps)


def test_a_second_generator_trains_through_the_seam(tmp_path):
    cfg, tok, policy = _world(tmp_path)
    train, test = split(cfg, "train", tok), split(cfg, "test", tok)
    engine = PlainGenerate(policy, tok, cfg)
    start = {k: v.clone() for k, v in policy.state_dict().items()}
    seen = []
    original = engine.sample
    engine.sample = lambda *a, **k: seen.append(original(*a, **k)) or seen[-1]
    rows = train_grpo(policy, tok, cfg, train, test, progress=False, generation=engine)
    assert [r["step"] for r in rows] == [1, 2, 3] and engine.loads == 3          # new weights after every update
    assert len(seen) == 3 and all(s.completion_ids.shape[0] == cfg.prompts_per_step * cfg.group_size for s in seen)
    moved = any(not torch.equal(start[k], v) for k, v in policy.state_dict().items())
    copied = all(torch.equal(v, engine.model.state_dict()[k]) for k, v in policy.state_dict().items())
    assert moved and copied                                                      # trained, and the copy follows
    # the first batch's log-probs are those of the start's weights, by the trainer's forward on the same tokens
    s = seen[0]
    before = copy.deepcopy(policy).eval()
    before.load_state_dict(start)
    with torch.no_grad():
        want = completion_logprobs(before, s.prompt_ids, s.prompt_mask, s.completion_ids, s.completion_mask,
                                   cfg.temperature) * s.completion_mask
    assert torch.allclose(s.logps, want, atol=1e-5)
    assert any(r["zero_var_frac"] < 1 for r in rows)                              # groups that taught something
    json.dumps(rows)   # the usual rows
