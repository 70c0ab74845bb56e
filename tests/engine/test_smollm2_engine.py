"""End to end on the real SmolLM2-135M GGUF: multi-turn prefix caching, stop strings split across
tokens, streaming, and the `oci-engine generate` command."""
from __future__ import annotations

import pytest

from oci_engine import LLM, SamplingParams

SYSTEM = ("You are a careful Python programmer working in a code interpreter. When asked for code, answer "
          "with one short Python code block and nothing else. The code is executed and its output is sent back "
          "to you as a message that starts with 'Execution result'. Read it, and if there is an error, fix the "
          "code. Prefer the standard library. Keep functions small, name them clearly, and add a one-line "
          "docstring. Print the result of a small example call at the end so the output can be checked. ") * 2


@pytest.fixture(scope="module")
def llm(smollm2_gguf):
    return LLM(str(smollm2_gguf))


def test_round_two_of_a_chat_is_served_from_the_cache(llm):
    sp = SamplingParams(temperature=0.0, max_tokens=48)
    round1 = [{"role": "system", "content": SYSTEM},
              {"role": "user", "content": "Write a function that returns the squares of 1 to 5."}]
    o1 = llm.chat(round1, sp)[0]
    assert o1.num_cached_tokens == 0
    round2 = round1 + [{"role": "assistant", "content": o1.text},
                       {"role": "user", "content": "Execution result:\n[1, 4, 9, 16, 25]"}]
    o2 = llm.chat(round2, sp)[0]
    history = len(o1.prompt_token_ids) + len(o1.token_ids)
    print(f"round 2: {o2.num_cached_tokens} of {history} history tokens cached")
    assert o2.num_cached_tokens >= 0.9 * history, (o2.num_cached_tokens, history)
    assert o2.prompt_token_ids[:o2.num_cached_tokens] == (o1.prompt_token_ids + o1.token_ids)[:o2.num_cached_tokens]
    assert llm.stats.num_blocks_used == 0


def test_stop_string_across_a_token_boundary(llm):
    prompt = "def add(a, b):\n    "
    ref = llm.generate(prompt, SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True))[0]
    tok = llm.tokenizer
    pieces = [tok.decode(ref.token_ids[:i + 1]) for i in range(len(ref.token_ids))]
    # a stop string made of the end of one token and the start of the next
    for k in range(1, len(pieces) - 1):
        a, b = pieces[k - 1], pieces[k]
        if len(b) - len(a) >= 2 and len(a) >= 2 and b.startswith(a):
            stop = a[-1] + b[len(a)]
            if ref.text.find(stop) == len(a) - 1:
                break
    else:
        pytest.skip("no token boundary with a unique two-character stop string in this output")
    sp = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True, stop=[stop])
    out = llm.generate(prompt, sp)[0]
    assert out.finish_reason == "stop" and out.stop_reason == stop
    assert out.text == ref.text[:ref.text.find(stop)]
    streamed = list(llm.stream(prompt, sp))
    assert "".join(o.delta_text for o in streamed) == out.text
    assert streamed[-1].finished and streamed[-1].text == out.text
    with_stop = llm.generate(prompt, SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True, stop=[stop],
                                                    include_stop_str_in_output=True))[0]
    assert with_stop.text == out.text + stop


def test_stream_deltas_join_to_the_text(llm):
    sp = SamplingParams(temperature=0.0, max_tokens=20)
    outs = list(llm.stream("Here is a haiku about caching:", sp))
    final = outs[-1]
    assert final.finished and final.finish_reason in ("stop", "length")
    assert "".join(o.delta_text for o in outs) == final.text == llm.tokenizer.decode(final.token_ids)
    assert final.metrics.time_to_first_token > 0


def test_generate_command_streams_the_same_text(llm, smollm2_gguf, capsys):
    from oci_engine.cli import main

    expected = llm.chat([{"role": "user", "content": "Say hi."}], SamplingParams(temperature=0.0, max_tokens=12))[0]
    assert main(["generate", "-m", str(smollm2_gguf), "--chat", "-n", "12", "-q", "Say hi."]) == 0
    assert capsys.readouterr().out == expected.text + "\n"
