"""Triton op table: the GPU path. Norms, rotary, activation, KV write and paged attention are the
Triton kernels of oci_engine.kernels; the matmuls are cuBLAS through torch.

Chosen automatically when CUDA is available (ops.default_backend). Without a GPU the kernels can
still run, slowly, in Triton's interpreter (TRITON_INTERPRET=1 set before triton is imported):
that is how CI checks this backend end to end on the CPU.
"""
from __future__ import annotations

import os

import torch

from oci_engine.attention_metadata import AttentionMetadata
from oci_engine.errors import BackendError
from oci_engine.ops import Ops, torch_backend
from oci_engine.ops.torch_backend import embedding, linear


def _interpreting() -> bool:
    try:
        from triton import knobs

        return bool(knobs.runtime.interpret)
    except ImportError:  # older triton: the flag is only an environment variable
        return os.environ.get("TRITON_INTERPRET", "0") == "1"


if not torch.cuda.is_available() and not _interpreting():
    raise BackendError("the triton backend needs a CUDA GPU; on this machine use backend 'cpu' or 'torch' "
                       "(or set TRITON_INTERPRET=1 before triton is imported to run its kernels, slowly, "
                       "on the CPU)")

from oci_engine.kernels.paged_decode_attention import paged_decode_attention  # noqa: E402
from oci_engine.kernels.paged_prefill_attention import paged_prefill_attention  # noqa: E402
from oci_engine.kernels.rms_norm import add_rms_norm, rms_norm  # noqa: E402
from oci_engine.kernels.rotary import rotary  # noqa: E402
from oci_engine.kernels.silu_and_mul import silu_and_mul  # noqa: E402
from oci_engine.kernels.write_kv import write_kv  # noqa: E402


def prepare_linear(weight, dtype=torch.bfloat16, device="cuda") -> torch.Tensor:
    """A dense [out, in] weight in the model dtype on the device; GGUF blocks are dequantized here, once.

    Why dequantize at load rather than a dequantizing matmul kernel: the models this engine serves
    (SmolLM2-135M, OpenCodeInterpreter 1.3B-6.7B) fit a GPU in bf16, and then every matmul is a
    cuBLAS tensor-core GEMM whose numerics match the torch reference. A fused dequantizing kernel
    saves memory and, at batch 1 only, weight bandwidth (~3x for Q4_1: 5 bits vs 16 per weight), but
    it needs one verified kernel per GGUF format (Q4_0, Q4_1, Q8_0, the K-quants), loses to cuBLAS
    once a batch makes the GEMM compute-bound, and decode launch overhead is already removed by CUDA
    graphs. Revisit when a model must fit a GPU that only holds it quantized.
    """
    return torch_backend.prepare_linear(weight, dtype=dtype, device=device)


def attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata,
              scale: float) -> torch.Tensor:
    if meta.is_decode:
        # split-K over the context; its grid depends only on shapes, so it is safe inside a CUDA graph
        return paged_decode_attention(q, k_cache, v_cache, meta.seq_lens, meta.block_tables, scale)
    return paged_prefill_attention(q, k_cache, v_cache, meta.query_start_loc, meta.seq_lens,
                                   meta.block_tables, meta.max_query_len, scale)


OPS = Ops(
    name="triton",
    prepare_linear=prepare_linear,
    linear=linear,
    embedding=embedding,
    rms_norm=rms_norm,
    add_rms_norm=add_rms_norm,
    rotary=rotary,
    silu_and_mul=silu_and_mul,
    write_kv=write_kv,
    attention=attention,
)
