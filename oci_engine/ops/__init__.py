"""The op table: model code calls these functions and never branches on the device.

A backend module (torch_backend, cpu_backend, triton_backend) provides an `Ops` instance; one is
bound at load time by `get_ops(name)`. Signatures (T = new tokens in the step, H = hidden size):

  prepare_linear(weight, dtype=, device=) -> handle   weight: torch.Tensor [out, in] or loader.QuantTensor;
      dtype/device: the model's (a dense backend casts or dequantizes to them); also used for the embedding
  linear(x[T, in], handle, bias|None) -> [T, out]
  embedding(ids[T], handle) -> [T, H]
  rms_norm(x, weight, eps) -> y
  add_rms_norm(x, residual, weight, eps) -> (y, x + residual)     # residual stream update fused
  rotary(q[T, nh, d], k[T, nkv, d], positions[T], cos_sin[max_pos, d]) -> (q, k)  # neox layout
  silu_and_mul(gate_up[T, 2I]) -> [T, I]
  write_kv(k[T, nkv, d], v, k_cache, v_cache, slot_mapping)
  attention(q[T, nh, d], k_cache, v_cache, meta: AttentionMetadata, scale) -> [T, nh, d]
      causal over each sequence's cached prefix + its new tokens (K/V already written)

Optional (None where a backend has none; the model then runs the ops above one by one):
  mlp(x[T, H], gate_up_handle, gate_up_bias|None, down_handle, down_bias|None) -> [T, H]
      down(silu_and_mul(gate_up(x))) of one fused gate/up weight, where a backend can keep the
      intermediates in its own format
  fuse_decoder(layers=, final_norm=, num_heads=, num_kv_heads=, head_dim=, eps=, scale=, cos_sin=)
      -> run | None, called once at load with the Llama model's per-layer weights; run(h[T, H], positions,
      kv_caches, meta) -> final-normed hidden [T, H], or None for a step it does not cover
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from oci_engine.errors import BackendError

BACKENDS = {"torch": "oci_engine.ops.torch_backend", "cpu": "oci_engine.ops.cpu_backend",
            "triton": "oci_engine.ops.triton_backend"}


@dataclass(slots=True, frozen=True)
class Ops:
    name: str
    prepare_linear: Callable
    linear: Callable
    embedding: Callable
    rms_norm: Callable
    add_rms_norm: Callable
    rotary: Callable
    silu_and_mul: Callable
    write_kv: Callable
    attention: Callable
    mlp: Callable | None = None
    fuse_decoder: Callable | None = None


def get_ops(name: str) -> Ops:
    module = BACKENDS.get(name)
    if module is None:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    try:
        return importlib.import_module(module).OPS
    except ImportError as e:
        raise BackendError(f"backend {name!r} is not available here: {e}") from e


def default_backend() -> str:
    import torch

    if torch.cuda.is_available():
        try:
            import triton  # noqa: F401
            return "triton"
        except ImportError:
            return "torch"
    try:
        importlib.import_module("oci_engine.ops.cpu_backend")
        return "cpu"
    except ImportError:
        return "torch"
