"""Byte-level BPE tokenizers trained by the test itself: written into GGUF files with each
pre-tokenizer we support, and as Hugging Face directories (tokenizer.json with its BOS rules,
vocab.json + merges.txt). References: the trained `tokenizers` object and transformers."""
from __future__ import annotations

import json

import pytest
from tokenizer_samples import CORPUS, byte_level_gguf, train_byte_level

from oci_engine.tokenizer import Tokenizer

pytest.importorskip("gguf")

@pytest.mark.parametrize("pre", ["gpt2", "smollm", "llama-bpe", "qwen2", "deepseek-coder"])
def testbyte_level_gguf_round_trip(pre, tmp_path):
    trained = train_byte_level(pre)
    path = byte_level_gguf(tmp_path / f"bpe-{pre}.gguf", trained, pre)
    tok = Tokenizer.from_pretrained(path)
    assert tok.vocab_size == trained.get_vocab_size()
    texts = CORPUS + ["  leading", "<|im_start|>user\nhi<|im_end|>", "a\u200bb\u00a0c", "\n\n\n\t\t  x",
                      "<｜begin▁of▁sentence｜>User: hi"]
    for text in texts:
        assert tok.encode(text) == trained.encode(text).ids, text
        assert tok.decode(tok.encode(text), skip_special_tokens=False) == text
    assert tok.encode("<|im_start|>hi")[0] == 1 and tok.decode(tok.encode("<|im_start|>hi")) == "hi"
    assert tok.apply_chat_template([{"role": "user", "content": "x"}], add_generation_prompt=False) == \
        "<|im_start|>user\nx<|im_end|>\n"
    # A control token written outside the byte alphabet (DeepSeek's BOS) keeps its id and text.
    bos = trained.token_to_id("<｜begin▁of▁sentence｜>")
    assert tok.encode("<｜begin▁of▁sentence｜>User")[0] == bos
    assert tok.decode([bos], skip_special_tokens=False) == "<｜begin▁of▁sentence｜>"
    if pre in ("gpt2", "llama-bpe", "qwen2"):  # the pre-tokenizers transformers' GGUF loader knows
        from transformers import AutoTokenizer

        ref = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
        for text in texts[:-1]:  # transformers drops that control token (see vocab_builders)
            assert tok.encode(text) == ref.encode(text), text


def test_unknown_pre_tokenizer_warns(tmp_path):
    path = byte_level_gguf(tmp_path / "odd.gguf", train_byte_level("gpt2"), "some-future-model")
    with pytest.warns(UserWarning, match="unknown pre-tokenizer"):
        tok = Tokenizer.from_pretrained(path)
    assert tok.decode(tok.encode("still works")) == "still works"


# ---- Hugging Face directories with tokenizer.json -------------------------------------------

@pytest.mark.parametrize("layout", ["template", "template_and_config", "config_only"])
def test_tokenizer_json_bos_rules(layout, tmp_path):
    """tokenizer.json's post-processor decides whether encode() adds BOS (transformers 5 ignores
    tokenizer_config.json's add_bos_token then); without one, add_bos_token / add_eos_token apply."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    backend = train_byte_level("llama-bpe")
    if layout != "config_only":
        backend.post_processor = TemplateProcessing(single="<|im_start|> $A", pair="<|im_start|> $A $B",
                                                    special_tokens=[("<|im_start|>", 1)])
    backend.save(str(tmp_path / "tokenizer.json"))
    config = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "tokenizer_class": "PreTrainedTokenizerFast"}
    if layout == "template_and_config":
        config.update(add_bos_token=False)
    elif layout == "config_only":
        config.update(add_bos_token=True, add_eos_token=True)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    tok = Tokenizer.from_pretrained(tmp_path)
    ref = AutoTokenizer.from_pretrained(str(tmp_path))
    for text in CORPUS:
        assert tok.encode(text, add_special_tokens=False) == ref.encode(text, add_special_tokens=False), text
        if layout != "config_only":
            assert tok.encode(text) == ref.encode(text), text
    assert tok.encode("x")[0] == 1 and tok.add_bos_token
    assert (tok.encode("x")[-1] == 2) == (layout == "config_only")


@pytest.mark.parametrize("cls,pre", [("GPT2Tokenizer", "gpt2"), ("Qwen2Tokenizer", "qwen2")])
def test_vocab_json_and_merges_txt(cls, pre, tmp_path):
    """The older byte-level layout: vocab.json + merges.txt, special tokens in tokenizer_config.json."""
    from transformers import AutoTokenizer

    model = json.loads(train_byte_level(pre).to_str())["model"]
    (tmp_path / "vocab.json").write_text(json.dumps(model["vocab"]))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    added = {str(model["vocab"][t]): {"content": t, "special": True} for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": cls, "added_tokens_decoder": added, "bos_token": None, "eos_token": "<|im_end|>",
        "unk_token": None, "pad_token": "<|endoftext|>", "add_prefix_space": False}))
    tok = Tokenizer.from_pretrained(tmp_path)
    ref = AutoTokenizer.from_pretrained(str(tmp_path))
    for text in CORPUS + ["<|im_start|>user\nhi<|im_end|>"]:
        assert tok.encode(text) == ref.encode(text), text
        assert tok.decode(tok.encode(text)) == ref.decode(ref.encode(text), skip_special_tokens=True)
    assert tok.eos_token_id == 2 and tok.pad_token_id == 0 and tok.bos_token_id is None
