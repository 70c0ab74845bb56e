"""Load the tokenizer files of a Hugging Face model directory.

tokenizer.json (the `tokenizers` format) when present, else a SentencePiece tokenizer.model;
tokenizer_config.json for added tokens, named special tokens, add_bos/add_eos and the chat
template (a chat_template.jinja file beside it wins, as in transformers); special_tokens_map.json
as a fallback for the named tokens; generation_config.json for the extra end-of-sequence ids.
"""
from __future__ import annotations

import os

from oci_engine.errors import TokenizerError


def load_hf_dir(cls, path: str, chat_template: str | None = None):
    from tokenizers import AddedToken
    from tokenizers import Tokenizer as Backend

    from oci_engine.tokenizer import read_json, special_token_content

    config = read_json(os.path.join(path, "tokenizer_config.json"))
    specials_map = read_json(os.path.join(path, "special_tokens_map.json"))
    tokenizer_json = os.path.join(path, "tokenizer.json")
    sp_model = os.path.join(path, "tokenizer.model")
    default_add_bos = None
    if os.path.isfile(tokenizer_json):
        try:
            backend = Backend.from_file(tokenizer_json)
        except Exception as exc:  # tokenizers raises a bare Exception with serde's message
            raise TokenizerError(f"cannot load {tokenizer_json} ({exc}); the file is damaged or from a newer "
                                 "tokenizers version: upgrade tokenizers or restore the file") from exc
    elif os.path.isfile(sp_model):
        from oci_engine.sentencepiece_model import load_sentencepiece
        from oci_engine.vocab_builders import build_tokenizer

        spm = load_sentencepiece(sp_model)
        backend = build_tokenizer(spm.vocab)
        # Llama-family SentencePiece tokenizers put BOS in front unless the config says otherwise.
        default_add_bos = spm.bos_id is not None
        for key, piece_id in (("bos_token", spm.bos_id), ("eos_token", spm.eos_id), ("unk_token", spm.unk_id),
                              ("pad_token", spm.pad_id)):
            if piece_id is not None:
                specials_map.setdefault(key, spm.vocab.tokens[piece_id])
    elif os.path.isfile(os.path.join(path, "vocab.json")) and os.path.isfile(os.path.join(path, "merges.txt")):
        backend = _byte_level_files(path, config.get("tokenizer_class") or "")
    else:
        raise TokenizerError(f"{path} has no tokenizer.json, tokenizer.model or vocab.json + merges.txt; copy the "
                             "model's tokenizer files into the directory")

    # Tokens listed only in tokenizer_config.json (common for SentencePiece directories).
    decoder = config.get("added_tokens_decoder") or {}
    have = {a.content for a in backend.get_added_tokens_decoder().values()}
    for token_id, spec in sorted(decoder.items(), key=lambda kv: int(kv[0])):
        content = spec.get("content")
        if content is None or content in have:
            continue
        if backend.token_to_id(content) not in (None, int(token_id)):
            raise TokenizerError(f"tokenizer_config.json gives {content!r} id {token_id} but the vocabulary has it at "
                                 f"{backend.token_to_id(content)}; the files come from different models")
        token = AddedToken(content, special=bool(spec.get("special", False)), normalized=bool(spec.get("normalized", False)),
                           lstrip=bool(spec.get("lstrip", False)), rstrip=bool(spec.get("rstrip", False)),
                           single_word=bool(spec.get("single_word", False)))
        (backend.add_special_tokens if token.special else backend.add_tokens)([token])
        if backend.token_to_id(content) != int(token_id):
            raise TokenizerError(f"tokenizer_config.json places added token {content!r} at id {token_id}, but the "
                                 f"vocabulary continues at {backend.token_to_id(content)}; the files do not match")

    def named(key):
        value = config.get(key, specials_map.get(key))
        return special_token_content(value)

    template = chat_template
    jinja_file = os.path.join(path, "chat_template.jinja")
    if template is None and os.path.isfile(jinja_file):
        with open(jinja_file, encoding="utf-8") as f:
            template = f.read()
    if template is None:
        template = config.get("chat_template") or read_json(os.path.join(path, "chat_template.json")).get("chat_template")

    generation = read_json(os.path.join(path, "generation_config.json"))
    eos = generation.get("eos_token_id")
    extra_eos = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))

    # tokenizer.json's own post-processor decides what encode() adds, as in transformers 5; the
    # config's add_bos_token / add_eos_token apply where there is none.
    add_bos = add_eos = None
    if backend.post_processor is None:
        add_bos, add_eos = config.get("add_bos_token", default_add_bos), config.get("add_eos_token")
    return cls(
        backend,
        bos_token=named("bos_token"),
        eos_token=named("eos_token"),
        unk_token=named("unk_token"),
        pad_token=named("pad_token"),
        add_bos_token=add_bos,
        add_eos_token=add_eos,
        chat_template=template,
        extra_eos_ids=extra_eos,
        name=os.path.basename(os.path.normpath(path)),
    )


def _byte_level_files(path: str, tokenizer_class: str):
    """GPT-2 style vocab.json + merges.txt (byte-level BPE), as older checkpoints ship them."""
    from oci_engine.tokenizer import read_json
    from oci_engine.vocab_builders import Vocab, build_tokenizer

    table = read_json(os.path.join(path, "vocab.json"))
    tokens = [None] * len(table)
    for token, index in table.items():
        if not 0 <= index < len(tokens) or tokens[index] is not None:
            raise TokenizerError(f"vocab.json in {path} does not number its tokens 0..{len(table) - 1}; the file is damaged")
        tokens[index] = token
    with open(os.path.join(path, "merges.txt"), encoding="utf-8") as f:
        merges = [line.rstrip("\n") for line in f if line.strip() and not line.startswith("#version")]
    pre = "qwen2" if tokenizer_class.startswith("Qwen2") else "gpt2"
    return build_tokenizer(Vocab(model="gpt2", tokens=tokens, merges=merges, pre=pre))
