"""Text in, token ids out, and back: the course's character tokenizer, or any transformers tokenizer.

The course's tokenizer (`build_tokenizer`) is character-level, for arithmetic and the note's equations
(section 6): every character is one token (digits, operators, `x`, punctuation, the Chinese characters
of the note's equation example) plus four special tokens. A character with no token is an error that
names it (`encode` checks; `tok(text)` would map it to <unk>): dropping it would change the problem.

Any other tokenizer (BPE, byte-level, with or without BOS, with a chat template) goes through its own
API: `tok(text)` for a prompt, `apply_chat_template` with the generation prompt when `chat=True`, and
`batch_decode` for completions, cut at the first of the stop ids (`stop_ids`: EOS, the model's
generation EOS ids, and a chat template's end-of-turn token).

    encode(tok, "12+34=")   # [BOS, '1', '2', '+', '3', '4', '=']
"""
from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD, EOS, BOS, UNK = "<pad>", "<eos>", "<bos>", "<unk>"
SPECIAL_TOKENS = [PAD, EOS, BOS, UNK]  # ids 0, 1, 2, 3

ASCII_CHARS = "0123456789+-*/=()x.,:;?! \n"
CHINESE_PUNCTUATION = "×÷，。：；？！、（）“”→"
# The Chinese characters of the note's section 6 (its worked
# equation example and the text around it), plus 加 乘 验 证 for the
# solution styles the tasks write.
CHINESE_CHARS = (
    "一下不且两个中为乘于以价优估但体何例候值倾允先入六其内再决准减出列创制加劣励势化升可同"
    "后向否响回因围在均型基大奖如学安完定对导小展差幅并序应强归影得微态性成所抑据探接提效数整"
    "新方无时明是晰更最果标根案概模正比求治清状猜率现生用由略疏的直相确示移稀程稳等答策算索级"
    "练组细终经结络网群耦能致范表要解计训许证详误调跳较输边达过选逐通错问间除需面项题验高"
)
VOCAB_CHARS = ASCII_CHARS + CHINESE_PUNCTUATION + CHINESE_CHARS
# end-of-turn tokens of common chat templates (Qwen / ChatML, Llama 3, Phi, Gemma): a stop id when the template uses one
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


class UnknownCharacterError(ValueError):
    """Raised when text holds a character that has no token."""


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Build the character-level tokenizer (vocabulary: SPECIAL_TOKENS + VOCAB_CHARS)."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in VOCAB_CHARS:
        assert ch not in vocab, f"duplicate character {ch!r} in VOCAB_CHARS"
        vocab[ch] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")  # one char, one token
    core.decoder = decoders.Fuse()  # join characters back without spaces
    # tok(text) starts with BOS, so TRL and pipelines see the same prompts as we do
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        padding_side="left",  # prompts are left-padded so that completions line up
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )
    return tok


def check_text(tok: PreTrainedTokenizerFast, text: str) -> list[int]:
    """The ids of `text`'s characters; UnknownCharacterError names the first character with no token.

    A single character never spells "<unk>", so an unknown-token id can only mean a missing character.
    """
    ids = tok.convert_tokens_to_ids(list(text))
    if tok.unk_token_id in ids:
        i = ids.index(tok.unk_token_id)
        raise UnknownCharacterError(
            f"character {text[i]!r} (U+{ord(text[i]):04X}) at position {i} of {text!r} "
            f"is not in the tokenizer's vocabulary"
        )
    return ids


def is_char_level(tok) -> bool:
    """True for the course's tokenizer: a WordLevel vocabulary of single characters (what build_tokenizer makes)."""
    cached = getattr(tok, "_minigrpo_char_level", None)
    if cached is None:
        backend = getattr(tok, "backend_tokenizer", None)
        special = set(tok.all_special_tokens)
        cached = backend is not None and isinstance(backend.model, models.WordLevel) and all(
            len(t) == 1 for t in tok.get_vocab() if t not in special)
        tok._minigrpo_char_level = cached
    return cached


def encode(tok: PreTrainedTokenizerFast, text: str, *, bos: bool = True, eos: bool = False,
           chat: bool = False) -> list[int]:
    """Token ids of `text`, optionally followed by EOS.

    The course's tokenizer: one id per character, BOS first if `bos`. Any other: `tok(text)` with its own
    special tokens if `bos` (a BOS where the tokenizer adds one, none where it does not), or with `chat`
    the tokenizer's chat template around one user turn, ending with the generation prompt.
    """
    if is_char_level(tok):
        if chat:
            raise ValueError("chat_template=True needs a tokenizer with a chat template; the course's character "
                             "tokenizer has none")
        ids = check_text(tok, text)
        return ([tok.bos_token_id] if bos else []) + ids + ([tok.eos_token_id] if eos else [])
    if chat:
        text = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]    # the template writes its own BOS
    else:
        ids = tok(text, add_special_tokens=bos)["input_ids"]
    return list(ids) + ([tok.eos_token_id] if eos else [])


def stop_ids(tok, model=None) -> list[int]:
    """The ids that end a completion: EOS, the model's generation-config EOS ids, and any end-of-turn token
    (END_OF_TURN) that the tokenizer's chat template writes."""
    ids = {tok.eos_token_id}
    generation = getattr(model, "generation_config", None)
    extra = getattr(generation, "eos_token_id", None)
    ids |= set(extra if isinstance(extra, (list, tuple)) else [] if extra is None else [extra])
    template = getattr(tok, "chat_template", None) or ""
    for t in END_OF_TURN:
        i = tok.convert_tokens_to_ids(t) if t in template else None
        if i is not None and i != tok.unk_token_id:   # a token the vocabulary has
            ids.add(i)
    return sorted(i for i in ids if i is not None)


def _cut(row: list[int], stops: set[int]) -> list[int]:
    """`row` up to (not including) its first stop id."""
    end = len(row)
    for stop in stops:   # list.index runs in C: one pass per stop id, usually one or two
        try:
            end = min(end, row.index(stop, 0, end))
        except ValueError:
            pass
    return row[:end]


def decode_batch(tok: PreTrainedTokenizerFast, rows, stops: Sequence[int] | None = None) -> list[str]:
    """The text of each row of `rows` (a (N, T) tensor or lists of ids) up to its first stop id (default EOS).

    The course's tokenizer: one id -> text table; a GRPO step decodes N = B*G completions, and looking
    each token up in a plain list is about 10x faster than asking the tokenizer row by row. Any other
    tokenizer: its batch_decode, without special tokens (so byte-level BPE gives text, not 'Ġ').
    """
    rows = rows.tolist() if hasattr(rows, "tolist") else rows
    stops = {tok.eos_token_id} if stops is None else set(stops)
    if not is_char_level(tok):
        return tok.batch_decode([_cut(row, stops) for row in rows], skip_special_tokens=True)
    table = tok.convert_ids_to_tokens(list(range(len(tok))))                 # id -> character
    for special in (tok.pad_token_id, tok.bos_token_id):
        table[special] = ""
    return ["".join(table[i] for i in _cut(row, stops)) for row in rows]


def decode(tok: PreTrainedTokenizerFast, ids, stops: Sequence[int] | None = None) -> str:
    """Text of `ids`, stopping at the first stop id (default EOS) and skipping PAD/BOS."""
    ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
    return decode_batch(tok, [[int(i) for i in ids]], stops)[0]
