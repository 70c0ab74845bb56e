"""The default model's tokenizer (SmolLM2 GGUF: byte-level BPE, StarCoder-style digit splitting,
17 control tokens, a ChatML template) against transformers' reading of the same file, and the
Hugging Face directory transformers writes for it (tokenizer.json + chat_template.jinja)."""
from __future__ import annotations

import json

import pytest

from oci_engine.tokenizer import Tokenizer

CORPUS = [
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "class A:\n\tdef __init__(self):\n\t\tself.x = {'a': [1, 2, 3]}\n",
    "import numpy as np; print(np.arange(12).reshape(3, 4) @ np.ones(4))",
    "x = 3.14159e-10; y = 0x1F; z = 1_000_000; w = 12345678901234567890",
    "    indented with spaces\n        and more\n\n\n\nblank lines",
    "\t\ttabs\t\tand\r\nCRLF\r\n",
    "   leading and trailing   ",
    "你好世界，这是一个测试。日本語のテキスト。한국어 텍스트",
    "😀👍🏽🇺🇸👨‍👩‍👧 emoji sequences",
    "naïve café Ünïcödé ß ﬁ ÅÆØ Ωμέγα Кириллица",
    "It's we'll they're I'd you've SHE'S",
    "a\u200bb\u00a0c\u3000d\ufeffe zero-width and odd spaces",
    "<|im_start|>user\nWrite code<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more<file_sep>path/to/file.py",
    "<|im_start|> spaced <|im_end|><|im_end|>",
    "``` python\nprint('hi')\n```",
    "\\n \\t \\\\ escaped\" quotes' `backticks` ${template} {{jinja}}",
    "",
    " ",
    "\n",
    "a" * 300,
    " ".join(str(i) for i in range(200)),
]

CHATS = [
    [{"role": "user", "content": "Write a function that reverses a string."}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3+3?"}],
    [{"role": "user", "content": "日本語で答えて 😀"}, {"role": "assistant", "content": "はい。"}],
    [{"role": "system", "content": ""}, {"role": "user", "content": "  spaces  \n\n"}],
]


@pytest.fixture(scope="module")
def ours(smollm2_gguf):
    return Tokenizer.from_pretrained(smollm2_gguf)


@pytest.fixture(scope="module")
def ref(smollm2_gguf):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)


@pytest.fixture(scope="module")
def hf_dir(ref, tmp_path_factory):
    d = tmp_path_factory.mktemp("smollm2_hf")
    ref.save_pretrained(str(d))
    (d / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0]}))
    return d


def test_encode_decode_parity(ours, ref):
    for text in CORPUS:
        ids = ours.encode(text)
        assert ids == ref.encode(text), text
        assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=True), text
        assert ours.decode(ids, skip_special_tokens=False) == ref.decode(ids), text
        assert ours.convert_ids_to_tokens(ids) == ref.convert_ids_to_tokens(ids)
    # Special tokens typed in text are kept whole (one id each), as transformers does.
    assert ours.encode("<|im_start|>user") == [1, ours.encode("user")[0]]
    batch = ours.encode_batch(CORPUS[:4])
    assert batch == [ref.encode(t) for t in CORPUS[:4]]


def test_special_tokens(ours, ref):
    assert ours.bos_token_id == ref.bos_token_id == 1
    assert ours.eos_token_id == ref.eos_token_id == 2
    assert ours.pad_token_id == ref.pad_token_id
    assert ours.eos_token_ids == {2}
    assert ours.vocab_size == len(ref) == 49152
    assert not ours.add_bos_token  # the GGUF says add_bos_token = false
    assert ours.encode("hi") == ref.encode("hi") and ours.encode("hi")[0] != 1
    # All 17 control tokens are special: skipped by decode(skip_special_tokens=True).
    assert ours.all_special_ids == list(range(17))
    assert ours.decode(list(range(17))) == ""


def test_chat_template_parity(ours, ref):
    for chat in CHATS:
        for gen in (True, False):
            text = ours.apply_chat_template(chat, add_generation_prompt=gen)
            assert text == ref.apply_chat_template(chat, add_generation_prompt=gen, tokenize=False)
            ids = ours.apply_chat_template(chat, add_generation_prompt=gen, tokenize=True)
            assert ids == ref.apply_chat_template(chat, add_generation_prompt=gen, tokenize=True)["input_ids"]
    # The template's default system prompt appears when the chat has none.
    assert "You are a helpful AI assistant named SmolLM" in ours.apply_chat_template(CHATS[0])
    assert ours.apply_chat_template(CHATS[0]).endswith("<|im_start|>assistant\n")


def test_hf_directory_parity(hf_dir, ours, ref):
    """The same tokenizer as a Hugging Face directory: tokenizer.json, tokenizer_config.json,
    chat_template.jinja, and a generation_config.json with two eos ids."""
    assert (hf_dir / "tokenizer.json").exists() and (hf_dir / "chat_template.jinja").exists()
    tok = Tokenizer.from_pretrained(hf_dir)
    for text in CORPUS:
        assert tok.encode(text) == ref.encode(text), text
        assert tok.decode(tok.encode(text)) == ours.decode(ours.encode(text))
    assert tok.eos_token_ids == {2, 0}
    assert tok.bos_token_id == 1 and tok.pad_token_id == ref.pad_token_id
    for chat in CHATS:
        assert tok.apply_chat_template(chat) == ref.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)

