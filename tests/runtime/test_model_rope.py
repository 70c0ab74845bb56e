"""Rotary tables beyond the easy cases: dynamic NTK past max_position_embeddings (against
transformers decoding token by token), and rope types we refuse with a typed error."""
from __future__ import annotations

import pytest
import torch

from oci_engine.config import ModelConfig
from oci_engine.errors import UnsupportedModelError
from oci_engine.models.rope import cos_sin_cache
from paged_runner import PagedRunner, hf_model, make_model, single_torch_thread  # noqa: F401 (autouse)


def test_dynamic_ntk_past_max_positions_matches_incremental_transformers(tiny_checkpoint):
    path = tiny_checkpoint(max_position_embeddings=24, rope_scaling={"rope_type": "dynamic", "factor": 2.0})
    ours, config = make_model(path)
    assert ours.max_model_len == 48  # dynamic NTK exists to reach past max_position_embeddings
    hf = hf_model(path)
    ids = torch.randint(3, 256, (44,), generator=torch.Generator().manual_seed(0)).tolist()
    runner = PagedRunner(ours, config)
    got = [runner.step([(0, ids[:16])])[0]]
    with torch.no_grad():
        out = hf(torch.tensor([ids[:16]]), use_cache=True)
        ref, cache = [out.logits[0]], out.past_key_values
        for t in range(16, 44):
            got.append(runner.step([(0, [ids[t]])])[0])
            out = hf(torch.tensor([[ids[t]]]), past_key_values=cache, use_cache=True)
            ref.append(out.logits[0])
            cache = out.past_key_values
    got, ref = torch.cat(got), torch.cat(ref)
    assert (got - ref).abs().max().item() <= 1e-4
    # and the scaling did act: plain frequencies past position 24 give different logits
    plain = cos_sin_cache(ModelConfig(**{**_fields(config), "rope_scaling": None, "max_position_embeddings": 48}))
    assert not torch.allclose(plain[30], ours.cos_sin[30])
    assert torch.equal(plain[:24], ours.cos_sin[:24])


def _fields(config: ModelConfig) -> dict:
    return {f: getattr(config, f) for f in config.__slots__}


@pytest.mark.parametrize("scaling", [
    {"type": "linear", "factor": 4.0},  # DeepSeek-Coder's config.json, pre-rope_type spelling
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 8192},  # Llama 3.1's
])
@pytest.mark.parametrize("theta", [1e4, 1e5, 5e5])
def test_real_config_rope_blocks_match_transformers_tables(scaling, theta):
    import transformers
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    raw = dict(architectures=["LlamaForCausalLM"], vocab_size=32, hidden_size=512, intermediate_size=64,
               num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=16384,
               rope_theta=theta, rope_scaling=dict(scaling))
    ours = cos_sin_cache(ModelConfig.from_hf_dict(raw))
    hf_config = transformers.LlamaConfig(**{k: v for k, v in raw.items() if k != "architectures"})
    kind = scaling.get("rope_type", scaling.get("type"))
    inv_freq, attention_factor = ROPE_INIT_FUNCTIONS[kind](hf_config, "cpu")
    assert attention_factor == 1.0
    positions = torch.tensor([0, 1, 17, 4095, 16383], dtype=torch.float32)
    freqs = positions[:, None] * inv_freq[None, :].float()
    assert torch.allclose(ours[positions.long()], torch.cat((freqs.cos(), freqs.sin()), -1), atol=1e-6)


@pytest.mark.parametrize("scaling", [{"rope_type": "yarn", "factor": 4.0}, {"type": "linear"}])
def test_unsupported_or_malformed_rope_scaling_is_a_typed_error(scaling):
    config = ModelConfig(architecture="LlamaForCausalLM", vocab_size=8, hidden_size=16, intermediate_size=16,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                         rope_scaling=scaling)
    with pytest.raises(UnsupportedModelError, match="rope_scaling"):
        cos_sin_cache(config)
