"""The Llama family (Llama 1-3, CodeLlama, DeepSeek-Coder, Mistral, Qwen2, SmolLM2) in one file.

Read it top to bottom against the Llama paper: embedding, N x (RMSNorm, attention with rotary
positions and grouped KV heads, RMSNorm, SwiGLU MLP), final RMSNorm, LM head. Every tensor
operation goes through the op table `ops`, bound once to a backend, so this file never asks
which device it runs on. The forward takes a flat batch: the new tokens of several sequences,
their positions, and AttentionMetadata saying which paged-KV blocks each sequence owns.

Named decisions:
- q/k/v and gate/up projections are fused into one linear each at load (one GEMM instead of
  three or two); weights in different GGUF block formats cannot share one buffer and stay apart.
- The residual add is fused into the next RMSNorm (`add_rms_norm`), saving a pass over [T, H].
- The rotary cos/sin table is computed once for every position the model can reach.
"""
from __future__ import annotations

import torch

from oci_engine.attention_metadata import AttentionMetadata
from oci_engine.config import ModelConfig
from oci_engine.errors import ModelFormatError
from oci_engine.models.rope import cos_sin_cache
from oci_engine.ops import Ops


def _concat_rows(weights: list):
    """One [sum(out), in] weight from several, or None when they cannot share a buffer."""
    if all(isinstance(w, torch.Tensor) for w in weights):
        return torch.cat(weights, dim=0)
    types = {getattr(w, "ggml_type", None) for w in weights}
    if len(types) != 1 or None in types:
        return None
    import numpy as np

    from oci_engine.loader.quant_tensor import QuantTensor

    first = weights[0]
    data = np.concatenate([np.asarray(w.data) for w in weights], axis=0)
    return QuantTensor(first.ggml_type, (data.shape[0], first.shape[1]), data)


class FusedLinear:
    """Several projections of the same input, computed as one linear and split afterwards."""

    def __init__(self, ops: Ops, weights: list, biases: list, dtype, device):
        self.ops = ops
        self.sizes = [w.shape[0] for w in weights]
        fused = _concat_rows(weights)
        prep = lambda w: ops.prepare_linear(w, dtype=dtype, device=device)  # noqa: E731
        cast = lambda b: None if b is None else b.to(device=device, dtype=dtype)  # noqa: E731
        if any(b is not None for b in biases):
            # a projection without bias inside a fused group gets zeros (Qwen2 has bias on q/k/v only)
            biases = [torch.zeros(n) if b is None else b for b, n in zip(biases, self.sizes)]
        if fused is not None:
            self.handles = [prep(fused)]
            self.biases = [cast(torch.cat(biases)) if biases[0] is not None else None]
        else:
            self.handles = [prep(w) for w in weights]
            self.biases = [cast(b) for b in biases]

    def joint(self, x: torch.Tensor) -> torch.Tensor:
        """All projections side by side: [T, sum(out)]."""
        if len(self.handles) == 1:
            return self.ops.linear(x, self.handles[0], self.biases[0])
        return torch.cat([self.ops.linear(x, h, b) for h, b in zip(self.handles, self.biases)], dim=-1)

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        if len(self.handles) == 1:
            return list(self.joint(x).split(self.sizes, dim=-1))
        return [self.ops.linear(x, h, b) for h, b in zip(self.handles, self.biases)]


class LlamaForCausalLM:
    def __init__(self, config: ModelConfig, ops: Ops, dtype=torch.float32, device="cpu"):
        self.config, self.ops, self.dtype, self.device = config, ops, dtype, torch.device(device)
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.scale = self.head_dim ** -0.5
        if self.num_heads % self.num_kv_heads:
            raise ModelFormatError(f"num_attention_heads={self.num_heads} is not a multiple of "
                                   f"num_key_value_heads={self.num_kv_heads}; check config.json")
        self.cos_sin = cos_sin_cache(config, self.device)
        # The rotary table covers max_position_embeddings (times the factor for dynamic NTK, whose
        # point is to reach past it). The attention op has no sliding window: capping the context
        # at the window keeps every key inside it, where Mistral's windowed attention is full.
        self.max_model_len = min(self.cos_sin.shape[0], config.sliding_window or 1 << 62)
        self.layers: list[dict] = []
        self.fused = None  # the backend's whole-stack op for small steps, if it has one
        self.loaded = False

    # ---- weights ----------------------------------------------------------------------------

    def _expected_shapes(self) -> dict[str, tuple[int, ...]]:
        c = self.config
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        shapes = {"model.embed_tokens.weight": (c.vocab_size, c.hidden_size), "model.norm.weight": (c.hidden_size,)}
        for i in range(c.num_hidden_layers):
            p = f"model.layers.{i}."
            shapes.update({
                p + "input_layernorm.weight": (c.hidden_size,),
                p + "post_attention_layernorm.weight": (c.hidden_size,),
                p + "self_attn.q_proj.weight": (q, c.hidden_size),
                p + "self_attn.k_proj.weight": (kv, c.hidden_size),
                p + "self_attn.v_proj.weight": (kv, c.hidden_size),
                p + "self_attn.o_proj.weight": (c.hidden_size, q),
                p + "mlp.gate_proj.weight": (c.intermediate_size, c.hidden_size),
                p + "mlp.up_proj.weight": (c.intermediate_size, c.hidden_size),
                p + "mlp.down_proj.weight": (c.hidden_size, c.intermediate_size),
            })
        return shapes

    def _check(self, tensors) -> None:
        for name, shape in self._expected_shapes().items():
            if name not in tensors:
                raise ModelFormatError(f"weight {name!r} is missing from the checkpoint; the file is incomplete "
                                       "or belongs to another architecture")
            got = tuple(tensors[name].shape)
            if got != shape:
                raise ModelFormatError(f"weight {name!r} has shape {got} but config.json implies {shape}; "
                                       "the config does not match the weights")
        if not self.config.tie_word_embeddings and "lm_head.weight" not in tensors:
            raise ModelFormatError("lm_head.weight is missing and tie_word_embeddings is false; "
                                   "the checkpoint is incomplete or its config is wrong")

    def load_weights(self, tensors) -> None:
        """tensors: Hugging Face names -> torch.Tensor or loader.QuantTensor."""
        self._check(tensors)
        ops, dt, dev = self.ops, self.dtype, self.device
        vec = lambda name: tensors[name].to(device=dev, dtype=dt)  # noqa: E731
        bias = lambda name: tensors.get(name)  # noqa: E731
        self.embed = ops.prepare_linear(tensors["model.embed_tokens.weight"], dtype=dt, device=dev)
        self.layers = []
        for i in range(self.config.num_hidden_layers):
            a, m = f"model.layers.{i}.self_attn.", f"model.layers.{i}.mlp."
            self.layers.append({
                "input_norm": vec(f"model.layers.{i}.input_layernorm.weight"),
                "post_norm": vec(f"model.layers.{i}.post_attention_layernorm.weight"),
                "qkv": FusedLinear(ops, [tensors[a + n + "_proj.weight"] for n in "qkv"],
                                   [bias(a + n + "_proj.bias") for n in "qkv"], dt, dev),
                "o": FusedLinear(ops, [tensors[a + "o_proj.weight"]], [bias(a + "o_proj.bias")], dt, dev),
                "gate_up": FusedLinear(ops, [tensors[m + "gate_proj.weight"], tensors[m + "up_proj.weight"]],
                                       [bias(m + "gate_proj.bias"), bias(m + "up_proj.bias")], dt, dev),
                "down": FusedLinear(ops, [tensors[m + "down_proj.weight"]], [bias(m + "down_proj.bias")], dt, dev),
            })
        self.norm = vec("model.norm.weight")
        # Hugging Face ties the head to the embedding whenever the config says so, even if the file
        # also carries an lm_head copy.
        tied = self.config.tie_word_embeddings or "lm_head.weight" not in tensors
        self.lm_head = self.embed if tied else ops.prepare_linear(tensors["lm_head.weight"], dtype=dt, device=dev)
        self.fused = ops.fuse_decoder(
            layers=self.layers, final_norm=self.norm, num_heads=self.num_heads, num_kv_heads=self.num_kv_heads,
            head_dim=self.head_dim, eps=self.config.rms_norm_eps, scale=self.scale,
            cos_sin=self.cos_sin) if ops.fuse_decoder else None
        self.loaded = True

    # ---- forward ----------------------------------------------------------------------------

    def _attention(self, layer: dict, x, positions, kv_cache, meta: AttentionMetadata):
        T = x.shape[0]
        q, k, v = layer["qkv"](x)
        q = q.view(T, self.num_heads, self.head_dim)
        k = k.view(T, self.num_kv_heads, self.head_dim)
        v = v.view(T, self.num_kv_heads, self.head_dim)
        q, k = self.ops.rotary(q, k, positions, self.cos_sin)
        k_cache, v_cache = kv_cache
        self.ops.write_kv(k, v, k_cache, v_cache, meta.slot_mapping)
        o = self.ops.attention(q, k_cache, v_cache, meta, self.scale)
        return layer["o"].joint(o.reshape(T, self.num_heads * self.head_dim))

    def _mlp(self, layer: dict, x):
        gate_up, down = layer["gate_up"], layer["down"]
        if self.ops.mlp is not None and len(gate_up.handles) == 1 and len(down.handles) == 1:
            return self.ops.mlp(x, gate_up.handles[0], gate_up.biases[0], down.handles[0], down.biases[0])
        return down.joint(self.ops.silu_and_mul(gate_up.joint(x)))

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, kv_caches: list,
                meta: AttentionMetadata) -> torch.Tensor:
        """input_ids, positions: [T]; returns the final-normed hidden states [T, H]."""
        ops, eps = self.ops, self.config.rms_norm_eps
        if len(kv_caches) != len(self.layers):
            raise ValueError(f"forward got {len(kv_caches)} KV caches for {len(self.layers)} layers; "
                             "allocate them with models.allocate_kv_cache(config, ...)")
        h = ops.embedding(input_ids, self.embed)
        if self.fused is not None:
            out = self.fused(h, positions, kv_caches, meta)
            if out is not None:
                return out
        residual = None
        for layer, kv_cache in zip(self.layers, kv_caches):
            if residual is None:
                residual, x = h, ops.rms_norm(h, layer["input_norm"], eps)
            else:
                x, residual = ops.add_rms_norm(h, residual, layer["input_norm"], eps)
            h = self._attention(layer, x, positions, kv_cache, meta)
            x, residual = ops.add_rms_norm(h, residual, layer["post_norm"], eps)
            h = self._mlp(layer, x)
        if residual is None:
            return ops.rms_norm(h, self.norm, eps)
        return ops.add_rms_norm(h, residual, self.norm, eps)[0]

    __call__ = forward

    @torch.inference_mode()
    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [N, H] (rows the engine wants scored) -> logits [N, V] float32."""
        return self.ops.linear(hidden, self.lm_head, None).float()
