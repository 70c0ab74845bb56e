"""Model construction: the architecture class for a config, bound to an op backend, weights loaded."""
from __future__ import annotations

from oci_engine.config import ARCHITECTURES
from oci_engine.errors import UnsupportedModelError


def model_class(architecture: str):
    family = ARCHITECTURES.get(architecture)
    if family == "llama":
        from oci_engine.models.llama import LlamaForCausalLM

        return LlamaForCausalLM
    raise UnsupportedModelError(f"architecture {architecture!r} is not supported; supported: "
                                f"{', '.join(sorted(ARCHITECTURES))}")


def build_model(config, tensors, backend: str = "torch", dtype=None, device="cpu"):
    """A ready model: config (ModelConfig), tensors (HF name -> torch.Tensor | QuantTensor)."""
    import torch

    from oci_engine.ops import get_ops

    model = model_class(config.architecture)(config, get_ops(backend), dtype=dtype or torch.float32, device=device)
    model.load_weights(tensors)
    return model


def allocate_kv_cache(config, num_blocks: int, block_size: int, dtype=None, device="cpu") -> list:
    """One (k_cache, v_cache) per layer, each [num_blocks, block_size, num_kv_heads, head_dim], zeroed."""
    import torch

    shape = (num_blocks, block_size, config.num_key_value_heads, config.head_dim)
    dtype = dtype or torch.float32
    return [(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))
            for _ in range(config.num_hidden_layers)]
