"""Read a SentencePiece `tokenizer.model` into the pieces and settings a `tokenizers` model needs.

The pieces, scores and types come from the `sentencepiece` library itself. Two settings it does
not expose (the model type, and the normalizer spec) are read from the serialized ModelProto
with a few lines of protobuf wire decoding, so no protobuf runtime is needed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from oci_engine.errors import ModelNotFoundError, TokenizerError
from oci_engine.vocab_builders import BYTE, CONTROL, NORMAL, UNKNOWN, UNUSED, USER_DEFINED, Vocab

_MODEL_TYPES = {1: "unigram", 2: "bpe", 3: "word", 4: "char"}


@dataclass(slots=True)
class SentencePieceModel:
    vocab: Vocab
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    unk_id: int | None


def _fields(buf: bytes):
    """Yield (field number, wire type, value) of one protobuf message."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise TokenizerError(f"unsupported protobuf wire type {wire} in the SentencePiece model")
        yield number, wire, value


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise TokenizerError("the SentencePiece model is truncated (varint runs past the end)")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def load_sentencepiece(path: str) -> SentencePieceModel:
    if not os.path.isfile(path):
        raise ModelNotFoundError(f"SentencePiece model {path!r} does not exist")
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor()
    try:
        sp.Load(path)
    except Exception as exc:  # sentencepiece raises OSError/RuntimeError with a C++ message
        raise TokenizerError(f"cannot load SentencePiece model {path!r} ({exc}); the file is damaged or not a .model") from exc
    n = sp.GetPieceSize()
    tokens = [sp.IdToPiece(i) for i in range(n)]
    scores = [sp.GetScore(i) for i in range(n)]
    types = []
    for i in range(n):
        if sp.IsUnknown(i):
            types.append(UNKNOWN)
        elif sp.IsControl(i):
            types.append(CONTROL)
        elif sp.IsByte(i):
            types.append(BYTE)
        elif sp.IsUnused(i):
            types.append(UNUSED)
        else:
            types.append(NORMAL)

    model_type, name, charsmap, add_dummy_prefix, remove_ws = "unigram", "nmt_nfkc", b"", True, True
    user_defined: set[int] = set()
    piece_index = 0
    for number, _, value in _fields(sp.serialized_model_proto()):
        if number == 1:  # pieces: find user-defined ones (type 4), which the API does not flag
            for sub_number, _, sub_value in _fields(value):
                if sub_number == 3 and sub_value == USER_DEFINED:
                    user_defined.add(piece_index)
            piece_index += 1
        elif number == 2:  # TrainerSpec
            for sub_number, _, sub_value in _fields(value):
                if sub_number == 3:
                    model_type = _MODEL_TYPES.get(sub_value, "unigram")
        elif number == 3:  # NormalizerSpec
            for sub_number, _, sub_value in _fields(value):
                if sub_number == 1:
                    name = sub_value.decode("utf-8")
                elif sub_number == 2:
                    charsmap = bytes(sub_value)
                elif sub_number == 3:
                    add_dummy_prefix = bool(sub_value)
                elif sub_number == 4:
                    remove_ws = bool(sub_value)
    for i in user_defined:
        types[i] = USER_DEFINED
    if model_type not in ("bpe", "unigram"):
        raise TokenizerError(f"SentencePiece model type {model_type!r} is not supported (only bpe and unigram)")

    def opt(value):
        return value if value >= 0 else None

    vocab = Vocab(
        model="llama", tokens=tokens, token_types=types, scores=scores, add_space_prefix=add_dummy_prefix,
        sp_model_type=model_type, unk_id=opt(sp.unk_id()),
        precompiled_charsmap=charsmap if name != "identity" else b"", remove_extra_whitespaces=remove_ws,
    )
    return SentencePieceModel(
        vocab=vocab, bos_id=opt(sp.bos_id()), eos_id=opt(sp.eos_id()), pad_id=opt(sp.pad_id()), unk_id=opt(sp.unk_id()),
    )

