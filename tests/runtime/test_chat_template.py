"""Chat templates render exactly as transformers' apply_chat_template renders them, run sandboxed,
and fail with TokenizerError (not a jinja traceback) on bad templates or rejected messages."""
from __future__ import annotations

import datetime

import pytest

from oci_engine.errors import TokenizerError
from oci_engine.tokenizer import Tokenizer

LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)

# Block tags on their own lines: trim_blocks / lstrip_blocks decide the whitespace.
TOOLS = """{%- if tools %}
<tools>
{% for tool in tools %}
    {{ tool | tojson }}
{% endfor %}
</tools>
{% endif %}
{% for message in messages %}
    {% if message.tool_calls is defined %}
{{ message.role }} calls {{ message.tool_calls | tojson(indent=2) }}
    {% else %}
{{ message.role }}: {{ message.content }}
    {% endif %}
{% endfor %}
{% if documents %}{% for d in documents %}[{{ d.title }}] {{ d.text }}
{% endfor %}{% endif %}
{% if add_generation_prompt %}assistant:{% endif %}
{% if enable_thinking is defined and not enable_thinking %}<no-think>{% endif %}"""

CONTROL = """{% set ns = namespace(count=0, last='') %}
{% for m in messages %}
    {% if m.role == 'system' %}{% continue %}{% endif %}
    {% set ns.count = ns.count + 1 %}
    {% set ns.last = m.content | trim %}
    {% if loop.index > 4 %}{% break %}{% endif %}
{{ ns.count }}. {{ m['role'] | upper }} {{ m.content | length }} {{ m.get('name', 'anon') }}
{% endfor %}
last={{ ns.last }} {{ {'k': 'v'} | tojson }} {{ messages | map(attribute='role') | join(',') }}
{{ strftime_now('%Y') }}"""

MESSAGES = [
    {"role": "system", "content": "Answer in <b>HTML</b> & \"quotes\" — ünïcode 😀"},
    {"role": "user", "content": "  What is 2 & 3?  ", "name": "ana"},
    {"role": "assistant", "content": "5 <maybe>"},
    {"role": "user", "content": "日本語\n\nnewlines\ttabs"},
]
TOOL_LIST = [{"type": "function", "function": {"name": "run_python", "description": "Runs <code> & returns",
              "parameters": {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}}}]


@pytest.fixture(scope="module")
def backend():
    from tokenizers import Tokenizer as Backend, models, pre_tokenizers

    vocab = {c: i for i, c in enumerate(["<unk>", "<s>", "</s>", "a", "b"])}
    b = Backend(models.WordLevel(vocab, unk_token="<unk>"))
    b.pre_tokenizer = pre_tokenizers.Whitespace()
    return b


@pytest.fixture(scope="module")
def pair(backend):
    """(ours, transformers') over the same backend and special tokens."""
    from transformers import PreTrainedTokenizerFast

    ref = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    ours = Tokenizer(backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    return ours, ref


def _both(pair, template, messages, **kw):
    ours, ref = pair
    a = ours.apply_chat_template(messages, chat_template=template, **kw)
    b = ref.apply_chat_template(messages, chat_template=template, tokenize=False, **kw)
    return a, b


@pytest.mark.parametrize("template", [LLAMA2, TOOLS, CONTROL], ids=["llama2", "tools", "control"])
@pytest.mark.parametrize("gen", [True, False])
def test_matches_transformers(pair, template, gen):
    a, b = _both(pair, template, MESSAGES, add_generation_prompt=gen)
    assert a == b
    assert a  # a template that renders nothing would make this test vacuous


def test_tools_documents_and_extra_variables(pair):
    docs = [{"title": "README", "text": "Use <b>bold</b>"}]
    a, b = _both(pair, TOOLS, MESSAGES[1:2], tools=TOOL_LIST, documents=docs, add_generation_prompt=True,
                 enable_thinking=False)
    assert a == b
    assert '"description": "Runs <code> & returns"' in a  # tojson does not HTML-escape
    assert "[README] Use <b>bold</b>" in a and a.endswith("<no-think>")
    calls = [{"role": "assistant", "content": None,
              "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"x": "ü"}}}]}]
    a, b = _both(pair, TOOLS, calls, add_generation_prompt=False)
    assert a == b and '"x": "ü"' in a  # content=None is dropped, not rendered as "None"


def test_strftime_now(pair):
    a, _ = _both(pair, CONTROL, MESSAGES, add_generation_prompt=False)
    assert a.rstrip().endswith(str(datetime.date.today().year))


def test_raise_exception_becomes_tokenizer_error(pair):
    ours, _ = pair
    bad = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(TokenizerError, match="roles must alternate"):
        ours.apply_chat_template(bad, chat_template=LLAMA2)


@pytest.mark.parametrize("template", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{% set _ = messages.append({'role': 'x'}) %}",
    "{{ messages[0].update({'content': 'pwned'}) }}",
])
def test_sandbox_blocks_unsafe_templates(pair, template):
    ours, _ = pair
    with pytest.raises(TokenizerError):
        ours.apply_chat_template(MESSAGES, chat_template=template)


def test_template_errors(pair):
    ours, _ = pair
    with pytest.raises(TokenizerError, match="does not parse"):
        ours.apply_chat_template(MESSAGES, chat_template="{% for m in messages %}{{ m.content }")
    with pytest.raises(TokenizerError, match="non-empty list"):
        ours.apply_chat_template([], chat_template=TOOLS)
    with pytest.raises(TokenizerError, match="not a dict"):
        ours.apply_chat_template(["hello"], chat_template=TOOLS)
    with pytest.raises(TokenizerError):
        ours.apply_chat_template(MESSAGES, chat_template="{{ messages[0]['content'] + 1 }}")


def test_missing_template_falls_back_to_chatml(backend):
    tok = Tokenizer(backend, bos_token="<s>", eos_token="</s>")
    with pytest.warns(UserWarning, match="no chat template"):
        text = tok.apply_chat_template([{"role": "user", "content": "hi"}])
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_named_templates_and_continue_final_message(backend, pair):
    tok = Tokenizer(backend, bos_token="<s>", eos_token="</s>",
                    chat_template={"default": "{% for m in messages %}[{{ m.content }}]{% endfor %}",
                                   "tool_use": "TOOLS{{ tools | length }}"})
    assert tok.apply_chat_template(MESSAGES[1:2]) == "[  What is 2 & 3?  ]"
    assert tok.apply_chat_template(MESSAGES[1:2], tools=TOOL_LIST) == "TOOLS1"
    partial = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Sure, here"}]
    a = pair[0].apply_chat_template(partial, chat_template=LLAMA2, add_generation_prompt=False,
                                    continue_final_message=True)
    b = pair[1].apply_chat_template(partial, chat_template=LLAMA2, tokenize=False, continue_final_message=True)
    assert a == b and a.endswith("Sure, here")
    with pytest.raises(TokenizerError, match="exclude each other"):
        tok.apply_chat_template(partial, add_generation_prompt=True, continue_final_message=True)


def test_openai_content_parts_are_joined(pair):
    ours, ref = pair
    parts = [{"role": "user", "content": [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]}]
    flat = [{"role": "user", "content": "first\nsecond"}]
    assert ours.apply_chat_template(parts, chat_template=LLAMA2) == \
        ref.apply_chat_template(flat, chat_template=LLAMA2, tokenize=False)
    with pytest.raises(TokenizerError, match="'image_url' is not supported"):
        ours.apply_chat_template([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
                                 chat_template=LLAMA2)
