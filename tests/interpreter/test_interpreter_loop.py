"""The refinement loop against the real sandbox, with the model's replies scripted: these tests pin
the loop's protocol (what is run, what goes back to the model, when it stops), which a real small
model would not exercise deterministically. The end-to-end test with SmolLM2 is in
test_interpreter_e2e.py."""
import threading

import pytest

from oci_engine.code_blocks import EMPTY_RESULT_NUDGE, INPUT_GUIDANCE
from oci_engine.interpreter import Interpreter
from oci_engine.outputs import CompletionOutput, RequestOutput
from oci_engine.sandbox import Sandbox


@pytest.fixture(scope="module")
def tokenizer(smollm2_gguf):
    from oci_engine.tokenizer import Tokenizer

    return Tokenizer.from_pretrained(smollm2_gguf)


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox() as sb:
        yield sb


class ScriptedReplies:
    """A TokenStream that answers with fixed replies, a few characters at a time, and records the
    conversations it was asked to continue."""

    def __init__(self, tokenizer, replies, chunk=5):
        self.tokenizer, self.replies, self.chunk = tokenizer, list(replies), chunk
        self.prompts = []

    def __call__(self, prompt_ids, params, cancel):
        self.prompts.append(self.tokenizer.decode(prompt_ids, skip_special_tokens=False))
        reply = self.replies.pop(0)
        text = ""
        for i in range(0, len(reply), self.chunk):
            if cancel.is_set():
                break
            delta = reply[i:i + self.chunk]
            text += delta
            yield RequestOutput("r", None, list(prompt_ids),
                                [CompletionOutput(0, text, [], None, delta_text=delta)], False)
        yield RequestOutput("r", None, list(prompt_ids),
                            [CompletionOutput(0, text, [], "stop")], True, num_cached_tokens=len(prompt_ids) // 2)


def make(tokenizer, sandbox, replies, **kw):
    stream = ScriptedReplies(tokenizer, replies)
    return Interpreter(token_stream=stream, tokenizer=tokenizer, sandbox=sandbox, **kw), stream


def test_code_runs_and_its_output_goes_back_to_the_model(tokenizer, sandbox):
    it, stream = make(tokenizer, sandbox, ["Sure:\n```python\nprint(6 * 7)\n```", "The answer is 42."])
    turn = it.send("What is 6*7?")
    assert turn.rounds == 2
    roles = [m["role"] for m in turn.messages]
    assert roles == ["user", "assistant", "code", "execution", "assistant"]
    assert turn.messages[3]["stdout"] == "42\n"
    assert "Execution result: \n42\n" in stream.prompts[1]
    assert turn.reply == "The answer is 42."
    it.close()


def test_state_persists_across_rounds_and_errors_are_fed_back(tokenizer, sandbox):
    replies = ["```python\nx = 40\nprint(x + undefined_name)\n```",
               "```python\nprint(x + 2)\n```",
               "Done."]
    it, stream = make(tokenizer, sandbox, replies)
    turn = it.send("go")
    execs = [m for m in turn.messages if m["role"] == "execution"]
    assert execs[0]["error_type"] == "NameError" and "undefined_name" in execs[0]["error"]
    assert "NameError" in stream.prompts[1] and "<cell>" in stream.prompts[1]
    # the failing cell rolled back; x was never assigned, so round 2 fails too, but the session survives
    assert execs[1]["error_type"] == "NameError"
    it.close()


def test_successful_cell_state_is_kept(tokenizer, sandbox):
    it, _ = make(tokenizer, sandbox, ["```python\nx = 40\n```", "```python\nprint(x + 2)\n```", "ok"])
    turn = it.send("go")
    execs = [m for m in turn.messages if m["role"] == "execution"]
    assert execs[1]["stdout"] == "42\n"
    it.close()


def test_empty_output_gets_the_nudge_and_input_gets_guidance(tokenizer, sandbox):
    it, stream = make(tokenizer, sandbox, ["```python\ny = 1\n```", "```python\nn = int(input())\n```", "fine"])
    turn = it.send("go")
    assert EMPTY_RESULT_NUDGE in stream.prompts[1]
    assert INPUT_GUIDANCE in stream.prompts[2]
    assert [m for m in turn.messages if m["role"] == "execution"][1]["skipped"] is True


def test_rounds_are_capped_and_the_last_reply_still_runs(tokenizer, sandbox):
    replies = ["```python\nprint(1)\n```"] * 5
    it, stream = make(tokenizer, sandbox, replies, max_rounds=2)
    turn = it.send("loop forever")
    assert turn.rounds == 2 and len(stream.prompts) == 2
    assert sum(m["role"] == "execution" for m in turn.messages) == 2


def test_last_block_runs_by_default_all_blocks_on_request(tokenizer, sandbox):
    reply = "```python\nprint('a')\n```\ntext\n```python\nprint('b')\n```"
    it, _ = make(tokenizer, sandbox, [reply, "x"])
    assert [m for m in it.send("go").messages if m["role"] == "execution"][0]["stdout"] == "b\n"
    it2, _ = make(tokenizer, sandbox, [reply, "x"], run_all_blocks=True)
    assert [m for m in it2.send("go").messages if m["role"] == "execution"][0]["stdout"] == "a\nb\n"


def test_timeout_is_reported_in_the_papers_words(tokenizer, sandbox):
    it, stream = make(tokenizer, sandbox, ["```python\nwhile True:\n    pass\n```", "sorry"], timeout=0.5)
    turn = it.send("go")
    ex = [m for m in turn.messages if m["role"] == "execution"][0]
    assert ex["timed_out"]
    assert "Execution timed out." in stream.prompts[1]


def test_cancel_stops_generation_and_runs_nothing(tokenizer, sandbox):
    it, _ = make(tokenizer, sandbox, ["```python\nprint('should not run')\n```" + " pad" * 200])
    seen = []
    for ev in it.stream("go"):
        seen.append(ev.type)
        if ev.type == "token" and len(seen) == 3:
            it.cancel()
    assert "execution" not in seen and seen[-1] == "done"
    it.close()


def test_a_turn_that_fails_leaves_no_trace_in_the_conversation(tokenizer, sandbox):
    from oci_engine.errors import ContextLengthError

    it, stream = make(tokenizer, sandbox, ["```python\nprint(1)\n```", "ok", "Hello again."])
    it.send("first")
    before = list(it.history)

    def failing(prompt_ids, params, cancel):
        raise ContextLengthError("the prompt has 9999 tokens, more than the model's context")
        yield  # a generator, like every TokenStream

    it.token_stream = failing
    with pytest.raises(ContextLengthError):
        it.send("x " * 5000)
    assert it.history == before
    # the conversation goes on as if the failed message had never been sent
    it.token_stream = stream
    turn = it.send("second")
    assert turn.reply == "Hello again."
    assert [m["role"] for m in it.history][-2:] == ["user", "assistant"]
    assert "x x x" not in stream.prompts[-1]
    it.close()


def test_a_turn_torn_down_mid_reply_is_rolled_back(tokenizer, sandbox):
    it, _ = make(tokenizer, sandbox, ["a long reply " * 20])
    events = it.stream("hello")
    next(events)  # round
    next(events)  # first token
    events.close()  # the consumer went away without cancelling
    assert it.history == []
    it.close()
