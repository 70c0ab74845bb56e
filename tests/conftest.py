"""Shared fixtures: the real SmolLM2 GGUF (pulled once), transformers' reading of it, and a
factory for tiny random-weight Hugging Face checkpoints."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

# Tiny but not degenerate: GQA (4 query heads on 2 kv heads), 2 layers, head_dim 16.
TINY_DEFAULTS = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=None,
)


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct Q4_1 GGUF, pulled into the cache on first use."""
    from oci_engine.model_cache import pull

    return pull("smollm2-135m")


@pytest.fixture(scope="session")
def smollm2_hf_model(smollm2_gguf):
    """transformers' own reading of the same GGUF (dequantized to fp32, ~14 s: once per session)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name, dtype=torch.float32)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """Factory: tiny_checkpoint(arch="llama"|"qwen2"|"mistral", dtype=torch.float32,
    max_shard_size=None, seed=0, **config_overrides) -> Path of a Hugging Face directory
    (config.json, generation_config.json, *.safetensors; sharded with an index file when
    max_shard_size is given, e.g. "40KB"). Same arguments -> same directory (cached per session).

    Examples: tiny_checkpoint(rope_scaling={"rope_type": "linear", "factor": 4.0}),
    tiny_checkpoint(rope_theta=1e6), tiny_checkpoint("qwen2"), tiny_checkpoint(tie_word_embeddings=True).
    """
    import torch

    made: dict[str, Path] = {}

    def make(arch: str = "llama", *, dtype=torch.float32, max_shard_size=None, seed: int = 0,
             **overrides) -> Path:
        import transformers

        key = json.dumps([arch, str(dtype), max_shard_size, seed, overrides], sort_keys=True, default=str)
        if key in made:
            return made[key]
        config_cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
                      "mistral": transformers.MistralConfig}[arch]
        config = config_cls(**{**TINY_DEFAULTS, **overrides})
        torch.manual_seed(seed)
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
        # HF's init (std 0.02) gives near-uniform logits; wider weights make comparisons meaningful.
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.copy_(1.0 + 0.1 * torch.randn_like(p))
                else:
                    p.copy_(torch.randn_like(p) * (0.1 if p.ndim == 1 else p.shape[-1] ** -0.5))
        model = model.to(dtype)
        out = tmp_path_factory.mktemp(f"tiny-{arch}")
        kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
        model.save_pretrained(out, safe_serialization=True, **kwargs)
        made[key] = out
        return out

    return make
