"""A loaded checkpoint: config plus weights under Hugging Face names in Hugging Face layout, from
either a Hugging Face directory or a GGUF file; and the check that the weights fit the config."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from oci_engine.config import ModelConfig
from oci_engine.errors import ModelFormatError, ModelNotFoundError
from oci_engine.loader.quant_tensor import QuantTensor

Weight = Union["torch.Tensor", QuantTensor]  # noqa: F821 (torch is imported lazily)


@dataclass(slots=True)
class Checkpoint:
    config: ModelConfig
    # "model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", ..., "lm_head.weight"
    # (only when untied). Dense weights keep the file's dtype (fp32/fp16/bf16) and are views of the
    # memory-mapped file; GGUF block formats stay QuantTensor.
    tensors: dict[str, Weight]
    path: Path
    format: str  # "gguf" | "hf"
    generation_config: dict[str, Any] = field(default_factory=dict)
    # GGUF: every header key/value (tokenizer.ggml.*, tokenizer.chat_template, ...).
    # HF: config.json as read.
    metadata: dict[str, Any] = field(default_factory=dict)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Open a .gguf file or a Hugging Face model directory (config.json + *.safetensors).
    Weights are memory-mapped, nothing is dequantized."""
    path = Path(path).expanduser()
    if path.is_dir():
        from oci_engine.loader.safetensors_loader import load_hf_directory

        return load_hf_directory(path)
    if path.is_file():
        from oci_engine.loader.gguf_loader import load_gguf

        return load_gguf(path)
    raise ModelNotFoundError(f"{path} does not exist; pass a .gguf file or a Hugging Face model directory")


def expected_shapes(config: ModelConfig) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """(required, optional) tensor name -> shape that a checkpoint of this config holds."""
    c = config
    hidden, inter, hd = c.hidden_size, c.intermediate_size, c.head_dim
    q_rows, kv_rows = c.num_attention_heads * hd, c.num_key_value_heads * hd
    required = {"model.embed_tokens.weight": (c.vocab_size, hidden), "model.norm.weight": (hidden,)}
    optional: dict[str, tuple[int, ...]] = {}
    if not c.tie_word_embeddings:
        required["lm_head.weight"] = (c.vocab_size, hidden)
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        required.update({
            p + "input_layernorm.weight": (hidden,),
            p + "post_attention_layernorm.weight": (hidden,),
            p + "self_attn.q_proj.weight": (q_rows, hidden),
            p + "self_attn.k_proj.weight": (kv_rows, hidden),
            p + "self_attn.v_proj.weight": (kv_rows, hidden),
            p + "self_attn.o_proj.weight": (hidden, q_rows),
            p + "mlp.gate_proj.weight": (inter, hidden),
            p + "mlp.up_proj.weight": (inter, hidden),
            p + "mlp.down_proj.weight": (hidden, inter),
        })
        biases = {p + "self_attn.q_proj.bias": (q_rows,), p + "self_attn.k_proj.bias": (kv_rows,),
                  p + "self_attn.v_proj.bias": (kv_rows,)}
        (required if c.attention_bias else optional).update(biases)
        # Llama with attention_bias also biases o_proj; Qwen2 does not: accept either.
        optional[p + "self_attn.o_proj.bias"] = (hidden,)
        mlp_biases = {p + "mlp.gate_proj.bias": (inter,), p + "mlp.up_proj.bias": (inter,),
                      p + "mlp.down_proj.bias": (hidden,)}
        (required if c.mlp_bias else optional).update(mlp_biases)
    return required, optional


def check_tensors(config: ModelConfig, tensors: dict[str, Weight], source: Path) -> None:
    """Every tensor the config implies is present with the right shape, and nothing else is:
    a config that does not describe these weights fails here, not as a shape error mid-forward."""
    required, optional = expected_shapes(config)
    missing = [n for n in required if n not in tensors]
    if missing:
        raise ModelFormatError(
            f"{source} lacks {len(missing)} tensor(s) its config requires, e.g. {', '.join(missing[:4])}; "
            "the checkpoint is incomplete (a missing shard?) or config.json describes another model")
    unexpected = [n for n in tensors if n not in required and n not in optional]
    if unexpected:
        raise ModelFormatError(
            f"{source} holds {len(unexpected)} tensor(s) its config does not account for, e.g. "
            f"{', '.join(sorted(unexpected)[:4])}; config.json (num_hidden_layers, architecture, biases) "
            "does not match the weights")
    for name, want in (required | optional).items():  # in model order: the first mismatch is the telling one
        if name not in tensors:
            continue
        got = tuple(tensors[name].shape)
        if got != want:
            raise ModelFormatError(
                f"{source}: tensor {name} has shape {list(got)} but the config implies {list(want)} "
                f"(hidden_size={config.hidden_size}, intermediate_size={config.intermediate_size}, "
                f"heads={config.num_attention_heads}/{config.num_key_value_heads}, head_dim={config.head_dim}, "
                f"vocab_size={config.vocab_size}); the config does not match the weights")
