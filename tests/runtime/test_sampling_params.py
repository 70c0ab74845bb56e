"""SamplingParams: vLLM's names and defaults, normalisation, and typed errors for bad values."""
from __future__ import annotations

import pytest

from oci_engine import SamplingParams
from oci_engine.errors import InvalidRequestError


def test_defaults_follow_vllm():
    p = SamplingParams()
    assert (p.n, p.temperature, p.top_p, p.top_k, p.min_p, p.max_tokens) == (1, 1.0, 1.0, 0, 0.0, 16)
    assert p.stop == [] and p.stop_token_ids == [] and not p.greedy and not p.has_penalties
    assert p.skip_special_tokens and not p.include_stop_str_in_output and not p.ignore_eos


def test_normalisation_and_greedy():
    p = SamplingParams(temperature=0, stop="```", stop_token_ids=(7, 8), top_k=-1, max_tokens=None)
    assert p.greedy and p.stop == ["```"] and p.stop_token_ids == [7, 8]
    assert SamplingParams(repetition_penalty=1.1).has_penalties


@pytest.mark.parametrize("kwargs,field", [
    ({"n": 0}, "n"),
    ({"temperature": -0.1}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_k": -2}, "top_k"),
    ({"top_k": 2.5}, "top_k"),
    ({"min_p": 1.5}, "min_p"),
    ({"seed": "x"}, "seed"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"min_tokens": 5, "max_tokens": 3}, "min_tokens"),
    ({"stop": [""]}, "stop"),
    ({"stop": [1]}, "stop"),
    ({"stop_token_ids": [-1]}, "stop_token_ids"),
    ({"logprobs": 21}, "logprobs"),
    ({"prompt_logprobs": -1}, "prompt_logprobs"),
    ({"repetition_penalty": 0.0}, "repetition_penalty"),
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"frequency_penalty": -3}, "frequency_penalty"),
    ({"ignore_eos": "yes"}, "ignore_eos"),
])
def test_bad_values_raise_a_typed_error_naming_the_field(kwargs, field):
    with pytest.raises(InvalidRequestError, match=rf"SamplingParams\.{field}="):
        SamplingParams(**kwargs)


def test_unknown_field_is_rejected():
    with pytest.raises(TypeError):
        SamplingParams(temprature=0.5)
