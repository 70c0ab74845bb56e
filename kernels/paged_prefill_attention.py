"""Paged prefill attention: causal flash attention of a flat batch of new tokens over a paged KV cache.

Several sequences of different lengths share one flat batch (query_start_loc marks them). Each
sequence's new tokens attend to its cached prefix and to themselves; both live in the paged cache
(write_kv runs first), so one code path serves a fresh prompt, a prompt that hits the prefix cache,
and a chunk of a long prompt. One program owns BLOCK_M query tokens of one sequence and one query
head; it walks the keys BLOCK_N at a time with an online softmax (running max and sum, base-2
exponentials), translating each key position to its physical slot through the block table, and
stops at the causal diagonal of its last query row.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl


@triton.jit
def _attend_tile(acc, m_i, l_i, q, q_pos, start, end, k_cache_ptr, v_cache_ptr, table, kv_head, scale_log2,
                 stride_cb, stride_cs, stride_ch, offs_d, d_mask,
                 BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr, IEEE: tl.constexpr):
    """One BLOCK_N-key step of the online softmax. Unmasked tiles (every key visible to every row,
    all inside the context) skip the bounds and causal masks."""
    offs_n = start + tl.arange(0, BLOCK_N)
    if MASKED:
        n_mask = offs_n < end
        block = tl.load(table + offs_n // BLOCK_SIZE, mask=n_mask, other=0).to(tl.int64)
    else:
        n_mask = offs_n >= 0
        block = tl.load(table + offs_n // BLOCK_SIZE).to(tl.int64)
    kv_off = block * stride_cb + (offs_n % BLOCK_SIZE) * stride_cs + kv_head * stride_ch
    k = tl.load(k_cache_ptr + kv_off[None, :] + offs_d[:, None], mask=n_mask[None, :] & d_mask[:, None], other=0.0)
    if IEEE:
        qk = tl.dot(q, k, input_precision="ieee")
    else:
        qk = tl.dot(q, k)
    qk = qk * scale_log2
    if MASKED:
        # the first key of every tile row is visible (q_pos >= 0), so m_new stays finite
        qk = tl.where((offs_n[None, :] <= q_pos[:, None]) & n_mask[None, :], qk, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(qk, 1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(qk - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    v = tl.load(v_cache_ptr + kv_off[:, None] + offs_d[None, :], mask=n_mask[:, None] & d_mask[None, :], other=0.0)
    if IEEE:
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
    else:
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return acc, m_new, l_i


@triton.jit
def _paged_prefill_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, out_ptr,
    query_start_loc_ptr, seq_lens_ptr, block_tables_ptr,
    scale_log2,
    stride_qt, stride_qh, stride_ot, stride_oh,
    stride_cb, stride_cs, stride_ch, stride_bt,
    GROUP: tl.constexpr, BLOCK_SIZE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, IEEE: tl.constexpr,
):
    m_block = tl.program_id(0)
    seq = tl.program_id(1)
    head = tl.program_id(2)
    kv_head = head // GROUP
    q_start = tl.load(query_start_loc_ptr + seq)
    q_len = tl.load(query_start_loc_ptr + seq + 1) - q_start
    # the grid is sized for the longest sequence: shorter ones leave trailing programs idle
    if m_block * BLOCK_M < q_len:
        seq_len = tl.load(seq_lens_ptr + seq)
        prefix = seq_len - q_len
        offs_m = m_block * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        m_mask = offs_m < q_len
        d_mask = offs_d < HEAD_DIM
        q_rows = (q_start + offs_m).to(tl.int64)
        q = tl.load(q_ptr + q_rows[:, None] * stride_qt + head * stride_qh + offs_d[None, :],
                    mask=m_mask[:, None] & d_mask[None, :], other=0.0)
        q_pos = prefix + offs_m

        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        table = block_tables_ptr + seq.to(tl.int64) * stride_bt
        # keys up to the first row's position are visible to every row: whole tiles of them need no mask
        full_end = (prefix + m_block * BLOCK_M + 1) // BLOCK_N * BLOCK_N
        # keys past the last row's position are masked for every row: stop there
        end = prefix + tl.minimum((m_block + 1) * BLOCK_M, q_len)
        for start in range(0, full_end, BLOCK_N):
            acc, m_i, l_i = _attend_tile(acc, m_i, l_i, q, q_pos, start, end, k_cache_ptr, v_cache_ptr, table,
                                         kv_head, scale_log2, stride_cb, stride_cs, stride_ch, offs_d, d_mask,
                                         BLOCK_SIZE, BLOCK_N, False, IEEE)
        for start in range(full_end, end, BLOCK_N):
            acc, m_i, l_i = _attend_tile(acc, m_i, l_i, q, q_pos, start, end, k_cache_ptr, v_cache_ptr, table,
                                         kv_head, scale_log2, stride_cb, stride_cs, stride_ch, offs_d, d_mask,
                                         BLOCK_SIZE, BLOCK_N, True, IEEE)
        acc = acc / l_i[:, None]
        tl.store(out_ptr + q_rows[:, None] * stride_ot + head * stride_oh + offs_d[None, :],
                 acc.to(out_ptr.dtype.element_ty), mask=m_mask[:, None] & d_mask[None, :])


def check_paged_shapes(q, k_cache, v_cache) -> None:
    """Shape errors a caller can make, caught here rather than as wrong numbers from a kernel."""
    if k_cache.shape != v_cache.shape or k_cache.stride() != v_cache.stride():
        raise ValueError(f"k_cache {tuple(k_cache.shape)} and v_cache {tuple(v_cache.shape)} must have the same "
                         "shape and layout [num_blocks, block_size, num_kv_heads, head_dim]")
    if k_cache.stride(-1) != 1:
        raise ValueError("the KV cache's head_dim must be contiguous")
    nh, d = q.shape[1], q.shape[2]
    if d != k_cache.shape[3] or nh % k_cache.shape[2]:
        raise ValueError(f"q has {nh} heads of {d}; the cache has {k_cache.shape[2]} kv heads of {k_cache.shape[3]}: "
                         "the head dims must match and the kv heads must divide the query heads")


def prefill_tiles(max_query_len: int, head_dim: int) -> tuple[int, int, int, int]:
    """(block_m, block_n, num_warps, num_stages) for the GPU.

    Long prompts take the 128 x 64 tiles that Triton's fused-attention tutorial runs on Hopper; a
    short chunk (a few new tokens over a long cached prefix) gets a query tile just big enough.
    Not yet tuned on a GPU: `python -m bench gpu --sweep-tiles` measures the alternatives.
    """
    if max_query_len >= 128:
        return 128, 64, 8 if head_dim > 64 else 4, 3
    return max(16, triton.next_power_of_2(max_query_len)), 64 if head_dim <= 64 else 32, 4, 2


def paged_prefill_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                            query_start_loc: torch.Tensor, seq_lens: torch.Tensor,
                            block_tables: torch.Tensor, max_query_len: int, scale: float,
                            out: torch.Tensor | None = None, block_m: int | None = None,
                            block_n: int | None = None, num_warps: int | None = None,
                            num_stages: int | None = None) -> torch.Tensor:
    """q [T, nh, d] -> [T, nh, d]. K/V of the new tokens must already be in the cache."""
    T, nh, d = q.shape
    check_paged_shapes(q, k_cache, v_cache)
    nkv = k_cache.shape[2]
    if q.stride(-1) != 1:
        q = q.contiguous()
    out = torch.empty_like(q) if out is None else out
    if T == 0:
        return out
    tiles = prefill_tiles(max_query_len, d)
    block_m, block_n = block_m or tiles[0], block_n or tiles[1]
    grid = (triton.cdiv(max_query_len, block_m), seq_lens.shape[0], nh)
    _paged_prefill_kernel[grid](
        q, k_cache, v_cache, out, query_start_loc, seq_lens, block_tables,
        scale * math.log2(math.e),
        q.stride(0), q.stride(1), out.stride(0), out.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), block_tables.stride(0),
        GROUP=nh // nkv, BLOCK_SIZE=k_cache.shape[1], HEAD_DIM=d, BLOCK_D=triton.next_power_of_2(d),
        BLOCK_M=block_m, BLOCK_N=block_n, IEEE=q.dtype == torch.float32,
        num_warps=num_warps or tiles[2], num_stages=num_stages or tiles[3],
    )
    return out
