"""Our Llama-family model (torch backend, fp32) against transformers on tiny random checkpoints:
full-prompt logits, the prompt fed in chunks through the paged cache, several sequences mixed in
one flat batch, and greedy continuations decoded together."""
from __future__ import annotations

import pytest
import torch

from paged_runner import PagedRunner, hf_greedy, hf_model, make_model, single_torch_thread  # noqa: F401 (autouse)

TOL = 1e-4

CASES = {
    "llama-gqa": ("llama", {}),
    "llama-mha": ("llama", {"num_key_value_heads": 4}),
    "llama-head-dim-32": ("llama", {"head_dim": 32}),  # head_dim * heads != hidden_size
    "llama-linear-rope-x4": ("llama", {"rope_scaling": {"rope_type": "linear", "factor": 4.0}}),
    "llama-theta-1e6": ("llama", {"rope_theta": 1e6}),
    # head_dim 16 at theta 1e4 puts wavelengths below, inside and above the [16, 64] band
    "llama3-rope": ("llama", {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}),
    "llama-dynamic-ntk": ("llama", {"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}),
    "llama-tied": ("llama", {"tie_word_embeddings": True}),
    "qwen2-qkv-bias": ("qwen2", {}),
    "qwen2-tied": ("qwen2", {"tie_word_embeddings": True}),
    "mistral": ("mistral", {"head_dim": 16}),
}


@pytest.fixture(scope="module", params=list(CASES))
def pair(request, tiny_checkpoint):
    arch, overrides = CASES[request.param]
    path = tiny_checkpoint(arch, **overrides)
    ours, config = make_model(path)
    return request.param, ours, config, hf_model(path)


def _prompt(n: int, seed: int) -> list[int]:
    return torch.randint(3, 256, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def _hf_logits(hf, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return hf(torch.tensor([ids])).logits[0].float()


def test_full_prompt_logits_match(pair):
    name, ours, config, hf = pair
    ids = _prompt(57, 1)
    got = PagedRunner(ours, config).step([(0, ids)])[0]
    ref = _hf_logits(hf, ids)
    assert got.shape == ref.shape == (57, config.vocab_size)
    assert (got - ref).abs().max().item() <= TOL, name
    # the logits are not degenerate: the comparison above would catch a wrong rotary or norm
    assert ref.std().item() > 0.5


def test_chunked_prefill_through_paged_cache(pair):
    name, ours, config, hf = pair
    ids = _prompt(50, 2)
    runner = PagedRunner(ours, config, block_size=4)
    parts = [runner.step([(7, ids[a:b])])[0] for a, b in [(0, 5), (5, 6), (6, 23), (23, 50)]]
    got = torch.cat(parts)
    assert (got - _hf_logits(hf, ids)).abs().max().item() <= TOL, name


def test_mixed_flat_batch(pair):
    """One step holds a prefill chunk over a cached prefix, a decode token, and a fresh prompt."""
    name, ours, config, hf = pair
    a, b, c = _prompt(30, 3), _prompt(19, 4), _prompt(11, 5)
    runner = PagedRunner(ours, config, block_size=8)
    first = runner.step([(0, a[:12]), (1, b[:18])])
    second = runner.step([(1, b[18:]), (0, a[12:]), (2, c)])
    for got, ids in [(torch.cat([first[0], second[1]]), a), (torch.cat([first[1], second[0]]), b), (second[2], c)]:
        assert (got - _hf_logits(hf, ids)).abs().max().item() <= TOL, name


def test_batched_greedy_matches_transformers(pair):
    name, ours, config, hf = pair
    prompts = [_prompt(n, 10 + n) for n in (3, 17, 40)]
    outs = PagedRunner(ours, config, block_size=4, num_blocks=64).greedy(prompts, 20)
    for prompt, out in zip(prompts, outs):
        assert out == hf_greedy(hf, prompt, 20), name
