"""The batched sampler: greedy rows, seeds, truncation (top-k, top-p, min-p), temperature,
penalties, min_tokens, logprobs and prompt_logprobs."""
from __future__ import annotations

import math

import pytest
import torch

from oci_engine.sampler import SamplingRow, apply_penalties, make_generator, prompt_logprobs, sample
from oci_engine.sampling_params import SamplingParams as SP
from paged_runner import single_torch_thread  # noqa: F401 (autouse)

PROBS = torch.tensor([0.5, 0.3, 0.15, 0.05])
LOGITS = PROBS.log()


def _draws(logits: torch.Tensor, params: SP, n: int = 4000) -> torch.Tensor:
    """n independent draws: one batch of n identical rows on the global RNG."""
    torch.manual_seed(0)
    res = sample(logits.expand(n, -1), [SamplingRow(params) for _ in range(n)])
    return torch.tensor([r.token_id for r in res])


def test_greedy_rows_take_the_exact_argmax_beside_sampled_rows():
    logits = torch.randn(6, 1000, generator=torch.Generator().manual_seed(1))
    rows = [SamplingRow(SP(temperature=0.0 if i % 2 == 0 else 1.0)) for i in range(6)]
    res = sample(logits, rows)
    for i in range(0, 6, 2):
        assert res[i].token_id == int(logits[i].argmax())
    # bf16 logits are accepted and still give the argmax
    assert sample(logits[:1].bfloat16(), rows[:1])[0].token_id == int(logits[0].bfloat16().float().argmax())


def _seeded_run(seed: int, index: int, batch: int, steps: int = 6) -> list[int]:
    logits = torch.zeros(batch, 5000)  # uniform: every draw is a fresh random number
    gen = make_generator(seed)
    out = []
    for _ in range(steps):
        rows = [SamplingRow(SP(seed=None)) for _ in range(batch)]
        rows[index] = SamplingRow(SP(seed=seed), generator=gen)
        out.append(sample(logits, rows)[index].token_id)
    return out


def test_seeded_request_is_reproducible_whatever_shares_its_batch():
    alone = _seeded_run(42, 0, 1)
    assert _seeded_run(42, 3, 7) == alone
    assert _seeded_run(42, 1, 2) == alone
    assert _seeded_run(43, 0, 1) != alone
    assert len(set(alone)) > 1  # the generator advances from step to step


@pytest.mark.parametrize("top_k,expected", [(1, {0}), (2, {0, 1}), (3, {0, 1, 2}), (0, {0, 1, 2, 3})])
def test_top_k_keeps_exactly_the_k_most_likely(top_k, expected):
    assert set(_draws(LOGITS, SP(top_k=top_k)).tolist()) == expected


@pytest.mark.parametrize("top_p,expected", [(0.4, {0}), (0.75, {0, 1}), (0.9, {0, 1, 2}), (1.0, {0, 1, 2, 3})])
def test_top_p_keeps_the_smallest_set_reaching_p(top_p, expected):
    draws = _draws(LOGITS, SP(top_p=top_p))
    assert set(draws.tolist()) == expected
    # the kept tokens are drawn in proportion to their renormalised probabilities
    kept = PROBS[sorted(expected)]
    freq = torch.bincount(draws, minlength=4)[sorted(expected)].float() / len(draws)
    assert torch.allclose(freq, kept / kept.sum(), atol=0.03)


@pytest.mark.parametrize("min_p,expected", [(0.2, {0, 1, 2}), (0.5, {0, 1}), (0.9, {0}), (0.0, {0, 1, 2, 3})])
def test_min_p_drops_tokens_below_a_fraction_of_the_top(min_p, expected):
    assert set(_draws(LOGITS, SP(min_p=min_p)).tolist()) == expected


def test_top_k_then_top_p_on_the_renormalised_mass():
    # top_k=3 leaves 0.5/0.95, 0.3/0.95, 0.15/0.95; top_p=0.8 then needs tokens 0 and 1 only
    assert set(_draws(LOGITS, SP(top_k=3, top_p=0.8)).tolist()) == {0, 1}


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_temperature_sharpens_or_flattens_the_distribution(temperature):
    draws = _draws(LOGITS, SP(temperature=temperature), n=8000)
    freq = torch.bincount(draws, minlength=4).float() / len(draws)
    assert torch.allclose(freq, torch.softmax(LOGITS / temperature, -1), atol=0.02)


def test_repetition_presence_frequency_penalties_by_hand():
    logits = torch.tensor([2.0, -1.0, 0.5, 3.0, -2.0, 1.0])
    p = SP(repetition_penalty=2.0, presence_penalty=0.5, frequency_penalty=0.25)
    got = apply_penalties(logits, p, prompt_ids=[0, 1], output_ids=[3, 3, 1])
    # repetition over prompt + output {0, 1, 3}: positive / 2, negative * 2
    # presence + frequency over output only: token 3 seen twice, token 1 once
    expected = torch.tensor([2.0 / 2, -1.0 * 2 - 0.5 - 0.25, 0.5, 3.0 / 2 - 0.5 - 0.5, -2.0, 1.0])
    assert torch.allclose(got, expected)
    assert torch.equal(logits, torch.tensor([2.0, -1.0, 0.5, 3.0, -2.0, 1.0]))  # input untouched


def test_repetition_penalty_changes_the_greedy_pick():
    logits = torch.tensor([[1.0, 3.0, 2.5]])
    plain = sample(logits, [SamplingRow(SP(temperature=0), prompt_ids=[1])])[0].token_id
    penal = sample(logits, [SamplingRow(SP(temperature=0, repetition_penalty=1.5), prompt_ids=[1])])[0].token_id
    assert (plain, penal) == (1, 2)


def test_min_tokens_suppresses_eos_and_stop_ids_until_reached():
    logits = torch.tensor([[0.0, 9.0, 8.0, 1.0]])  # EOS (1) then a stop id (2) are the favourites
    p = SP(temperature=0, min_tokens=2, stop_token_ids=[2])
    early = sample(logits, [SamplingRow(p, output_ids=[3], eos_token_ids=[1])])[0].token_id
    later = sample(logits, [SamplingRow(p, output_ids=[3, 3], eos_token_ids=[1])])[0].token_id
    assert (early, later) == (3, 1)
    ignoring = SP(temperature=0, min_tokens=2, ignore_eos=True)
    assert sample(logits, [SamplingRow(ignoring, output_ids=[], eos_token_ids=[1])])[0].token_id == 1


def test_logprobs_are_top_k_plus_sampled_from_the_raw_distribution():
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(3))
    rows = [SamplingRow(SP(temperature=0, logprobs=5)),
            SamplingRow(SP(temperature=0.7, top_k=40, logprobs=2, seed=1, repetition_penalty=1.3),
                        prompt_ids=list(range(50)), generator=make_generator(1)),
            SamplingRow(SP(temperature=0, logprobs=0))]
    res = sample(logits, rows)
    raw = torch.log_softmax(logits, -1)
    top5 = raw[0].topk(5).indices.tolist()
    assert list(res[0].logprobs) == top5 and res[0].token_id == top5[0]
    assert set(res[1].logprobs) == set(raw[1].topk(2).indices.tolist()) | {res[1].token_id}
    assert list(res[2].logprobs) == [res[2].token_id]
    for i, r in enumerate(res):
        for tok, lp in r.logprobs.items():
            # the model's own distribution: not tempered, not penalised
            assert math.isclose(lp, raw[i, tok].item(), abs_tol=1e-6)
    assert sample(logits[:1], [SamplingRow(SP())])[0].logprobs is None


def test_prompt_logprobs_in_vllm_shape():
    prompt = [5, 9, 2, 7]
    logits = torch.randn(4, 12, generator=torch.Generator().manual_seed(4))
    out = prompt_logprobs(logits, prompt, k=3)
    assert len(out) == len(prompt) and out[0] is None
    lps = torch.log_softmax(logits, -1)
    for pos in range(1, 4):
        entry = out[pos]
        assert prompt[pos] in entry and math.isclose(entry[prompt[pos]], lps[pos - 1, prompt[pos]].item(), abs_tol=1e-6)
        assert set(lps[pos - 1].topk(3).indices.tolist()) <= set(entry)
        assert len(entry) in (3, 4)
    assert prompt_logprobs(logits, [5], k=2) == [None]
