"""The torch backend's paged attention against a plain per-token softmax over each sequence's
contiguous keys, for prefill over a cached prefix, decode, mixed batches, GQA and bf16."""
from __future__ import annotations

import math
import random

import pytest
import torch

from oci_engine.attention_metadata import AttentionMetadata
from oci_engine.ops.torch_backend import OPS
from paged_runner import single_torch_thread  # noqa: F401 (autouse)


def _scatter(seqs_kv, block_size, num_blocks, nkv, d, dtype, seed):
    """Write every sequence's contiguous K/V into shuffled blocks; return caches and block tables."""
    free = list(range(num_blocks))
    random.Random(seed).shuffle(free)
    kc = torch.randn(num_blocks, block_size, nkv, d).to(dtype)  # garbage where nothing was written
    vc = torch.randn(num_blocks, block_size, nkv, d).to(dtype)
    tables = []
    for k, v in seqs_kv:
        n = math.ceil(k.shape[0] / block_size)
        blocks = [free.pop() for _ in range(n)]
        slots = torch.tensor([blocks[j // block_size] * block_size + j % block_size for j in range(k.shape[0])])
        OPS.write_kv(k, v, kc, vc, slots)
        tables.append(blocks)
    width = max(len(t) for t in tables)
    table = torch.zeros(len(tables), width, dtype=torch.int32)
    for i, t in enumerate(tables):
        table[i, :len(t)] = torch.tensor(t)
    return kc, vc, table


def _naive(q, k, v, scale):
    """q [n, nh, d] are the last n positions of a context k, v [L, nkv, d]."""
    n, nh, _ = q.shape
    L, nkv, _ = k.shape
    out = torch.empty(n, nh, q.shape[-1])
    for j in range(n):
        pos = L - n + j
        for h in range(nh):
            kh, vh = k[: pos + 1, h // (nh // nkv)].double(), v[: pos + 1, h // (nh // nkv)].double()
            w = torch.softmax(kh @ q[j, h].double() * scale, dim=0)
            out[j, h] = (w[:, None] * vh).sum(0).float()
    return out


@pytest.mark.parametrize("nh,nkv", [(4, 4), (8, 2), (6, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", ["prefill", "decode", "mixed"])
def test_paged_attention_matches_naive(nh, nkv, dtype, kind):
    g = torch.Generator().manual_seed(nh * 10 + nkv)
    d, block_size = 16, 4
    ctx = {"prefill": [9, 1, 23], "decode": [1, 7, 30, 16], "mixed": [12, 5, 17, 1]}[kind]
    new = {"prefill": [9, 1, 6], "decode": [1, 1, 1, 1], "mixed": [4, 1, 17, 1]}[kind]
    seqs = [(torch.randn(L, nkv, d, generator=g).to(dtype), torch.randn(L, nkv, d, generator=g).to(dtype))
            for L in ctx]
    kc, vc, table = _scatter(seqs, block_size, 40, nkv, d, dtype, seed=len(ctx))
    q = torch.randn(sum(new), nh, d, generator=g).to(dtype)
    starts = [0]
    for n in new:
        starts.append(starts[-1] + n)
    meta = AttentionMetadata(
        slot_mapping=torch.zeros(sum(new), dtype=torch.int64), query_start_loc=torch.tensor(starts, dtype=torch.int32),
        seq_lens=torch.tensor(ctx, dtype=torch.int32), block_tables=table, max_query_len=max(new),
        max_seq_len=max(ctx), is_decode=all(n == 1 for n in new), query_start_loc_list=starts, seq_lens_list=ctx)
    scale = d ** -0.5
    out = OPS.attention(q, kc, vc, meta, scale)
    assert out.shape == q.shape and out.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for i, (k, v) in enumerate(seqs):
        ref = _naive(q[starts[i]:starts[i + 1]].float(), k.float(), v.float(), scale)
        assert (out[starts[i]:starts[i + 1]].float() - ref).abs().max().item() <= tol
    if meta.is_decode:
        # the vectorised decode path and the per-sequence path agree
        meta.is_decode = False
        assert (OPS.attention(q, kc, vc, meta, scale).float() - out.float()).abs().max().item() <= tol


def test_write_kv_lands_in_the_mapped_slots():
    kc, vc = torch.zeros(3, 4, 2, 8), torch.zeros(3, 4, 2, 8)
    k, v = torch.randn(3, 2, 8), torch.randn(3, 2, 8)
    OPS.write_kv(k, v, kc, vc, torch.tensor([9, 0, 5]))
    assert torch.equal(kc[2, 1], k[0]) and torch.equal(kc[0, 0], k[1]) and torch.equal(vc[1, 1], v[2])
    assert int((kc != 0).any(-1).any(-1).sum()) == 3


def test_padding_rows_write_nothing_and_attend_to_nothing():
    """Bucketed decode pads a batch with rows of slot -1 and seq_len 0 (as the Triton path does)."""
    kc, vc = torch.zeros(4, 4, 1, 8), torch.zeros(4, 4, 1, 8)
    k, v = torch.randn(2, 1, 8), torch.randn(2, 1, 8)
    OPS.write_kv(k, v, kc, vc, torch.tensor([6, -1]))
    assert torch.equal(kc[1, 2], k[0]) and int((kc != 0).any(-1).any(-1).sum()) == 1
    meta = AttentionMetadata(
        slot_mapping=torch.tensor([6, -1]), query_start_loc=torch.tensor([0, 1, 2], dtype=torch.int32),
        seq_lens=torch.tensor([7, 0], dtype=torch.int32), block_tables=torch.tensor([[3, 1], [0, 0]], dtype=torch.int32),
        max_query_len=1, max_seq_len=7, is_decode=True)
    out = OPS.attention(torch.randn(2, 2, 8), kc, vc, meta, 0.3)
    assert torch.isfinite(out).all() and torch.equal(out[1], torch.zeros(2, 8))
