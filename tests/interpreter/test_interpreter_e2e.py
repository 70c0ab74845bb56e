"""The whole loop with the real default model, engine and sandbox."""
import pytest

from oci_engine import LLM, Interpreter, SamplingParams


@pytest.fixture(scope="module")
def llm(smollm2_gguf):
    return LLM(str(smollm2_gguf))


def test_rounds_after_the_first_are_served_from_the_prefix_cache(llm):
    params = SamplingParams(temperature=0.0, max_tokens=96)
    with Interpreter(llm, max_rounds=3, sampling_params=params) as it:
        turn = it.send("Write a Python function square(n) that returns n*n, and test it by printing square(4).")
        assert turn.rounds >= 2, "SmolLM2 answers this with a code block, so a second round must follow"
        assert [m["role"] for m in turn.messages][:4] == ["user", "assistant", "code", "execution"]
        block = llm.engine.kv.block_size
        for r in range(1, turn.rounds):
            previous_prompt = turn.prompt_tokens[r - 1]
            # everything the previous round saw, in whole blocks, comes from the cache
            assert turn.cached_tokens[r] >= (previous_prompt // block) * block
            assert turn.cached_tokens[r] >= 0.5 * turn.prompt_tokens[r]
        # the next message continues the same conversation, cached as well
        turn2 = it.send("Now print square(5).")
        assert turn2.cached_tokens[0] >= 0.8 * turn2.prompt_tokens[0]
