"""Read the tokenizer a GGUF file carries in its metadata (llama.cpp's `tokenizer.*` keys)."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from oci_engine.errors import ModelFormatError, TokenizerError
from oci_engine.vocab_builders import Vocab

_ARRAY_KEYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.scores", "tokenizer.ggml.merges")


@dataclass(slots=True)
class GGUFTokenizerData:
    vocab: Vocab
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    unk_token_id: int | None = None
    add_bos_token: bool = False
    add_eos_token: bool = False
    chat_template: str | dict | None = None
    # Ids llama.cpp also treats as end of generation (end of turn, end of message).
    extra_eos_ids: set[int] = field(default_factory=set)


def read_gguf_metadata(source) -> dict[str, Any]:
    """The `tokenizer.*` metadata of a GGUF as plain Python values.

    `source` is a path, an open `gguf.GGUFReader`, or a mapping that already holds the values
    (the loader's `Checkpoint` metadata, so the header is parsed once)."""
    if isinstance(source, Mapping):
        return dict(source)
    if isinstance(source, (str, os.PathLike)):
        # The loader's header parser: gguf.GGUFReader needs ~2 s for a 49k-token vocabulary.
        from oci_engine.loader.gguf_file import read_gguf_metadata as read_header

        return {k: v for k, v in read_header(source).items() if k.startswith("tokenizer.")}
    out: dict[str, Any] = {}
    for key, fld in source.fields.items():  # an open gguf.GGUFReader
        if not key.startswith("tokenizer."):
            continue
        if key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges"):
            # Decoding the string parts directly is ~10x faster than ReaderField.contents().
            out[key] = [bytes(fld.parts[i]).decode("utf-8", errors="replace") for i in fld.data]
        elif key in _ARRAY_KEYS:
            out[key] = [fld.parts[i][0].item() for i in fld.data]
        else:
            out[key] = fld.contents()
    return out


def _seq(value) -> list:
    return [] if value is None else list(value)  # lists, or numpy arrays from the header parser


def gguf_tokenizer_data(source) -> GGUFTokenizerData:
    meta = read_gguf_metadata(source)
    tokens = meta.get("tokenizer.ggml.tokens")
    model = meta.get("tokenizer.ggml.model")
    if not tokens or model is None:
        raise TokenizerError(
            "this GGUF has no embedded vocabulary (tokenizer.ggml.tokens / tokenizer.ggml.model missing); "
            "point -m at a Hugging Face directory with tokenizer.json, or re-convert the model with its tokenizer"
        )
    vocab = Vocab(
        model=model,
        tokens=tokens,
        token_types=[int(t) for t in _seq(meta.get("tokenizer.ggml.token_type"))],
        scores=[float(x) for x in _seq(meta.get("tokenizer.ggml.scores"))],
        merges=list(meta.get("tokenizer.ggml.merges") or []),
        pre=meta.get("tokenizer.ggml.pre"),
        add_space_prefix=bool(meta.get("tokenizer.ggml.add_space_prefix", model == "llama")),
        unk_id=meta.get("tokenizer.ggml.unknown_token_id"),
    )
    n = len(tokens)

    def token_id(key):
        value = meta.get(key)
        if value is None:
            return None
        if not 0 <= int(value) < n:
            raise ModelFormatError(f"GGUF metadata {key}={value} is outside the vocabulary of {n} tokens")
        return int(value)

    extra = {token_id(k) for k in ("tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id")} - {None}
    template = meta.get("tokenizer.chat_template")
    named = {k.rsplit(".", 1)[1]: v for k, v in meta.items() if k.startswith("tokenizer.chat_template.")}
    if named:
        template = {"default": template, **named} if template else named
    return GGUFTokenizerData(
        vocab=vocab,
        bos_token_id=token_id("tokenizer.ggml.bos_token_id"),
        eos_token_id=token_id("tokenizer.ggml.eos_token_id"),
        pad_token_id=token_id("tokenizer.ggml.padding_token_id"),
        unk_token_id=token_id("tokenizer.ggml.unknown_token_id"),
        # llama.cpp adds BOS to a SentencePiece vocabulary unless the file says otherwise.
        add_bos_token=bool(meta.get("tokenizer.ggml.add_bos_token", model == "llama")),
        add_eos_token=bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        chat_template=template,
        extra_eos_ids=extra,
    )
