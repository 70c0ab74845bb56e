"""The tokenizer of a model: text <-> token ids, special tokens, and the chat template.

`Tokenizer.from_pretrained(path)` takes a .gguf file (the vocabulary in its metadata) or a Hugging
Face model directory (tokenizer.json, or a SentencePiece tokenizer.model, plus
tokenizer_config.json and generation_config.json). Either way the work is done by a
`tokenizers.Tokenizer` built to behave as transformers' tokenizer for the same files.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping

from oci_engine.errors import ModelNotFoundError, TokenizerError


class Tokenizer:
    """Wraps a `tokenizers.Tokenizer` (`backend`) with the model's named special tokens, its
    BOS/EOS rules, end-of-sequence ids and chat template. Build it with `from_pretrained`."""

    def __init__(
        self,
        backend,
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        unk_token: str | None = None,
        pad_token: str | None = None,
        add_bos_token: bool | None = None,
        add_eos_token: bool | None = None,
        chat_template: str | dict | list | None = None,
        extra_eos_ids: Iterable[int] = (),
        name: str = "",
    ):
        from tokenizers import AddedToken

        self.backend = backend
        self.name = name
        self.chat_template = chat_template
        self._specials = {"bos_token": bos_token, "eos_token": eos_token, "unk_token": unk_token, "pad_token": pad_token}
        # Named special tokens must stay whole in text and be skippable in decode, as in transformers.
        named = [t for t in dict.fromkeys(self._specials.values()) if t is not None]
        added = {a.content for a in backend.get_added_tokens_decoder().values()}
        to_add = [AddedToken(t, special=True, normalized=False) for t in named if t not in added]
        if to_add:
            backend.add_special_tokens(to_add)
        if add_bos_token is not None or add_eos_token is not None or backend.post_processor is None:
            self._set_post_processor(bool(add_bos_token), bool(add_eos_token))
        self.add_bos_token = bool(add_bos_token) if add_bos_token is not None else self._template_adds(self.bos_token_id)
        self.add_eos_token = bool(add_eos_token) if add_eos_token is not None else False
        self._special_ids = frozenset(i for i, a in backend.get_added_tokens_decoder().items() if a.special)
        eos = {self.eos_token_id} if self.eos_token_id is not None else set()
        self.eos_token_ids: set[int] = eos | {int(i) for i in extra_eos_ids}
        self._piece_bytes = None

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs) -> Tokenizer:
        """A .gguf file, or a Hugging Face model directory."""
        path = os.fspath(path)
        if os.path.basename(path) in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json"):
            path = os.path.dirname(path) or "."  # one of a directory's files: load the directory
        if os.path.isdir(path):
            from oci_engine.hf_tokenizer_files import load_hf_dir

            return load_hf_dir(cls, path, **kwargs)
        if os.path.isfile(path):
            return cls.from_gguf(path, **kwargs)
        raise ModelNotFoundError(
            f"no tokenizer at {path!r}: expected a .gguf file or a Hugging Face model directory "
            "(with tokenizer.json or tokenizer.model)"
        )

    @classmethod
    def from_gguf(cls, source, chat_template: str | None = None) -> Tokenizer:
        """`source`: a .gguf path, an open `gguf.GGUFReader`, or a dict of its tokenizer.* metadata."""
        from oci_engine.gguf_vocab import gguf_tokenizer_data
        from oci_engine.vocab_builders import build_tokenizer

        data = gguf_tokenizer_data(source)
        backend = build_tokenizer(data.vocab)
        tokens = data.vocab.tokens

        def tok(i):
            return tokens[i] if i is not None else None

        return cls(
            backend,
            bos_token=tok(data.bos_token_id),
            eos_token=tok(data.eos_token_id),
            unk_token=tok(data.unk_token_id),
            pad_token=tok(data.pad_token_id),
            add_bos_token=data.add_bos_token,
            add_eos_token=data.add_eos_token,
            chat_template=chat_template or data.chat_template,
            extra_eos_ids=data.extra_eos_ids,
            name=os.path.basename(source) if isinstance(source, (str, os.PathLike)) else "gguf",
        )

    def _set_post_processor(self, add_bos: bool, add_eos: bool) -> None:
        from tokenizers.processors import TemplateProcessing

        bos, eos = self._specials["bos_token"], self._specials["eos_token"]
        add_bos, add_eos = add_bos and bos is not None, add_eos and eos is not None
        single = ([f"{bos}:0"] if add_bos else []) + ["$A:0"] + ([f"{eos}:0"] if add_eos else [])
        pair = single + ([f"{bos}:1"] if add_bos else []) + ["$B:1"] + ([f"{eos}:1"] if add_eos else [])
        specials = [(t, self.backend.token_to_id(t)) for t, on in ((bos, add_bos), (eos, add_eos)) if on]
        self.backend.post_processor = TemplateProcessing(single=single, pair=pair, special_tokens=specials)

    def _template_adds(self, token_id) -> bool:
        return token_id is not None and self.backend.encode("a", add_special_tokens=True).ids[:1] == [token_id]

    # ---- text <-> ids -------------------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if not isinstance(text, str):
            raise TokenizerError(f"encode() takes a str, got {type(text).__name__}")
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: list[str], add_special_tokens: bool = True) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(list(texts), add_special_tokens=add_special_tokens)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        ids = [int(i) for i in ids]
        if any(i < 0 for i in ids):
            raise TokenizerError(f"token ids must be non-negative, got {min(ids)}")
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def convert_ids_to_tokens(self, ids: int | Iterable[int]):
        if isinstance(ids, int):
            return self.backend.id_to_token(ids)
        return [self.backend.id_to_token(int(i)) for i in ids]

    def convert_tokens_to_ids(self, tokens: str | Iterable[str]):
        if isinstance(tokens, str):
            return self.backend.token_to_id(tokens)
        return [self.backend.token_to_id(t) for t in tokens]

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    # ---- special tokens -----------------------------------------------------------------------

    def _id(self, key: str) -> int | None:
        token = self._specials[key]
        return None if token is None else self.backend.token_to_id(token)

    bos_token = property(lambda self: self._specials["bos_token"])
    eos_token = property(lambda self: self._specials["eos_token"])
    unk_token = property(lambda self: self._specials["unk_token"])
    pad_token = property(lambda self: self._specials["pad_token"])
    bos_token_id = property(lambda self: self._id("bos_token"))
    eos_token_id = property(lambda self: self._id("eos_token"))
    unk_token_id = property(lambda self: self._id("unk_token"))
    pad_token_id = property(lambda self: self._id("pad_token"))

    @property
    def all_special_ids(self) -> list[int]:
        return sorted(self._special_ids)

    @property
    def all_special_tokens(self) -> list[str]:
        return [self.backend.id_to_token(i) for i in self.all_special_ids]

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special_ids

    @property
    def special_tokens_map(self) -> dict[str, str]:
        return {k: v for k, v in self._specials.items() if v is not None}

    # ---- chat ---------------------------------------------------------------------------------

    def apply_chat_template(
        self,
        messages,
        add_generation_prompt: bool = True,
        tokenize: bool = False,
        chat_template: str | None = None,
        tools=None,
        documents=None,
        continue_final_message: bool = False,
        **extra,
    ) -> str | list[int]:
        """Render `messages` with the model's template (ChatML, with a warning, if it has none).
        With tokenize=True the ids come without an added BOS: templates write their own."""
        from oci_engine.chat_template import render_chat, select_template

        template = chat_template or select_template(self.chat_template, tools)
        text = render_chat(
            template, messages, add_generation_prompt=add_generation_prompt, continue_final_message=continue_final_message,
            tools=tools, documents=documents, special_tokens=self.special_tokens_map, **extra,
        )
        return self.encode(text, add_special_tokens=False) if tokenize else text

    # ---- streaming ----------------------------------------------------------------------------

    def piece_bytes(self):
        """Per-id decoding table for `IncrementalDetokenizer` (built once, on first use)."""
        if self._piece_bytes is None:
            from oci_engine.detokenizer import PieceTable

            self._piece_bytes = PieceTable.build(self)
        return self._piece_bytes

    def detokenizer(self, skip_special_tokens: bool = True):
        from oci_engine.detokenizer import IncrementalDetokenizer

        return IncrementalDetokenizer(self, skip_special_tokens=skip_special_tokens)

    def __repr__(self) -> str:
        return f"Tokenizer({self.name!r}, vocab_size={self.vocab_size}, bos={self.bos_token!r}, eos={self.eos_token!r})"


def special_token_content(value) -> str | None:
    """tokenizer_config.json writes a special token as a string or as a serialized AddedToken."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping) and "content" in value:
        return value["content"]
    raise TokenizerError(f"cannot read special token {value!r} from tokenizer_config.json")


def read_json(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TokenizerError(f"{path} is not valid JSON ({exc}); restore the file from the model's source") from exc
