"""Render chat templates the way transformers' `apply_chat_template` does.

Templates come from model files, so they are untrusted code: they run in jinja2's immutable
sandbox. The environment matches transformers' (trim_blocks, lstrip_blocks, loopcontrols,
`raise_exception`, `strftime_now`, a `tojson` that does not HTML-escape), so a template renders
the same text here as there.
"""
from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

from oci_engine.errors import TokenizerError

# Used, with a warning, for a model that ships no template (base models, bare GGUF files).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CONTINUE_TAG = "\x00OCI_CONTINUE_FINAL_MESSAGE\x00"


@lru_cache(maxsize=32)
def compile_template(source: str):
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    try:
        return env.from_string(source)
    except jinja2.exceptions.TemplateSyntaxError as exc:
        raise TokenizerError(f"the model's chat template does not parse (line {exc.lineno}: {exc.message}); "
                             "pass chat_template=... with a corrected template") from exc


def select_template(template: str | Mapping | list | None, tools=None, warn: bool = True) -> str:
    """Pick the template to use: a named set picks 'tool_use' when tools are given, else 'default'."""
    if isinstance(template, list):  # tokenizer_config.json may list [{"name": ..., "template": ...}]
        template = {t["name"]: t["template"] for t in template}
    if isinstance(template, Mapping):
        if tools and "tool_use" in template:
            return template["tool_use"]
        if "default" in template:
            return template["default"]
        raise TokenizerError(f"the model has named chat templates {sorted(template)} but no 'default'; "
                             "pass chat_template=<name's template> explicitly")
    if template:
        return template
    if warn:
        warnings.warn("the model has no chat template; using ChatML (<|im_start|>role ... <|im_end|>). "
                      "Pass chat_template=... if the model expects another format.", stacklevel=3)
    return CHATML_TEMPLATE


def _plain(value: Any) -> Any:
    """Plain JSON-like data only: the sandbox does not know which methods of rich objects are unsafe."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):
        return _plain(value.model_dump())
    return f"<{type(value).__name__}>"


def _messages(messages) -> list[dict]:
    if not isinstance(messages, (list, tuple)) or not messages:
        raise TokenizerError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    out = []
    for m in _plain(list(messages)):
        if not isinstance(m, dict):
            raise TokenizerError(f"chat message {m!r} is not a dict; use {{'role': ..., 'content': ...}}")
        # APIs send content=None / tool_calls=None; templates handle a missing key, not a None.
        m = {k: v for k, v in m.items() if v is not None}
        if isinstance(m.get("content"), list):
            m["content"] = _text_parts(m["content"])
        out.append(m)
    return out


def _text_parts(parts: list) -> str:
    """OpenAI-style content parts, as chat clients send them, joined for the text-only templates of
    code models (which concatenate `message['content']` as a string), as vLLM does."""
    texts = []
    for part in parts:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        else:
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise TokenizerError(f"message content part of type {kind!r} is not supported: this model reads text only")
    return "\n".join(texts)


def render_chat(
    template: str,
    messages,
    *,
    add_generation_prompt: bool = False,
    continue_final_message: bool = False,
    tools=None,
    documents=None,
    special_tokens: Mapping[str, str | None] | None = None,
    **extra,
) -> str:
    """Render one conversation. `special_tokens` (bos_token, eos_token, ...) are template variables
    that `extra` may override, as in transformers."""
    import jinja2

    chat = _messages(messages)
    if continue_final_message:
        if add_generation_prompt:
            raise TokenizerError("continue_final_message and add_generation_prompt exclude each other: "
                                 "continue the last message, or open a new assistant turn")
        if not isinstance(chat[-1].get("content"), str):
            raise TokenizerError("continue_final_message needs a final message with text content")
        chat[-1]["content"] += _CONTINUE_TAG
    if tools is not None and not all(isinstance(t, Mapping) for t in tools):
        raise TokenizerError("tools must be JSON-schema dicts")
    if documents is not None and not all(isinstance(d, Mapping) for d in documents):
        raise TokenizerError("documents must be dicts with 'title' and 'text' keys")
    variables = {**{k: v for k, v in (special_tokens or {}).items()}, **_plain(extra)}
    try:
        text = compile_template(template).render(
            messages=chat, tools=_plain(tools), documents=_plain(documents),
            add_generation_prompt=add_generation_prompt, **variables,
        )
    except jinja2.exceptions.TemplateError as exc:
        raise TokenizerError(f"the chat template rejected these messages: {exc}") from exc
    except (TypeError, KeyError, AttributeError, IndexError, ValueError) as exc:
        raise TokenizerError(f"the chat template failed on these messages ({type(exc).__name__}: {exc}); "
                             "check the roles and fields the template expects") from exc
    if continue_final_message:
        cut = text.rfind(_CONTINUE_TAG)
        if cut < 0:
            raise TokenizerError("continue_final_message: the template dropped the final message's text")
        text = text[:cut]
    return text
