"""Prompt styles: OpenCodeInterpreter's instruction format, plain chat, plain completion."""
from types import SimpleNamespace
from pathlib import Path

import pytest

from oci_engine.evals.prompts import Dialogue, instruction, resolve_style
from oci_engine.evals.tasks import load_humaneval, load_mbpp

MBPP = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mbpp.jsonl"


def test_style_follows_the_checkpoint():
    chat_tok = SimpleNamespace(chat_template="{{ messages }}")
    base_tok = SimpleNamespace(chat_template=None)
    assert resolve_style("auto", "/models/OpenCodeInterpreter-DS-6.7B", chat_tok) == "oci"
    assert resolve_style("auto", "m-a-p/opencodeinterpreter-ds-1.3b", chat_tok) == "oci"
    assert resolve_style("auto", "smollm2-135m", chat_tok) == "chat"
    assert resolve_style("auto", "deepseek-coder-1.3b-base.gguf", base_tok) == "base"
    assert resolve_style("base", "OpenCodeInterpreter-DS-6.7B", chat_tok) == "base"


def test_humaneval_prompts():
    t = load_humaneval()[0]
    oci = Dialogue.start("oci", t).request()
    assert len(oci) == 1 and oci[0]["role"] == "user"
    text = oci[0]["content"]
    assert "\n\n@@ Instruction\nHere is the given code to do completion:\n```python\n" in text
    assert t.prompt.strip() in text and text.endswith("\n\n@@ Response\n")
    chat = Dialogue.start("chat", t).request()
    assert chat == [{"role": "user", "content": instruction(t)}] and "@@" not in chat[0]["content"]
    assert Dialogue.start("base", t).request() == t.prompt


@pytest.mark.skipif(not MBPP.exists(), reason="no MBPP data")
def test_mbpp_prompt_shows_one_test_and_hides_the_rest():
    t = load_mbpp(str(MBPP))[0]
    hidden = [line for line in t.test.splitlines() if line.startswith("assert")]
    text = instruction(t)
    assert t.description in text and hidden[0] in text
    assert not any(h in text for h in hidden[1:])
    base = Dialogue.start("base", t).request()
    assert base.startswith('"""\n') and hidden[0] in base and hidden[1] not in base
