"""The character-level tokenizer and the tiny model: round trips through save_pretrained / Auto*."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dapo_rl.data.synthetic import format_solution, make_rows
from dapo_rl.models.tiny import ALPHABET, build_tiny_model, build_tokenizer, default_cache_dir

TEXTS = [
    "347+85=\n7+5=12\n4+8+1=13\n3+1=4\nAnswer: 432",
    "  Answer  :  12 \n\n  3 - 4 ",
    "Answer: -17\nAnswer:3",
    "9*9=",
]


def test_one_token_per_character_with_bos_and_special_ids():
    tok = build_tokenizer()
    ids = tok("12+3=")["input_ids"]
    assert ids[0] == tok.bos_token_id and len(ids) == 6
    assert tok.convert_ids_to_tokens(ids[1:]) == list("12+3=")
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert len(tok) == 4 + len(set(ALPHABET))
    assert tok("%")["input_ids"][1] == tok.unk_token_id
    assert tok("1+1=", add_special_tokens=False)["input_ids"] == tok.convert_tokens_to_ids(list("1+1="))


def test_decode_preserves_spaces_and_newlines():
    tok = build_tokenizer()
    for text in TEXTS:
        ids = tok(text)["input_ids"]
        assert tok.decode(ids, skip_special_tokens=True) == text
    eos = tok.eos_token_id
    assert tok.decode(
        tok("Answer: 5", add_special_tokens=False)["input_ids"] + [eos], skip_special_tokens=True
    ) == ("Answer: 5")


def test_auto_tokenizer_round_trip_next_to_a_model(tmp_path: Path):
    tok = build_tokenizer()
    model = build_tiny_model(tok, hidden=32, layers=1)
    model.save_pretrained(str(tmp_path))  # config.json says model_type llama
    tok.save_pretrained(str(tmp_path))
    loaded = AutoTokenizer.from_pretrained(str(tmp_path))
    for text in TEXTS + [format_solution(r) for r in make_rows(50, seed=0)]:
        ids = tok(text)["input_ids"]
        assert loaded(text)["input_ids"] == ids
        assert loaded.decode(ids) == tok.decode(ids)
        assert loaded.decode(ids, skip_special_tokens=True) == text
    assert (loaded.pad_token_id, loaded.bos_token_id, loaded.eos_token_id) == (0, 1, 2)
    assert loaded.padding_side == "left"
    batch = loaded(["1+1=", "12+34="], padding=True)["input_ids"]
    assert batch[0][:2] == [loaded.pad_token_id] * 2


def test_tiny_model_is_seeded_small_and_reloads(tmp_path: Path):
    tok = build_tokenizer()
    state = torch.random.get_rng_state()
    a = build_tiny_model(tok, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state), "the global RNG must not move"
    b = build_tiny_model(tok, seed=3)
    c = build_tiny_model(tok, seed=4)
    params = sum(p.numel() for p in a.parameters())
    assert 500_000 < params < 5_000_000
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert a.config.attention_dropout == 0.0 and a.config.tie_word_embeddings
    a.save_pretrained(str(tmp_path))
    assert (tmp_path / "model.safetensors").is_file()
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    ids = torch.tensor([tok("12+34=")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, a.eval()(ids).logits)


def test_default_cache_dir(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("DAPO_RL_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("DAPO_RL_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "dapo-rl"
