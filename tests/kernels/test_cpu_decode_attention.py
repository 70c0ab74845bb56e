"""Decode attention (one query token per sequence) of the `cpu` backend against the torch reference,
on every ISA path: head sizes the AVX-512 kernel takes (16, 32, 64, 128) and one it leaves to the
portable kernel (24), GQA groups of 1-8, block sizes below, at and above 16 keys, contexts that end
inside a 16-key group, contexts long enough to be cut into parts (csrc/attention_items.h), and
both KV cache dtypes. Slots no sequence owns hold NaN, so a read past a
context shows in the output."""
from __future__ import annotations

import pytest
import torch
from cpu_isa import ISAS, forced_isa
from paged_batch import make_paged_batch

from oci_engine.attention_metadata import AttentionMetadata
from oci_engine.ops import cpu_backend as cpu
from oci_engine.ops import torch_backend as ref


@pytest.fixture(params=ISAS, autouse=True)
def isa(request):
    with forced_isa(request.param):
        yield request.param


CASES = [
    # prefix_lens (each sequence decodes one new token), nh, nkv, d, block_size
    ([0, 15, 16, 31, 100], 9, 3, 64, 16),   # SmolLM2's heads: contexts 1, 16, 17, 32, 101
    ([7, 40, 255], 4, 4, 16, 8),            # no GQA, blocks of 8 keys
    ([33, 2], 8, 1, 32, 32),                # MQA, group of 8, blocks of 32 keys
    ([63, 64, 200], 8, 2, 128, 16),         # head_dim 128, group of 4 (two PV row chunks of 2)
    ([12, 50], 6, 2, 24, 16),               # head_dim 24: the portable kernel everywhere
    ([1000], 9, 3, 64, 16),                 # a long context: scores buffer grows
    ([1100, 40], 9, 3, 64, 16),             # over 1024 keys: attended in two parts, then merged
    ([2100], 6, 2, 24, 8),                  # three parts, the portable kernel
]


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("prefix,nh,nkv,d,bs", CASES)
def test_decode_attention_matches_reference(prefix, nh, nkv, d, bs, cache_dtype):
    b = make_paged_batch(prefix, [1] * len(prefix), num_heads=nh, num_kv_heads=nkv, head_dim=d, block_size=bs,
                         seed=sum(prefix) + d)
    k_cache, v_cache = b.k_cache.to(cache_dtype), b.v_cache.to(cache_dtype)
    meta = AttentionMetadata(
        slot_mapping=b.slot_mapping, query_start_loc=b.query_start_loc, seq_lens=b.seq_lens,
        block_tables=b.block_tables, max_query_len=1, max_seq_len=int(b.seq_lens.max()), is_decode=True)
    q = b.q * 3  # sharper softmax: a wrong max or a missed key moves the output
    out = cpu.attention(q, k_cache, v_cache, meta, d ** -0.5)
    expect = ref.attention(q, k_cache.float().nan_to_num(0.0), v_cache.float().nan_to_num(0.0), meta, d ** -0.5)
    assert not out.isnan().any()
    torch.testing.assert_close(out, expect, rtol=2e-5, atol=2e-5)
