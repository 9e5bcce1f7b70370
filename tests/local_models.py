"""Models and tokenizers built here, for the tests of "bring your own model" (nothing is downloaded).

A byte-level BPE tokenizer trained with the `tokenizers` library in well under a second (no BOS, EOS
"<|im_end|>", PAD "<|endoftext|>", a ChatML chat template as Qwen's), a tiny Qwen2 config with random
weights, and free-text JSONL files of sums ("What is 12 + 34?" -> 46), all saved the way a learner's
local copies would be.
"""
import json
import random

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def sums(n: int, seed: int) -> list[dict]:
    """n free-text problems with worked solutions that mark their answer as <answer>n</answer>."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        out.append({"prompt": f"What is {a} + {b}?", "answer": str(a + b),
                    "solution": f"<think>{a} + {b} = {a + b}</think><answer>{a + b}</answer>"})
    return out


def bpe_tokenizer(vocab_size: int = 400, chat_template: bool = True, eos: bool = True) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on the sums and some Chinese text (the note's prompt)."""
    texts = [r["prompt"] + " " + r["solution"] for r in sums(300, seed=1)] + ["求解方程 2x+3=7。"] * 20
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>" if eos else None,
                                   pad_token="<|endoftext|>", chat_template=CHATML if chat_template else None)


def qwen2(tok, hidden: int = 32, layers: int = 2, vocab_size: int | None = None, seed: int = 0) -> Qwen2ForCausalLM:
    """A tiny Qwen2-style causal LM (grouped-query attention, tied embeddings) with random weights."""
    import torch
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=vocab_size or len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, tie_word_embeddings=True,
                         eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
                         pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"))
    model = Qwen2ForCausalLM(config)
    # as Qwen2.5-Instruct's generation_config.json: either end token stops generation
    model.generation_config.eos_token_id = [tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    return model


def model_folder(path, tok=None, model=None) -> str:
    """Save a tiny Qwen2 and its BPE tokenizer to `path`, as `save_pretrained` writes any model."""
    tok = tok or bpe_tokenizer()
    (model or qwen2(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def jsonl(path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)
