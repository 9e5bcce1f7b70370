"""Tests for minigrpo.tokenizer: one token per character, framed by BOS/EOS.

Expected ids are read off the vocabulary's definition by hand: the special
tokens come first (<pad> 0, <eos> 1, <bos> 2, <unk> 3), then ASCII_CHARS in
order, so '0'..'9' are 4..13, '+' 14, '-' 15, '*' 16, '/' 17, '=' 18.
"""
import pytest
import torch
from transformers import AutoTokenizer

from minigrpo.tokenizer import (
    SPECIAL_TOKENS,
    UnknownCharacterError,
    VOCAB_CHARS,
    check_text,
    decode,
    encode,
)

# Strings from the note (section 6) and the arithmetic task.
COMPLETE_SOLUTION = "3x-5=10，移项得3x=10+5，计算得3x=15，两边除以3，得x=5。"
EQUATION_PROMPT = "求解方程 2x+3=7。"
ARITHMETIC_PROMPT = "12+34="
DOC_STRINGS = [COMPLETE_SOLUTION, EQUATION_PROMPT, ARITHMETIC_PROMPT, "2x=4，x=2", "5-7=", "9*8="]

PAD_ID, EOS_ID, BOS_ID, UNK_ID = 0, 1, 2, 3


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def test_special_ids_and_padding_side(tok):
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.convert_ids_to_tokens([0, 1, 2, 3]) == SPECIAL_TOKENS
    assert tok.padding_side == "left"
    # 4 special tokens + one per distinct vocabulary character
    assert len(set(VOCAB_CHARS)) == len(VOCAB_CHARS)
    assert len(tok) == 4 + len(VOCAB_CHARS)


def test_arithmetic_ids_by_hand(tok):
    # BOS, '1'=5, '2'=6, '+'=14, '3'=7, '4'=8, '='=18
    assert encode(tok, ARITHMETIC_PROMPT) == [2, 5, 6, 14, 7, 8, 18]
    assert encode(tok, ARITHMETIC_PROMPT, bos=False) == [5, 6, 14, 7, 8, 18]
    assert encode(tok, "46", bos=False, eos=True) == [8, 10, 1]
    assert encode(tok, "") == [2]


@pytest.mark.parametrize("text", DOC_STRINGS)
def test_one_token_per_character_and_round_trip(tok, text):
    ids = encode(tok, text)
    assert ids[0] == BOS_ID
    assert len(ids) == len(text) + 1                      # exactly one token per character
    body = ids[1:]
    assert UNK_ID not in body and PAD_ID not in body and EOS_ID not in body
    # each id maps back to its own character
    assert tok.convert_ids_to_tokens(body) == list(text)
    # distinct characters get distinct ids, equal characters equal ids
    assert len(set(body)) == len(set(text))
    assert decode(tok, ids) == text
    assert decode(tok, encode(tok, text, bos=False, eos=True)) == text


@pytest.mark.parametrize("text", DOC_STRINGS)
def test_call_prepends_bos_and_matches_encode(tok, text):
    out = tok(text)
    assert out["input_ids"][0] == BOS_ID
    assert out["input_ids"] == encode(tok, text)
    assert out["attention_mask"] == [1] * (len(text) + 1)


def test_complete_solution_has_39_tokens_plus_bos(tok):
    # counted by hand: "3x-5=10，" 8, "移项得3x=10+5，" 11, "计算得3x=15，" 9,
    # "两边除以3，" 6, "得x=5。" 5 -> 39 characters, 40 ids with BOS
    parts = ["3x-5=10，", "移项得3x=10+5，", "计算得3x=15，", "两边除以3，", "得x=5。"]
    assert "".join(parts) == COMPLETE_SOLUTION
    assert [len(p) for p in parts] == [8, 11, 9, 6, 5]
    assert len(encode(tok, COMPLETE_SOLUTION)) == 1 + 39


def test_decode_stops_at_eos_and_skips_pad_and_bos(tok):
    ids = encode(tok, "12+34=", bos=True) + encode(tok, "46", bos=False, eos=True) + encode(tok, "99", bos=False)
    assert decode(tok, ids) == "12+34=46"
    # PAD and BOS anywhere before EOS are skipped
    assert decode(tok, [PAD_ID, PAD_ID, BOS_ID, 5, PAD_ID, 6, EOS_ID, 7]) == "12"
    assert decode(tok, [EOS_ID, 5, 6]) == ""
    assert decode(tok, [PAD_ID, PAD_ID]) == ""
    # a tensor is accepted too
    assert decode(tok, torch.tensor([BOS_ID, 5, 14, 6, 18, 7, EOS_ID, PAD_ID])) == "1+2=3"


@pytest.mark.parametrize("bad", ["a", "€", "猫"])
def test_unknown_character_raises_and_names_it(tok, bad):
    text = f"1+{bad}="
    with pytest.raises(UnknownCharacterError) as info:
        encode(tok, text)
    msg = str(info.value)
    assert repr(bad) in msg
    assert "position 2" in msg
    assert isinstance(info.value, ValueError)
    with pytest.raises(UnknownCharacterError):
        check_text(tok, bad)


def test_first_unknown_character_is_named(tok):
    with pytest.raises(UnknownCharacterError, match=r"'a'.*position 1"):
        encode(tok, "1a猫")


def test_save_and_load_with_auto_tokenizer(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.padding_side == "left"
    assert (loaded.pad_token_id, loaded.eos_token_id, loaded.bos_token_id) == (0, 1, 2)
    assert len(loaded) == len(tok)
    for text in DOC_STRINGS:
        assert loaded(text)["input_ids"] == encode(tok, text)
        assert decode(loaded, encode(tok, text)) == text
    # batch padding of the loaded tokenizer is on the left with PAD
    batch = loaded(["1+2=", "12+34="], padding=True)
    assert batch["input_ids"][0] == [0, 0, 2, 5, 14, 6, 18]
    assert batch["attention_mask"][0] == [0, 0, 1, 1, 1, 1, 1]


def test_decode_batch_equals_decode_row_by_row(tok):
    from minigrpo.tokenizer import decode, decode_batch
    rows = [encode(tok, "12+34=", eos=True) + [tok.pad_token_id] * 2,
            encode(tok, "求解方程 2x+3=7。", bos=False),
            [tok.eos_token_id, 5, 6],
            []]
    assert decode_batch(tok, rows) == [decode(tok, r) for r in rows] == ["12+34=", "求解方程 2x+3=7。", "", ""]
    assert decode_batch(tok, torch.tensor(rows[:1])) == ["12+34="]
