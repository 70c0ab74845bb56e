"""KV-cache write: scatter the new tokens' K and V into their paged-cache slots.

The cache of a layer is [num_blocks, block_size, nkv, d]; seen as [num_slots, nkv * d] a token's
K (or V) is one contiguous row, so one program copies one token's row for K and for V.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _write_kv_kernel(k_ptr, v_ptr, k_cache_ptr, v_cache_ptr, slot_ptr,
                     stride_kt, stride_kh, stride_vt, stride_vh,
                     HEAD_DIM: tl.constexpr, ROW: tl.constexpr, BLOCK: tl.constexpr):
    t = tl.program_id(0)
    slot = tl.load(slot_ptr + t).to(tl.int64)
    if slot >= 0:  # negative slots are padding (e.g. unused rows of a CUDA-graph batch)
        offs = tl.arange(0, BLOCK)
        mask = offs < ROW
        head = offs // HEAD_DIM
        dim = offs % HEAD_DIM
        k = tl.load(k_ptr + t * stride_kt + head * stride_kh + dim, mask=mask)
        v = tl.load(v_ptr + t * stride_vt + head * stride_vh + dim, mask=mask)
        tl.store(k_cache_ptr + slot * ROW + offs, k.to(k_cache_ptr.dtype.element_ty), mask=mask)
        tl.store(v_cache_ptr + slot * ROW + offs, v.to(v_cache_ptr.dtype.element_ty), mask=mask)


def write_kv(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
             slot_mapping: torch.Tensor) -> None:
    """k, v: [T, nkv, d] (views with a unit inner stride are fine); caches [num_blocks, block_size, nkv, d]."""
    T, nkv, d = k.shape
    if k.stride(-1) != 1:
        k = k.contiguous()
    if v.stride(-1) != 1:
        v = v.contiguous()
    if T == 0:
        return
    row = nkv * d
    _write_kv_kernel[(T,)](k, v, k_cache, v_cache, slot_mapping,
                           k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                           HEAD_DIM=d, ROW=row, BLOCK=triton.next_power_of_2(row))
