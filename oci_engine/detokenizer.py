"""Streaming detokenization: feed token ids one at a time, get text deltas.

The deltas of a stream concatenate to exactly `tokenizer.decode(ids)`, and no delta ever ends in
half a character: bytes of an incomplete UTF-8 sequence are held until the sequence completes
(or turns out invalid, or the stream is flushed). Each token costs O(its length), not a re-decode.

To reproduce the backend's decoder token by token, `PieceTable` reads which decoder the
tokenizer has and keeps, per id, the bytes or text that id contributes:
- byte-level BPE (ByteLevel decoder): each character of a token stands for one byte;
- SentencePiece (Replace "▁"->" ", ByteFallback, Fuse, Strip; or Metaspace): "▁" is a space,
  runs of <0xNN> pieces are decoded together (all-or-nothing, as the ByteFallback decoder does),
  and one leading space of the text is dropped;
- any other decoder: the text is re-decoded as a whole on each token (slower, still exact).
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@dataclass(slots=True)
class PieceTable:
    kind: str  # "byte_level" | "sentencepiece" | "generic"
    pieces: list  # per id: bytes (byte_level), the piece or a byte value (sentencepiece), None: no token
    special: frozenset
    strip: str | None = None  # sentencepiece: "fused" (Strip decoder) or "first_token" (Metaspace)

    @classmethod
    def build(cls, tokenizer) -> PieceTable:
        backend = tokenizer.backend
        special = frozenset(tokenizer.all_special_ids)
        size = backend.get_vocab_size(with_added_tokens=True)
        tokens = [None] * size
        for token, i in backend.get_vocab(with_added_tokens=True).items():
            if i < size:
                tokens[i] = token
        for i, added in backend.get_added_tokens_decoder().items():
            if i < size:
                tokens[i] = added.content
        decoder = json.loads(backend.decoder.__getstate__()) if backend.decoder is not None else None
        kind, strip, byte_fallback = _decoder_kind(decoder)
        if kind == "byte_level":
            pieces = [None if t is None else _byte_level_bytes(t) for t in tokens]
        elif kind == "sentencepiece":
            pieces = []
            for t in tokens:
                m = _BYTE_PIECE.match(t) if (t is not None and byte_fallback) else None
                pieces.append(int(m.group(1), 16) if m else t)
        else:
            pieces = []
        return cls(kind, pieces, special, strip)


def _byte_level_bytes(token: str) -> bytes:
    """The bytes a token spelled in the byte alphabet stands for. A character outside the alphabet
    stands for its own UTF-8 bytes, as in the ByteLevel decoder."""
    fast, to_byte = _byte_maps()
    try:
        return token.translate(fast).encode("latin-1")
    except UnicodeEncodeError:  # a character beyond U+00FF outside the alphabet (added tokens)
        return b"".join(bytes([to_byte[c]]) if c in to_byte else c.encode("utf-8") for c in token)


@lru_cache(maxsize=1)
def _byte_maps() -> tuple[dict[int, str], dict[str, int]]:
    from oci_engine.vocab_builders import byte_alphabet

    to_byte = {c: b for b, c in byte_alphabet().items()}
    # str.translate to Latin-1 characters, one per byte; the non-alphabet characters U+0080..U+00FF
    # become their two UTF-8 bytes (ASCII ones already are their own byte).
    fast: dict[int, str] = {ord(c): chr(b) for c, b in to_byte.items()}
    for code in range(0x80, 0x100):
        if chr(code) not in to_byte:
            fast[code] = chr(code).encode("utf-8").decode("latin-1")
    return fast, to_byte


def _decoder_kind(decoder: dict | None) -> tuple[str, str | None, bool]:
    if decoder is None:
        return "generic", None, False
    if decoder.get("type") == "ByteLevel":
        return "byte_level", None, False
    if decoder.get("type") == "Metaspace" and decoder.get("replacement") == "\u2581":
        strip = None if decoder.get("prepend_scheme") == "never" else "first_token"
        return "sentencepiece", strip, False
    if decoder.get("type") == "Sequence":
        steps = decoder.get("decoders", [])
        names = [s.get("type") for s in steps]
        replace_ok = bool(steps) and names[0] == "Replace" and steps[0].get("content") == " " and \
            steps[0].get("pattern", {}).get("String") == "\u2581"
        rest = names[1:]
        strip = None
        if rest and rest[-1] == "Strip":
            s = steps[-1]
            if s.get("content") != " " or s.get("start") != 1 or s.get("stop") != 0:
                return "generic", None, False
            strip, rest = "fused", rest[:-1]
        if replace_ok and rest in (["ByteFallback", "Fuse"], ["Fuse"]):
            return "sentencepiece", strip, "ByteFallback" in rest
    return "generic", None, False


class IncrementalDetokenizer:
    """Turns a stream of generated token ids into text deltas.

    `prompt_ids`: the prompt the stream continues. For SentencePiece models the first generated
    token's leading space is then kept (the text continues the prompt), as vLLM does; without a
    prompt the deltas join to exactly `tokenizer.decode(ids, skip_special_tokens)`."""

    def __init__(self, tokenizer, prompt_ids: Iterable[int] | None = None, skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.table = tokenizer.piece_bytes()
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self.text = ""  # everything emitted so far
        self._pending = b""  # byte_level: an incomplete UTF-8 tail
        self._group: list[int] = []  # sentencepiece: an open run of <0xNN> byte pieces
        self._at_start = True
        if prompt_ids:
            tail = list(prompt_ids)[-8:]
            self._at_start = not tokenizer.decode(tail, skip_special_tokens=skip_special_tokens)

    def add(self, token_id: int) -> str:
        """Feed one token; returns the text it completes ('' while a character is still partial)."""
        token_id = int(token_id)
        self.ids.append(token_id)
        kind = self.table.kind
        if kind == "generic":
            delta = self._generic(final=False)
        elif self._skipped(token_id):
            return ""
        elif kind == "byte_level":
            delta = self._byte_level(self.table.pieces[token_id])
        else:
            delta = self._sentencepiece(self.table.pieces[token_id])
        self.text += delta
        return delta

    def add_many(self, token_ids: Iterable[int]) -> str:
        return "".join(self.add(t) for t in token_ids)

    def flush(self) -> str:
        """End of stream: returns whatever was held back (partial characters become U+FFFD)."""
        if self.table.kind == "generic":
            delta = self._generic(final=True)
        elif self.table.kind == "byte_level":
            delta, self._pending = self._pending.decode("utf-8", "replace"), b""
        else:
            delta = self._strip(self._close_group())
        self.text += delta
        return delta

    def _skipped(self, token_id: int) -> bool:
        pieces = self.table.pieces
        if token_id < 0 or token_id >= len(pieces) or pieces[token_id] is None:
            return True  # the backend ignores ids it does not know
        return self.skip_special_tokens and token_id in self.table.special

    def _byte_level(self, piece: bytes) -> str:
        buf = self._pending + piece
        cut = _complete_prefix(buf)
        self._pending = buf[cut:]
        return buf[:cut].decode("utf-8", "replace")

    def _sentencepiece(self, piece) -> str:
        if isinstance(piece, int):
            self._group.append(piece)
            return ""
        text = self._close_group()
        if self.table.strip == "first_token" and self._at_start:
            # The Metaspace decoder drops every "▁" of the first token, not only a leading one.
            self._at_start = False
            return text + piece.replace("\u2581", "")
        return self._strip(text + piece.replace("\u2581", " "))

    def _close_group(self) -> str:
        if not self._group:
            return ""
        raw, self._group = bytes(self._group), []
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = "\ufffd" * len(raw)  # ByteFallback's rule: an invalid run becomes one U+FFFD per byte
        if self.table.strip == "first_token" and self._at_start:
            self._at_start = False
        return text

    def _strip(self, text: str) -> str:
        if self.table.strip == "fused" and self._at_start and text:
            self._at_start = False
            return text[1:] if text.startswith(" ") else text
        return text

    def _generic(self, final: bool) -> str:
        full = self.tokenizer.decode(self.ids, skip_special_tokens=self.skip_special_tokens)
        if not full.startswith(self.text):
            return ""  # the decoder rewrote earlier text; nothing can be taken back from a stream
        new = full[len(self.text):]
        if not final:
            while new.endswith("\ufffd"):
                new = new[:-1]
        return new


def _complete_prefix(buf: bytes) -> int:
    """Length of the longest prefix of `buf` that can be decoded now: everything except a trailing
    sequence that is a valid but unfinished UTF-8 character (which the next bytes may complete)."""
    n = len(buf)
    for back in range(1, min(4, n + 1)):
        b = buf[n - back]
        if 0x80 <= b <= 0xBF:  # a continuation byte: look further back for its lead
            continue
        need = 2 if 0xC2 <= b <= 0xDF else 3 if 0xE0 <= b <= 0xEF else 4 if 0xF0 <= b <= 0xF4 else 0
        if need <= back:
            return n  # complete, or not a lead byte at all: decode everything
        if back >= 2:
            lo, hi = {0xE0: (0xA0, 0xBF), 0xED: (0x80, 0x9F), 0xF0: (0x90, 0xBF), 0xF4: (0x80, 0x8F)}.get(b, (0x80, 0xBF))
            if not lo <= buf[n - back + 1] <= hi:
                return n  # can never complete: it decodes to U+FFFD now
        return n - back
    return n
