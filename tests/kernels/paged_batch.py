"""Random flat batches over a paged KV cache for the kernel tests.

Blocks are handed out in shuffled order (a sequence's blocks are never contiguous) and every cache
slot no sequence owns holds NaN, so a kernel that reads past a context poisons its output.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# Interpreted on the CPU, compiled on a GPU when there is one: the same tests serve both.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class PagedBatch:
    q: torch.Tensor  # [T, nh, d]
    k_new: torch.Tensor  # [T, nkv, d]: the new tokens' K, already written to the cache
    v_new: torch.Tensor
    k_cache: torch.Tensor  # [num_blocks, block_size, nkv, d]
    v_cache: torch.Tensor
    slot_mapping: torch.Tensor  # [T] int64
    query_start_loc: torch.Tensor  # [B+1] int32
    seq_lens: torch.Tensor  # [B] int32
    block_tables: torch.Tensor  # [B, max_blocks] int32
    max_query_len: int


def make_paged_batch(prefix_lens, new_lens, *, num_heads, num_kv_heads, head_dim, block_size,
                     dtype=torch.float32, device=DEVICE, extra_blocks=3, seed=0) -> PagedBatch:
    g = torch.Generator(device="cpu").manual_seed(seed)
    seq_lens = [p + n for p, n in zip(prefix_lens, new_lens)]
    blocks_per_seq = [-(-s // block_size) for s in seq_lens]
    num_blocks = sum(blocks_per_seq) + extra_blocks
    order = torch.randperm(num_blocks, generator=g, device="cpu").tolist()
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    k_cache = torch.full(shape, float("nan"), device="cpu")
    v_cache = torch.full(shape, float("nan"), device="cpu")
    width = max(max(blocks_per_seq), 1)
    block_tables = torch.zeros(len(seq_lens), width, dtype=torch.int32, device="cpu")
    slots = []
    for i, (prefix, seq_len) in enumerate(zip(prefix_lens, seq_lens)):
        table = [order.pop() for _ in range(blocks_per_seq[i])]
        block_tables[i, :len(table)] = torch.tensor(table, dtype=torch.int32, device="cpu")
        flat = [table[j // block_size] * block_size + j % block_size for j in range(seq_len)]
        for cache in (k_cache, v_cache):
            cache.view(-1, num_kv_heads, head_dim)[flat[:prefix]] = torch.randn(
                prefix, num_kv_heads, head_dim, generator=g, device="cpu")
        slots += flat[prefix:]
    T = sum(new_lens)
    k_new = torch.randn(T, num_kv_heads, head_dim, generator=g, device="cpu")
    v_new = torch.randn(T, num_kv_heads, head_dim, generator=g, device="cpu")
    slot_mapping = torch.tensor(slots, dtype=torch.int64, device="cpu")
    k_cache.view(-1, num_kv_heads, head_dim)[slot_mapping] = k_new
    v_cache.view(-1, num_kv_heads, head_dim)[slot_mapping] = v_new
    starts = [0]
    for n in new_lens:
        starts.append(starts[-1] + n)
    to = dict(device=device)
    return PagedBatch(
        q=torch.randn(T, num_heads, head_dim, generator=g, device="cpu").to(dtype=dtype, **to),
        k_new=k_new.to(dtype=dtype, **to), v_new=v_new.to(dtype=dtype, **to),
        k_cache=k_cache.to(dtype=dtype, **to), v_cache=v_cache.to(dtype=dtype, **to),
        slot_mapping=slot_mapping.to(**to),
        query_start_loc=torch.tensor(starts, dtype=torch.int32, device=device),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=device),
        block_tables=block_tables.to(**to),
        max_query_len=max(new_lens),
    )
