"""Tokenizers trained by the tests themselves: a SentencePiece model (as a Hugging Face directory's
tokenizer.model and as a GGUF "llama" vocabulary) and byte-level BPE vocabularies written into
GGUF files with each pre-tokenizer we support. References: sentencepiece itself, the `tokenizers`
object the vocabulary was trained as, and transformers' GGUF tokenizer loader."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oci_engine.errors import ModelFormatError, ModelNotFoundError, TokenizerError
from oci_engine.tokenizer import Tokenizer

spm = pytest.importorskip("sentencepiece")
gguf = pytest.importorskip("gguf")

_TRAIN_TEXT = "\n".join([
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)",
    "for i in range(10):\n\tprint(i, i ** 2, 'square')",
    "The quick brown fox jumps over the lazy dog. It's 12:30 and we'll leave at 4 o'clock!",
    "import numpy as np\nx = np.arange(100).reshape(10, 10)\ny = x.T @ x  # matrix product",
    "Tokenizers split text into pieces; models read pieces, not characters.",
    "你好世界，这是一个测试。日本語のテキストも少しあります。한국어 문장도 있어요.",
    "Ünïcödé façade naïve café résumé — “quotes” and ‘apostrophes’ … ellipsis",
    "class Stack:\n    def __init__(self):\n        self.items = []\n    def push(self, x):\n        self.items.append(x)",
    "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name ORDER BY 2 DESC;",
    "if (x != null && y.length > 0) { return x[y.length - 1]; } else { throw new Error(\"empty\"); }",
] * 12)

# No leading whitespace here: transformers' Metaspace skips the dummy prefix on such text (see below).
CORPUS = [
    "Hello world",
    "def add(a, b):\n    return a + b\n",
    "x  =  1   # three   spaces",
    "trailing spaces   ",
    "tabs\tand\nnewlines\r\n\n\nend",
    "你好世界 and 日本語",
    "emoji 😀👍🏽🇺🇸 mixed",
    "Ünïcödé façade naïve",
    "numbers 1234567890 3.14159 1e-10",
    "rare: ∀x∈ℝ, ∃y: x² + y² = 1 ✓ ß Ω ♞",
    "",
]


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    """A Llama-style SentencePiece BPE model (byte fallback, identity normalization)."""
    out = tmp_path_factory.mktemp("spm")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_TRAIN_TEXT.splitlines()), model_prefix=str(out / "tokenizer"), vocab_size=400,
        model_type="bpe", byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
        split_digits=True, allow_whitespace_only_pieces=True, character_coverage=0.9995,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, user_defined_symbols=["<tool>"], minloglevel=2,
    )
    return out / "tokenizer.model"


@pytest.fixture(scope="module")
def sp_dir(sp_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("sp_hf")
    (d / "tokenizer.model").write_bytes(sp_model.read_bytes())
    (d / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "chat_template": "{% for m in messages %}{{ bos_token + '[INST] ' + m['content'] + ' [/INST]' }}{% endfor %}",
    }))
    (d / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": [2, 3]}))
    return d


def _sp_gguf(path, sp_model, **extra):
    proc = spm.SentencePieceProcessor(model_file=str(sp_model))
    n = proc.get_piece_size()
    types = []
    for i in range(n):
        types.append(2 if proc.is_unknown(i) else 3 if proc.is_control(i) else 6 if proc.is_byte(i) else
                     4 if proc.id_to_piece(i) == "<tool>" else 1)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list([proc.id_to_piece(i) for i in range(n)])
    w.add_token_scores([proc.get_score(i) for i in range(n)])
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    for key, value in extra.items():
        getattr(w, f"add_{key}")(value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)


@pytest.fixture(scope="module")
def sp_gguf(sp_model, tmp_path_factory):
    return _sp_gguf(tmp_path_factory.mktemp("sp_gguf") / "tiny-llama-vocab.gguf", sp_model,
                    chat_template=LLAMA2_TEMPLATE)


@pytest.fixture(scope="module")
def sp_ref(sp_model):
    return spm.SentencePieceProcessor(model_file=str(sp_model))


# ---- SentencePiece --------------------------------------------------------------------------

@pytest.mark.parametrize("source", ["hf_dir", "gguf"])
def test_sentencepiece_matches_sentencepiece(source, sp_dir, sp_gguf, sp_ref):
    tok = Tokenizer.from_pretrained(sp_dir if source == "hf_dir" else sp_gguf)
    assert tok.bos_token_id == 1 and tok.eos_token_id == 2 and tok.unk_token_id == 0
    for text in CORPUS + [" leading space", "  two leading", " "]:
        ids = tok.encode(text)
        assert ids == [1] + sp_ref.encode(text), text
        assert tok.decode(ids) == sp_ref.decode(ids[1:]) == text
        assert tok.encode(text, add_special_tokens=False) == sp_ref.encode(text)
    # Characters outside the 400-piece vocabulary fall back to byte pieces and come back intact.
    ids = tok.encode("♞ ✓")
    assert any(t.startswith("<0x") for t in tok.convert_ids_to_tokens(ids))
    assert tok.decode(ids) == "♞ ✓"


def test_sentencepiece_dir_config(sp_dir):
    tok = Tokenizer.from_pretrained(sp_dir)
    assert Tokenizer.from_pretrained(sp_dir / "tokenizer.model").encode("x y") == tok.encode("x y")
    assert tok.eos_token_ids == {2, 3}  # tokenizer eos plus generation_config's list
    assert tok.vocab_size == 400
    assert set(tok.all_special_ids) >= {0, 1, 2}
    assert tok.decode([1, *tok.encode("hi", add_special_tokens=False), 2], skip_special_tokens=False) == "<s> hi</s>"
    # A user-defined symbol stays whole, as sentencepiece keeps it.
    assert tok.convert_tokens_to_ids("<tool>") in tok.encode("call <tool> now")
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}]) == "<s>[INST] hi [/INST]"
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=True)[:2] == [1, tok.encode("[", False)[0]]


def test_sentencepiece_gguf_matches_transformers(sp_gguf, sp_ref):
    """transformers' GGUF loader builds the same vocabulary; it differs only in where it puts the
    dummy-prefix space: not on text that starts with a space, nor after a special token. We follow
    sentencepiece and llama.cpp there (the tokenization Llama models were trained and run with)."""
    from transformers import AutoTokenizer

    ref = AutoTokenizer.from_pretrained(str(sp_gguf.parent), gguf_file=sp_gguf.name)
    tok = Tokenizer.from_pretrained(sp_gguf)
    for text in CORPUS:
        assert tok.encode(text) == ref.encode(text), text
        ids = tok.encode(text)
        assert tok.decode(ids) == ref.decode(ids, skip_special_tokens=True)
        assert tok.decode(ids, skip_special_tokens=False) == ref.decode(ids)
    # Where the two differ, by design: a "▁" after a special token and before leading spaces.
    space = tok.convert_tokens_to_ids("\u2581")
    assert tok.encode("<s>hi", add_special_tokens=False)[:2] == [1, space]
    assert ref.encode("<s>hi", add_special_tokens=False)[1] != space
    assert tok.encode(" x", add_special_tokens=False) == sp_ref.encode(" x") != ref.encode(" x", add_special_tokens=False)
    chat = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Sum 1..10?"},
            {"role": "assistant", "content": "55"}, {"role": "user", "content": "Now in Python."}]
    for turns in (chat, chat[1:2]):
        text = tok.apply_chat_template(turns, add_generation_prompt=False)
        assert text == ref.apply_chat_template(turns, tokenize=False)
        assert text.startswith("<s>[INST] ") and (tok.eos_token in text) == (len(turns) > 1)


@pytest.fixture(scope="module")
def unigram_dir(tmp_path_factory):
    """A unigram model with SentencePiece's default normalization (NFKC map, whitespace cleanup)."""
    d = tmp_path_factory.mktemp("unigram")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_TRAIN_TEXT.splitlines()), model_prefix=str(d / "tokenizer"),
        vocab_size=180, hard_vocab_limit=False, model_type="unigram", unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        minloglevel=2,
    )
    return d


def test_sentencepiece_unigram_dir(unigram_dir):
    ref = spm.SentencePieceProcessor(model_file=str(unigram_dir / "tokenizer.model"))
    tok = Tokenizer.from_pretrained(unigram_dir)
    for text in CORPUS + ["  padded   text  ", "ＦＵＬＬ width\u00a0nbsp", "ﬁ ligature", "\x85next line"]:
        assert tok.encode(text) == [1] + ref.encode(text), text
        if ref.unk_id() not in ref.encode(text):  # sentencepiece spells <unk> as " ⁇ "
            assert tok.decode(tok.encode(text)) == ref.decode(ref.encode(text)), text


_PIECES = st.sampled_from(list("ab cde\n\t xyz019你好😀ü.,()_") + ["  ", "\u00a0", "ﬁ", "\u3000", "\x85", "<tool>"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.lists(_PIECES, max_size=16).map("".join), st.text(max_size=16)))
def test_sentencepiece_random_text(sp_dir, sp_gguf, sp_ref, unigram_dir, text):
    ids = sp_ref.encode(text)
    if "<tool>" not in text:  # mid-text, sentencepiece puts no prefix space after a user symbol
        assert _cached(sp_dir).encode(text, add_special_tokens=False) == ids
        assert _cached(sp_gguf).encode(text, add_special_tokens=False) == ids
    uni = spm.SentencePieceProcessor(model_file=str(unigram_dir / "tokenizer.model"))
    assert _cached(unigram_dir).encode(text, add_special_tokens=False) == uni.encode(text)


_LOADED: dict = {}


def _cached(path):
    if path not in _LOADED:
        _LOADED[path] = Tokenizer.from_pretrained(path)
    return _LOADED[path]


# ---- byte-level BPE written to GGUF ----------------------------------------------------------

# The pre-tokenizers of the original models' tokenizer.json files (SmolLM2, GPT-2, Llama-3, Qwen2,
# DeepSeek-Coder), written out here independently of oci_engine's table of GGUF `pre` names.
_LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_DEEPSEEK_CODER_RES = [r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+", r"\p{N}"]


def _reference_pre_tokenizer(pre: str):
    from tokenizers import Regex, pre_tokenizers as pt

    def splits(patterns):
        return pt.Sequence([pt.Split(Regex(p), behavior="isolated") for p in patterns]
                           + [pt.ByteLevel(add_prefix_space=False, use_regex=False)])

    return {
        "gpt2": pt.ByteLevel(add_prefix_space=False, use_regex=True),
        "smollm": pt.Sequence([pt.Digits(individual_digits=True), pt.ByteLevel(add_prefix_space=False, use_regex=True)]),
        "llama-bpe": splits([_LLAMA3_RE]),
        "qwen2": splits([_QWEN2_RE]),
        "deepseek-coder": splits(_DEEPSEEK_CODER_RES),
    }[pre]


def _train_byte_level(pre: str):
    from tokenizers import Tokenizer as Backend, decoders, models, pre_tokenizers, trainers

    backend = Backend(models.BPE())
    backend.pre_tokenizer = _reference_pre_tokenizer(pre)
    backend.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<｜begin▁of▁sentence｜>"]
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(_TRAIN_TEXT.splitlines(), trainer)
    return backend


def _byte_level_gguf(path, backend, pre: str):
    model = json.loads(backend.to_str())["model"]
    tokens = [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types([3 if t.startswith(("<|", "<｜")) else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("pre", ["gpt2", "smollm", "llama-bpe", "qwen2", "deepseek-coder"])
def test_byte_level_gguf_round_trip(pre, tmp_path):
    trained = _train_byte_level(pre)
    path = _byte_level_gguf(tmp_path / f"bpe-{pre}.gguf", trained, pre)
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
    path = _byte_level_gguf(tmp_path / "odd.gguf", _train_byte_level("gpt2"), "some-future-model")
    with pytest.warns(UserWarning, match="unknown pre-tokenizer"):
        tok = Tokenizer.from_pretrained(path)
    assert tok.decode(tok.encode("still works")) == "still works"


# ---- errors -------------------------------------------------------------------------------

def test_load_errors(tmp_path, sp_model):
    with pytest.raises(ModelNotFoundError, match="no tokenizer"):
        Tokenizer.from_pretrained(tmp_path / "missing")
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(TokenizerError, match="no tokenizer.json, tokenizer.model or vocab.json"):
        Tokenizer.from_pretrained(empty)
    bad = tmp_path / "bad_json"
    bad.mkdir()
    (bad / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="cannot load"):
        Tokenizer.from_pretrained(bad)
    broken_model = tmp_path / "broken_model"
    broken_model.mkdir()
    (broken_model / "tokenizer.model").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(TokenizerError):
        Tokenizer.from_pretrained(broken_model)
    not_gguf = tmp_path / "weights.gguf"
    not_gguf.write_bytes(b"this is not a gguf file at all" * 4)
    with pytest.raises(ModelFormatError):
        Tokenizer.from_pretrained(not_gguf)
    # A GGUF without an embedded vocabulary.
    w = gguf.GGUFWriter(str(tmp_path / "novocab.gguf"), "llama")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(TokenizerError, match="no embedded vocabulary"):
        Tokenizer.from_pretrained(tmp_path / "novocab.gguf")
    # An eos id past the end of the vocabulary.
    with pytest.raises(ModelFormatError, match="outside the vocabulary"):
        Tokenizer.from_pretrained(_sp_gguf(tmp_path / "bad_eos.gguf", sp_model, eot_token_id=10_000))


# ---- Hugging Face directories with tokenizer.json -------------------------------------------

@pytest.mark.parametrize("layout", ["template", "template_and_config", "config_only"])
def test_tokenizer_json_bos_rules(layout, tmp_path):
    """tokenizer.json's post-processor decides whether encode() adds BOS (transformers 5 ignores
    tokenizer_config.json's add_bos_token then); without one, add_bos_token / add_eos_token apply."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    backend = _train_byte_level("llama-bpe")
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


def test_added_tokens_from_config(sp_model, tmp_path):
    (tmp_path / "tokenizer.model").write_bytes(sp_model.read_bytes())
    added = {"400": {"content": "<|fim_middle|>", "special": True}, "401": {"content": "<think>", "special": False}}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"added_tokens_decoder": added, "add_bos_token": False}))
    tok = Tokenizer.from_pretrained(tmp_path)
    ids = tok.encode("a<|fim_middle|>b<think>c")
    assert 400 in ids and 401 in ids and tok.vocab_size == 402
    assert tok.decode(ids) == "a b<think> c"  # the special one is skipped, the plain added one kept
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"added_tokens_decoder": {"500": added["400"]}}))
    with pytest.raises(TokenizerError, match="do not match"):
        Tokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("cls,pre", [("GPT2Tokenizer", "gpt2"), ("Qwen2Tokenizer", "qwen2")])
def test_vocab_json_and_merges_txt(cls, pre, tmp_path):
    """The older byte-level layout: vocab.json + merges.txt, special tokens in tokenizer_config.json."""
    from transformers import AutoTokenizer

    model = json.loads(_train_byte_level(pre).to_str())["model"]
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


def test_gguf_sources_agree(sp_gguf):
    """A path, an open gguf.GGUFReader, and the loader's parsed metadata build the same tokenizer."""
    from oci_engine.loader.gguf_file import read_gguf_metadata

    tokenizers = [Tokenizer.from_gguf(sp_gguf), Tokenizer.from_gguf(gguf.GGUFReader(str(sp_gguf))),
                  Tokenizer.from_gguf(read_gguf_metadata(sp_gguf))]
    for text in CORPUS:
        assert len({tuple(t.encode(text)) for t in tokenizers}) == 1
    assert len({(t.bos_token_id, t.eos_token_id, t.chat_template, t.add_bos_token) for t in tokenizers}) == 1
