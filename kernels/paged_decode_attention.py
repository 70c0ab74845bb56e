"""Paged decode attention: one new token per sequence over a long paged context, split over the sequence.

A decode step has only B x nkv (sequence, kv head) pairs: too few programs to fill a GPU when each
walks a long context alone. Stage one splits every context into fixed-size partitions, one program
per (sequence, kv head, partition); the program serves all GROUP query heads that share the kv head
(GQA), so each K/V tile is read once, and writes its partition's normalised output and log-sum-exp.
Stage two merges a sequence's partitions by their log-sum-exps.

The number of partitions follows the block table's width, not the sequences' current lengths, so a
captured CUDA graph stays valid as the sequences grow; partitions past a sequence's end finish at once.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from oci_engine.kernels.paged_prefill_attention import check_paged_shapes


@triton.jit
def _decode_partition_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, seq_lens_ptr, block_tables_ptr, part_out_ptr, part_lse_ptr, out_ptr,
    scale_log2,
    stride_qt, stride_qh, stride_cb, stride_cs, stride_ch, stride_bt, stride_ot, stride_oh,
    NUM_HEADS: tl.constexpr, GROUP: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, PARTITION: tl.constexpr,
    NUM_SPLITS: tl.constexpr, IEEE: tl.constexpr,
):
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    seq_len = tl.load(seq_lens_ptr + seq)
    start = split * PARTITION
    end = tl.minimum(seq_len, start + PARTITION)

    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, BLOCK_D)
    g_mask = offs_g < GROUP
    d_mask = offs_d < HEAD_DIM
    heads = kv_head * GROUP + offs_g
    # rows past GROUP pad the query tile up to tl.dot's minimum of 16 rows
    q = tl.load(q_ptr + seq.to(tl.int64) * stride_qt + heads[:, None] * stride_qh + offs_d[None, :],
                mask=g_mask[:, None] & d_mask[None, :], other=0.0)

    m_i = tl.full([BLOCK_G], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_G], dtype=tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], dtype=tl.float32)
    table = block_tables_ptr + seq.to(tl.int64) * stride_bt
    for n0 in range(start, end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_mask = offs_n < end
        block = tl.load(table + offs_n // BLOCK_SIZE, mask=n_mask, other=0).to(tl.int64)
        kv_off = block * stride_cb + (offs_n % BLOCK_SIZE) * stride_cs + kv_head * stride_ch
        k = tl.load(k_cache_ptr + kv_off[None, :] + offs_d[:, None],
                    mask=n_mask[None, :] & d_mask[:, None], other=0.0)
        if IEEE:
            qk = tl.dot(q, k, input_precision="ieee")
        else:
            qk = tl.dot(q, k)
        qk = tl.where(n_mask[None, :], qk * scale_log2, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(qk - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_cache_ptr + kv_off[:, None] + offs_d[None, :],
                    mask=n_mask[:, None] & d_mask[None, :], other=0.0)
        if IEEE:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new

    # an empty partition (past the sequence's end) reports lse = -inf and weighs nothing in stage two
    has_keys = l_i > 0
    safe_l = tl.where(has_keys, l_i, 1.0)
    if NUM_SPLITS == 1:
        # the whole context fits one partition: this is the answer, and stage two is skipped
        tl.store(out_ptr + seq.to(tl.int64) * stride_ot + heads[:, None] * stride_oh + offs_d[None, :],
                 (acc / safe_l[:, None]).to(out_ptr.dtype.element_ty), mask=g_mask[:, None] & d_mask[None, :])
    else:
        lse = tl.where(has_keys, m_i + tl.log2(safe_l), float("-inf"))
        row = (seq * NUM_HEADS + heads).to(tl.int64) * NUM_SPLITS + split
        tl.store(part_lse_ptr + row, lse, mask=g_mask)
        tl.store(part_out_ptr + row[:, None] * HEAD_DIM + offs_d[None, :], acc / safe_l[:, None],
                 mask=g_mask[:, None] & d_mask[None, :])


@triton.jit
def _decode_reduce_kernel(
    part_out_ptr, part_lse_ptr, out_ptr, stride_ot, stride_oh,
    NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    NUM_SPLITS: tl.constexpr, BLOCK_S: tl.constexpr,
):
    seq = tl.program_id(0)
    head = tl.program_id(1)
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    s_mask = offs_s < NUM_SPLITS
    d_mask = offs_d < HEAD_DIM
    rows = (seq * NUM_HEADS + head).to(tl.int64) * NUM_SPLITS + offs_s
    lse = tl.load(part_lse_ptr + rows, mask=s_mask, other=float("-inf"))
    m = tl.max(lse, 0)
    # a sequence with no context at all (a padding row of a CUDA-graph batch) yields zeros, not NaN
    m = tl.where(m == float("-inf"), 0.0, m)
    w = tl.exp2(lse - m)
    den = tl.sum(w, 0)
    part = tl.load(part_out_ptr + rows[:, None] * HEAD_DIM + offs_d[None, :],
                   mask=s_mask[:, None] & d_mask[None, :], other=0.0)
    o = tl.sum(part * w[:, None], 0) / tl.where(den > 0, den, 1.0)
    tl.store(out_ptr + seq.to(tl.int64) * stride_ot + head * stride_oh + offs_d,
             o.to(out_ptr.dtype.element_ty), mask=d_mask)


def decode_num_splits(block_tables: torch.Tensor, block_size: int, partition: int) -> int:
    return triton.cdiv(block_tables.shape[1] * block_size, partition)


def paged_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                           seq_lens: torch.Tensor, block_tables: torch.Tensor, scale: float,
                           out: torch.Tensor | None = None, partition: int = 256,
                           block_n: int | None = None) -> torch.Tensor:
    """q [B, nh, d] (one new token per sequence) -> [B, nh, d]; the token's K/V is already in the cache."""
    B, nh, d = q.shape
    check_paged_shapes(q, k_cache, v_cache)
    nkv, block_size = k_cache.shape[2], k_cache.shape[1]
    if q.stride(-1) != 1:
        q = q.contiguous()
    out = torch.empty_like(q) if out is None else out
    if B == 0:
        return out
    group = nh // nkv
    block_n = block_n or min(64 if d <= 64 else 32, partition)
    if partition % block_n:
        raise ValueError(f"partition ({partition}) must be a multiple of block_n ({block_n})")
    splits = decode_num_splits(block_tables, block_size, partition)
    part_out = torch.empty(B, nh, splits, d, dtype=torch.float32, device=q.device)
    part_lse = torch.empty(B, nh, splits, dtype=torch.float32, device=q.device)
    block_d = triton.next_power_of_2(d)
    _decode_partition_kernel[(B, nkv, splits)](
        q, k_cache, v_cache, seq_lens, block_tables, part_out, part_lse, out,
        scale * math.log2(math.e),
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        block_tables.stride(0), out.stride(0), out.stride(1),
        NUM_HEADS=nh, GROUP=group, BLOCK_G=max(16, triton.next_power_of_2(group)), BLOCK_SIZE=block_size,
        HEAD_DIM=d, BLOCK_D=block_d, BLOCK_N=block_n, PARTITION=partition, NUM_SPLITS=splits,
        IEEE=q.dtype == torch.float32,
    )
    if splits == 1:
        return out
    _decode_reduce_kernel[(B, nh)](
        part_out, part_lse, out, out.stride(0), out.stride(1),
        NUM_HEADS=nh, HEAD_DIM=d, BLOCK_D=block_d, NUM_SPLITS=splits,
        BLOCK_S=triton.next_power_of_2(splits),
    )
    return out
