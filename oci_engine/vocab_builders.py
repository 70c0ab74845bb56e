"""Build a `tokenizers.Tokenizer` from a bare vocabulary (GGUF metadata or a SentencePiece model).

Two families:
- byte-level BPE (GPT-2 style: SmolLM2, DeepSeek-Coder, Qwen2, Llama-3): tokens are spelled in
  GPT-2's printable byte alphabet, merges are given, and the text is first split by a regex that
  depends on how the vocabulary was trained (GGUF `tokenizer.ggml.pre`);
- SentencePiece (Llama, CodeLlama): pieces with scores, "▁" for a space, <0xNN> byte pieces.
  BPE models become a `tokenizers` BPE whose merges are recovered from the scores; unigram models
  become a `tokenizers` Unigram.

Token types use the numbering GGUF and SentencePiece share.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from oci_engine.errors import TokenizerError

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPACE_MARK = "\u2581"

# Pre-tokenizer regexes by GGUF `tokenizer.ggml.pre`: each name maps to the list of patterns
# llama.cpp applies one after another (every pattern splits the pieces the previous one left).
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_DEEPSEEK_CODER = [
    r"[\r\n]",
    r"\s?\p{L}+",
    r"\s?\p{P}+",
    "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+",
    r"\p{N}",
]
PRE_TOKENIZER_SPLITS: dict[str, list[str]] = {
    "default": [_GPT2],
    "gpt2": [_GPT2],
    "gpt-2": [_GPT2],
    "mpt": [_GPT2],
    "olmo": [_GPT2],
    # StarCoder-family vocabularies (SmolLM included) were trained with every digit on its own.
    "smollm": [r"\p{N}", _GPT2],
    "starcoder": [r"\p{N}", _GPT2],
    "refact": [r"\p{N}", _GPT2],
    "codeshell": [r"\p{N}", _GPT2],
    "command-r": [r"\p{N}", _GPT2],
    "exaone": [r"\p{N}", _GPT2],
    "minerva-7b": [r"\p{N}", _GPT2],
    "jais": [_GPT2],
    "llama-bpe": [_LLAMA3],
    "llama3": [_LLAMA3],
    "llama-v3": [_LLAMA3],
    "smaug-bpe": [_LLAMA3],
    "dbrx": [_LLAMA3],
    "qwen2": [_QWEN2],
    "deepseek-r1-qwen": [_QWEN2],
    "deepseek-coder": _DEEPSEEK_CODER,
}


@dataclass(slots=True)
class Vocab:
    """A vocabulary as GGUF stores it: tokens by id, their types, and the model's own data."""

    model: str  # "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    tokens: list[str]
    token_types: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    merges: list[str] = field(default_factory=list)
    pre: str | None = None
    add_space_prefix: bool = True
    sp_model_type: str = "bpe"  # SentencePiece only: "bpe" or "unigram"
    unk_id: int | None = None
    # SentencePiece normalizer spec (a tokenizer.model has one; GGUF "llama" vocabularies do not).
    precompiled_charsmap: bytes = b""
    remove_extra_whitespaces: bool = False


@lru_cache(maxsize=1)
def byte_alphabet() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character (printable Latin-1 maps to itself)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    mapping = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def build_tokenizer(vocab: Vocab) -> Tokenizer:
    if not vocab.tokens:
        raise TokenizerError("the vocabulary is empty: the model file carries no tokens; re-export it with its tokenizer")
    if vocab.model == "gpt2":
        return _byte_level_bpe(vocab)
    if vocab.model == "llama":
        return _sentencepiece(vocab)
    raise TokenizerError(
        f"tokenizer model {vocab.model!r} is not supported (supported: 'gpt2' byte-level BPE, 'llama' SentencePiece); "
        "use a Hugging Face directory with tokenizer.json instead"
    )


def _types(vocab: Vocab) -> list[int]:
    return vocab.token_types if len(vocab.token_types) == len(vocab.tokens) else [NORMAL] * len(vocab.tokens)


def _byte_level_bpe(vocab: Vocab) -> Tokenizer:
    alphabet = set(byte_alphabet().values())
    spelling = byte_alphabet()
    types = _types(vocab)
    table: dict[str, int] = {}
    for index, (token, kind) in enumerate(zip(vocab.tokens, types)):
        # Control and user-defined tokens are matched by their text (DeepSeek's
        # "<｜begin▁of▁sentence｜>" is written in plain Unicode), so they keep that spelling as key.
        # Any other token outside the byte alphabet is plain text for bytes the BPE model sees.
        if kind in (CONTROL, USER_DEFINED) or set(token) <= alphabet:
            key = token
        else:
            key = "".join(spelling[b] for b in token.encode("utf-8"))
        table.setdefault(key, index)
    merges = []
    for line in vocab.merges:
        left, sep, right = line.partition(" ")
        if not sep:
            raise TokenizerError(f"malformed BPE merge {line!r} in the vocabulary (expected 'left right')")
        merges.append((left, right))
    tok = Tokenizer(models.BPE(vocab=table, merges=merges, fuse_unk=False, byte_fallback=False))
    splits = PRE_TOKENIZER_SPLITS.get(vocab.pre or "default")
    if splits is None:
        import warnings

        warnings.warn(
            f"unknown pre-tokenizer {vocab.pre!r} in the GGUF; splitting text as GPT-2 does, which may tokenize "
            "some text differently from the original model",
            stacklevel=3,
        )
        splits = [_GPT2]
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(p), behavior="isolated") for p in splits]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tok.decoder = decoders.ByteLevel()
    # As llama.cpp does (transformers' GGUF loader instead drops control tokens written outside
    # the byte alphabet, so it cannot find DeepSeek's BOS in a rendered chat template).
    _add_typed_tokens(tok, vocab.tokens, types, lambda t: True)
    return tok


def _sentencepiece(vocab: Vocab) -> Tokenizer:
    types = _types(vocab)
    tokens = vocab.tokens
    has_bytes = any(t == BYTE for t in types)
    unk_id = vocab.unk_id if vocab.unk_id is not None else next((i for i, t in enumerate(types) if t == UNKNOWN), None)
    if vocab.sp_model_type == "unigram":
        scores = vocab.scores if len(vocab.scores) == len(tokens) else [0.0] * len(tokens)
        model = models.Unigram(list(zip(tokens, scores)), unk_id, has_bytes)
    else:
        table = {}
        for index, token in enumerate(tokens):
            table.setdefault(token, index)
        unk = tokens[unk_id] if unk_id is not None else None
        model = models.BPE(
            vocab=table, merges=_merges_from_scores(vocab, table, types), unk_token=unk, fuse_unk=True,
            byte_fallback=has_bytes,
        )
    tok = Tokenizer(model)
    tok.normalizer = _sentencepiece_normalizer(vocab)
    steps = [decoders.Replace(SPACE_MARK, " "), decoders.ByteFallback(), decoders.Fuse()]
    if vocab.add_space_prefix:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    tok.decoder = decoders.Sequence(steps)
    _add_typed_tokens(tok, tokens, types, lambda t: True, unknown_is_special=True)
    return tok


def _merges_from_scores(vocab: Vocab, table: dict[str, int], types: list[int]) -> list[tuple[str, str]]:
    """SentencePiece BPE merges the adjacent pair whose joined piece scores highest; a `tokenizers`
    BPE merges the pair of lowest rank. Ranking every split of every normal piece by that piece's
    score (best first) makes the two agree."""
    scores = vocab.scores if len(vocab.scores) == len(vocab.tokens) else [-float(i) for i in range(len(vocab.tokens))]
    order = sorted(
        (i for i, t in enumerate(types) if t == NORMAL and len(vocab.tokens[i]) > 1), key=lambda i: (-scores[i], i)
    )
    merges = []
    for i in order:
        piece = vocab.tokens[i]
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in table and right in table:
                merges.append((left, right))
    return merges


def _add_typed_tokens(tok: Tokenizer, tokens, types, keep, unknown_is_special: bool = False) -> None:
    special_types = {CONTROL, UNKNOWN} if unknown_is_special else {CONTROL}
    special = [
        AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty in special_types and keep(t)
    ]
    user = [AddedToken(t, special=False, normalized=False) for t, ty in zip(tokens, types) if ty == USER_DEFINED and keep(t)]
    if special:
        tok.add_special_tokens(special)
    if user:
        tok.add_tokens(user)


def _sentencepiece_normalizer(vocab: Vocab):
    """SentencePiece's own order: character map, whitespace cleanup, the dummy-prefix space, then
    spaces become "▁". The prefix goes on every stretch of text between special tokens, including
    text that already starts with a space, as sentencepiece, llama.cpp and Llama's legacy
    tokenizer.json do. transformers 5 rebuilds Llama tokenizers with a Metaspace pre-tokenizer that
    skips the prefix when the text starts with a space, so "  x" gets one "▁" fewer there."""
    steps = []
    if vocab.precompiled_charsmap:
        steps.append(normalizers.Precompiled(vocab.precompiled_charsmap))
    if vocab.remove_extra_whitespaces:
        # Only U+0020 counts (other spaces were mapped to it already); Strip would also eat U+0085 etc.
        steps += [normalizers.Replace(Regex("^ +| +$"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
    if vocab.add_space_prefix:
        steps.append(normalizers.Prepend(SPACE_MARK))
    steps.append(normalizers.Replace(" ", SPACE_MARK))
    return normalizers.Sequence(steps)
