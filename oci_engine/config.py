"""Model configuration: the Hugging Face config.json fields the runtime needs, in HF's names."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from oci_engine.errors import ModelFormatError, UnsupportedModelError

# HF architecture name -> our model family. All are Llama-shaped; Qwen2 adds qkv bias.
ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "llama",
}
_MODEL_TYPES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}


@dataclass(slots=True)
class ModelConfig:
    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # q/k/v projection bias (Qwen2, some Llama variants)
    mlp_bias: bool = False
    sliding_window: int | None = None
    bos_token_id: int | None = None
    eos_token_id: list[int] = field(default_factory=list)
    torch_dtype: str = "float32"

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        archs = d.get("architectures") or []
        # some exported configs name only the model_type
        arch = archs[0] if archs else _MODEL_TYPES.get(d.get("model_type"), d.get("model_type"))
        if arch not in ARCHITECTURES:
            raise UnsupportedModelError(
                f"architecture {arch!r} is not supported; supported: {', '.join(sorted(ARCHITECTURES))}"
            )
        try:
            heads = int(d["num_attention_heads"])
            hidden = int(d["hidden_size"])
            eos = d.get("eos_token_id")
            eos = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
            rope_scaling = d.get("rope_scaling")
            rope_theta = d.get("rope_theta")
            # transformers >= 5 folds rope_theta into rope_parameters
            params = d.get("rope_parameters")
            if isinstance(params, dict):
                rope_theta = rope_theta or params.get("rope_theta")
                if params.get("rope_type", "default") != "default" and rope_scaling is None:
                    rope_scaling = dict(params)
            if isinstance(rope_scaling, dict):
                rope_scaling = dict(rope_scaling)
                rope_scaling.pop("rope_theta", None)
                if rope_scaling.get("rope_type", rope_scaling.get("type", "default")) == "default":
                    rope_scaling = None
            return cls(
                architecture=arch,
                vocab_size=int(d["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(d["intermediate_size"]),
                num_hidden_layers=int(d["num_hidden_layers"]),
                num_attention_heads=heads,
                num_key_value_heads=int(d.get("num_key_value_heads") or heads),
                head_dim=int(d.get("head_dim") or hidden // heads),
                max_position_embeddings=int(d.get("max_position_embeddings", 4096)),
                rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
                rope_theta=float(rope_theta or 10000.0),
                rope_scaling=rope_scaling,
                tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
                attention_bias=bool(d.get("attention_bias", arch == "Qwen2ForCausalLM")),
                mlp_bias=bool(d.get("mlp_bias", False)),
                sliding_window=d.get("sliding_window") if d.get("use_sliding_window", True) else None,
                bos_token_id=d.get("bos_token_id"),
                eos_token_id=eos,
                torch_dtype=str(d.get("torch_dtype") or d.get("dtype") or "float32"),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ModelFormatError(f"config.json is missing or has a bad value for {e}; "
                                   "check that the model directory is a complete Hugging Face checkpoint") from e
