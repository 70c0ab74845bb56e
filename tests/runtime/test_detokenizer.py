"""Streaming detokenization: the deltas join to exactly what decode() returns for the whole
sequence, and no delta carries half a character."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oci_engine.detokenizer import IncrementalDetokenizer
from oci_engine.tokenizer import Tokenizer

spm = pytest.importorskip("sentencepiece")

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Text a model may write: any Unicode except lone surrogates (which cannot be encoded) and U+FFFD
# (so that a U+FFFD in the stream can only mean a broken character).
TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\ufffd"), max_size=60)


def _stream(tok, ids, skip=True, prompt_ids=None):
    d = IncrementalDetokenizer(tok, prompt_ids, skip_special_tokens=skip)
    deltas = [d.add(i) for i in ids]
    return deltas, d.flush()


@pytest.fixture(scope="module")
def smol(smollm2_gguf):
    return Tokenizer.from_pretrained(smollm2_gguf)


@pytest.fixture(scope="module")
def sp(tmp_path_factory):
    """SentencePiece BPE with byte fallback and few pieces, so non-Latin text becomes <0xNN> runs."""
    out = tmp_path_factory.mktemp("detok_spm")
    text = ("def f(x):\n    return x * 2  # double it\nThe quick brown fox jumps over the lazy dog.\n"
            "Ünïcödé façade, 你好世界, emoji 😀 and more text to learn from.\n") * 20
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text.splitlines()), model_prefix=str(out / "tokenizer"), vocab_size=420, character_coverage=0.98,
        model_type="bpe", byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2, hard_vocab_limit=False,
    )
    return Tokenizer.from_pretrained(out)


def _ids(vocab_size, special_ids):
    """Random ids, biased toward the ones that make streaming hard: byte tokens and specials."""
    low = st.integers(0, min(vocab_size, 300) - 1)
    return st.lists(st.one_of(st.integers(0, vocab_size - 1), low, st.sampled_from(sorted(special_ids))), max_size=40)


@SETTINGS
@given(data=st.data(), skip=st.booleans())
def test_random_ids_byte_level(smol, data, skip):
    ids = data.draw(_ids(smol.vocab_size, smol.all_special_ids))
    deltas, tail = _stream(smol, ids, skip)
    assert "".join(deltas) + tail == smol.decode(ids, skip_special_tokens=skip)


@SETTINGS
@given(data=st.data(), skip=st.booleans())
def test_random_ids_sentencepiece(sp, data, skip):
    ids = data.draw(_ids(sp.vocab_size, sp.all_special_ids))
    deltas, tail = _stream(sp, ids, skip)
    assert "".join(deltas) + tail == sp.decode(ids, skip_special_tokens=skip)


@SETTINGS
@given(text=TEXT)
def test_text_never_streams_broken_characters(smol, sp, text):
    for tok in (smol, sp):
        ids = tok.encode(text, add_special_tokens=False)
        whole = tok.decode(ids)
        deltas, tail = _stream(tok, ids)
        assert "".join(deltas) + tail == whole
        if "\ufffd" not in whole:  # (a vocabulary without some byte cannot encode every character)
            assert not any("\ufffd" in d for d in deltas)
        if tok is smol:
            assert tail == ""  # complete characters are never held back at the end


def test_multibyte_character_is_held_until_complete(smol, sp):
    for tok in (smol, sp):
        ids = tok.encode("a😀", add_special_tokens=False)
        deltas, tail = _stream(tok, ids)
        pieces = deltas + [tail]
        assert len(ids) >= 3  # the emoji spans several tokens in both vocabularies
        assert "".join(pieces) == "a😀"
        assert not any("\ufffd" in p for p in pieces)
        assert sum("😀" in p for p in pieces) == 1  # the emoji arrives whole, in one delta
    deltas, tail = _stream(smol, smol.encode("a😀"))
    assert deltas[0] == "a" and deltas[-1] == "😀" and set(deltas[1:-1]) <= {""} and tail == ""


def test_truncated_character_flushes_as_replacement(smol):
    ids = smol.encode("😀", add_special_tokens=False)[:-1]
    deltas, tail = _stream(smol, ids)
    assert deltas == [""] * len(ids) and tail == "\ufffd" == smol.decode(ids)


def test_sentencepiece_leading_space(sp):
    ids = sp.encode("Hello world", add_special_tokens=False)
    assert "".join(_stream(sp, ids)[0]) == "Hello world"  # alone, like decode(): no leading space
    # Continuing a prompt, the first word keeps its space, so prompt + output reads right.
    prompt = sp.encode("def f(x):")
    assert "".join(_stream(sp, ids, prompt_ids=prompt)[0]) == " Hello world"
    # A prompt of only BOS decodes to nothing: the output is the start of the text.
    assert "".join(_stream(sp, ids, prompt_ids=[sp.bos_token_id])[0]) == "Hello world"


@pytest.mark.parametrize("decoder", ["metaspace", "wordpiece"])
def test_other_decoders(sp, decoder):
    """A Metaspace decoder is followed token by token; an unknown one falls back to re-decoding."""
    from tokenizers import Tokenizer as Backend, decoders

    backend = Backend.from_str(sp.backend.to_str())
    backend.decoder = decoders.Metaspace() if decoder == "metaspace" else decoders.WordPiece()
    tok = Tokenizer(backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    assert tok.piece_bytes().kind == ("sentencepiece" if decoder == "metaspace" else "generic")
    for text in ["Hello  world", "  two", "x\ny", "def f(x):\n    return x"]:
        ids = tok.encode(text)
        for skip in (True, False):
            deltas, tail = _stream(tok, ids, skip)
            assert "".join(deltas) + tail == tok.decode(ids, skip_special_tokens=skip)


@pytest.fixture(scope="module")
def metaspace(sp):
    from tokenizers import Tokenizer as Backend, decoders

    backend = Backend.from_str(sp.backend.to_str())
    backend.decoder = decoders.Metaspace()
    return Tokenizer(backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@SETTINGS
@given(data=st.data(), skip=st.booleans())
def test_random_ids_metaspace_decoder(metaspace, data, skip):
    ids = data.draw(_ids(metaspace.vocab_size, metaspace.all_special_ids))
    deltas, tail = _stream(metaspace, ids, skip)
    assert "".join(deltas) + tail == metaspace.decode(ids, skip_special_tokens=skip)
