"""Paged attention and KV-write kernels against the torch references (Triton interpreter on the CPU).

Every case is a flat batch of several sequences with lengths that are not multiples of the block
size, over a cache whose unowned slots hold NaN. The sweep crosses head dims 64/128, GQA ratios
1/3/4/8, block sizes 16/32 and empty/non-empty cached prefixes; tiles narrower and wider than a
block exercise tiles inside one block and tiles spanning blocks.
"""
import math

import pytest
import torch
from paged_batch import DEVICE, make_paged_batch

from oci_engine.kernels.paged_decode_attention import paged_decode_attention
from oci_engine.kernels.paged_prefill_attention import paged_prefill_attention
from oci_engine.kernels.reference import paged_attention_ref, write_kv_ref
from oci_engine.kernels.write_kv import write_kv

TOL = 1e-4


@pytest.fixture(autouse=True)
def _on_test_device():
    """Tensors made in a test land on the GPU when there is one (compiled kernels), else the CPU."""
    with torch.device(DEVICE):
        yield
HEAD_DIMS = [64, 128]
GROUPS = [1, 3, 4, 8]
BLOCK_SIZES = [16, 32]


def _check(out, ref):
    assert out.shape == ref.shape
    assert torch.isfinite(out).all(), "kernel read a cache slot outside a sequence's context"
    err = (out.float() - ref.float()).abs().max().item()
    assert err <= TOL, f"max abs error {err:.2e} > {TOL}"


# new tokens per sequence: a long prompt, a single token (a decode mixed into the batch), a mid one
NEW_LENS = [37, 1, 19]
PREFIXES = {"no_prefix": [0, 0, 0], "cached_prefix": [45, 18, 32]}


@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("block_size", BLOCK_SIZES)
@pytest.mark.parametrize("prefix", list(PREFIXES))
def test_prefill_matches_reference(head_dim, group, block_size, prefix):
    nkv = 2 if group < 4 else 1
    b = make_paged_batch(PREFIXES[prefix], NEW_LENS, num_heads=nkv * group, num_kv_heads=nkv,
                         head_dim=head_dim, block_size=block_size, seed=head_dim + group + block_size)
    scale = head_dim ** -0.5
    # 16-wide tiles: several query tiles per sequence, and key tiles inside (bs 32) or across (bs 16) blocks
    out = paged_prefill_attention(b.q, b.k_cache, b.v_cache, b.query_start_loc, b.seq_lens,
                                  b.block_tables, b.max_query_len, scale, block_m=16,
                                  block_n=16 if block_size == 32 else 32)
    _check(out, paged_attention_ref(b.q, b.k_cache, b.v_cache, b.query_start_loc, b.seq_lens,
                                    b.block_tables, scale))


@pytest.mark.parametrize("head_dim", HEAD_DIMS)
def test_prefill_default_tiles_and_empty_sequence(head_dim):
    """The launcher's own tile sizes, and a sequence with no new tokens in the middle of the batch."""
    b = make_paged_batch([3, 40, 0, 70], [70, 0, 9, 2], num_heads=6, num_kv_heads=2, head_dim=head_dim,
                         block_size=16, seed=7)
    out = paged_prefill_attention(b.q, b.k_cache, b.v_cache, b.query_start_loc, b.seq_lens,
                                  b.block_tables, b.max_query_len, 0.1)
    _check(out, paged_attention_ref(b.q, b.k_cache, b.v_cache, b.query_start_loc, b.seq_lens,
                                    b.block_tables, 0.1))


@pytest.mark.parametrize("block_n", [16, 32])
def test_prefill_every_prefix_alignment(block_n):
    """Cached prefixes of every length modulo the tiles: the causal diagonal lands at every offset
    of a key tile, so an off-by-one in where masking starts or stops shows up."""
    prefixes = list(range(0, 2 * block_n + 2))
    new_lens = [1 + (7 * i) % 20 for i in range(len(prefixes))]
    b = make_paged_batch(prefixes, new_lens, num_heads=2, num_kv_heads=1, head_dim=64, block_size=16, seed=17)
    out = paged_prefill_attention(b.q, b.k_cache, b.v_cache, b.query_start_loc, b.seq_lens, b.block_tables,
                                  b.max_query_len, 0.125, block_m=16, block_n=block_n)
    _check(out, paged_attention_ref(b.q, b.k_cache, b.v_cache, b.query_start_loc, b.seq_lens,
                                    b.block_tables, 0.125))


def test_prefill_is_causal():
    """Changing a later token's K/V leaves every earlier token's output unchanged."""
    b = make_paged_batch([0], [40], num_heads=2, num_kv_heads=2, head_dim=64, block_size=16, seed=3)
    args = (b.query_start_loc, b.seq_lens, b.block_tables, b.max_query_len, 0.125)
    before = paged_prefill_attention(b.q, b.k_cache, b.v_cache, *args)
    last = b.slot_mapping[-1]
    b.k_cache.view(-1, 2, 64)[last] += 5.0
    b.v_cache.view(-1, 2, 64)[last] += 5.0
    after = paged_prefill_attention(b.q, b.k_cache, b.v_cache, *args)
    assert torch.equal(before[:-1], after[:-1])
    assert not torch.allclose(before[-1], after[-1])


# context lengths: shorter than one partition, one past a partition boundary, several partitions
DECODE_CONTEXTS = {"no_prefix": [1, 1, 1], "cached_prefix": [5, 65, 150]}


@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("block_size", BLOCK_SIZES)
@pytest.mark.parametrize("context", list(DECODE_CONTEXTS))
def test_decode_matches_reference(head_dim, group, block_size, context):
    nkv = 2 if group < 4 else 1
    seq_lens = DECODE_CONTEXTS[context]
    b = make_paged_batch([s - 1 for s in seq_lens], [1] * len(seq_lens), num_heads=nkv * group,
                         num_kv_heads=nkv, head_dim=head_dim, block_size=block_size,
                         seed=head_dim * group + block_size)
    scale = head_dim ** -0.5
    # 64-token partitions split the long contexts; 16-wide key tiles cross blocks of 16
    out = paged_decode_attention(b.q, b.k_cache, b.v_cache, b.seq_lens, b.block_tables, scale,
                                 partition=64, block_n=32 if block_size == 16 else 16)
    _check(out, paged_attention_ref(b.q, b.k_cache, b.v_cache, b.query_start_loc, b.seq_lens,
                                    b.block_tables, scale))


@pytest.mark.parametrize("block_size", BLOCK_SIZES)
def test_decode_single_partition(block_size):
    """Contexts that fit one partition: the first pass writes the answer and no reduction runs."""
    b = make_paged_batch([4, 64, 149], [1, 1, 1], num_heads=8, num_kv_heads=2, head_dim=128, block_size=block_size,
                         seed=19)
    out = paged_decode_attention(b.q, b.k_cache, b.v_cache, b.seq_lens, b.block_tables, 0.09, partition=256,
                                 block_n=32)
    _check(out, paged_attention_ref(b.q, b.k_cache, b.v_cache, b.query_start_loc, b.seq_lens,
                                    b.block_tables, 0.09))


def test_decode_default_partition_long_context():
    """The launcher's defaults on contexts longer than one default partition (256 tokens)."""
    b = make_paged_batch([300, 511, 17], [1, 1, 1], num_heads=8, num_kv_heads=2, head_dim=64, block_size=32,
                         seed=11)
    out = paged_decode_attention(b.q, b.k_cache, b.v_cache, b.seq_lens, b.block_tables, 0.125)
    _check(out, paged_attention_ref(b.q, b.k_cache, b.v_cache, b.query_start_loc, b.seq_lens,
                                    b.block_tables, 0.125))


@pytest.mark.parametrize("partition", [32, 256])  # several partitions, and one (no reduction pass)
def test_decode_padding_row_yields_zeros(partition):
    """A row with no context (how a CUDA-graph batch is padded) gives zeros, not NaN, and leaves others alone."""
    b = make_paged_batch([20, 33], [1, 1], num_heads=4, num_kv_heads=2, head_dim=64, block_size=16, seed=5)
    ref = paged_attention_ref(b.q, b.k_cache, b.v_cache, b.query_start_loc, b.seq_lens, b.block_tables, 0.125)
    q = torch.cat([b.q, torch.randn(1, 4, 64)])
    seq_lens = torch.cat([b.seq_lens, torch.zeros(1, dtype=torch.int32)])
    tables = torch.cat([b.block_tables, torch.zeros(1, b.block_tables.shape[1], dtype=torch.int32)])
    out = paged_decode_attention(q, b.k_cache, b.v_cache, seq_lens, tables, 0.125, partition=partition,
                                 block_n=16)
    _check(out[:2], ref)
    assert torch.equal(out[2], torch.zeros(4, 64))


def test_decode_agrees_with_prefill_kernel():
    """The two attention kernels give the same answer for one new token per sequence."""
    b = make_paged_batch([90, 7], [1, 1], num_heads=3, num_kv_heads=1, head_dim=64, block_size=16, seed=9)
    dec = paged_decode_attention(b.q, b.k_cache, b.v_cache, b.seq_lens, b.block_tables, 0.125, partition=32,
                                 block_n=16)
    pre = paged_prefill_attention(b.q, b.k_cache, b.v_cache, b.query_start_loc, b.seq_lens, b.block_tables,
                                  1, 0.125)
    assert (dec - pre).abs().max().item() <= TOL


@pytest.mark.parametrize("block_size", BLOCK_SIZES)
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
def test_write_kv_matches_reference(block_size, head_dim):
    torch.manual_seed(block_size + head_dim)
    nkv, T, num_blocks = 3, 29, 6
    # K and V as views of a fused qkv projection output, as the model produces them
    qkv = torch.randn(T, (4 + 2 * nkv) * head_dim)
    k = qkv[:, 4 * head_dim:(4 + nkv) * head_dim].view(T, nkv, head_dim)
    v = qkv[:, (4 + nkv) * head_dim:].view(T, nkv, head_dim)
    slots = torch.randperm(num_blocks * block_size)[:T]
    slots[5] = -1  # padding: must be skipped
    caches = [torch.zeros(num_blocks, block_size, nkv, head_dim) for _ in range(4)]
    write_kv(k, v, caches[0], caches[1], slots)
    write_kv_ref(k, v, caches[2], caches[3], slots)
    assert torch.equal(caches[0], caches[2]) and torch.equal(caches[1], caches[3])
    assert caches[0].abs().sum() > 0
    assert int((caches[0].view(-1, nkv * head_dim).abs().sum(-1) > 0).sum()) == T - 1


def test_write_then_attend_end_to_end():
    """The forward's order: write the new K/V with the kernel, then attend over the cache."""
    b = make_paged_batch([21, 0], [12, 30], num_heads=8, num_kv_heads=2, head_dim=64, block_size=16, seed=13)
    kc, vc = b.k_cache.clone(), b.v_cache.clone()
    kc.view(-1, 2, 64)[b.slot_mapping] = float("nan")  # forget the new tokens: the kernel must write them
    vc.view(-1, 2, 64)[b.slot_mapping] = float("nan")
    write_kv(b.k_new, b.v_new, kc, vc, b.slot_mapping)
    out = paged_prefill_attention(b.q, kc, vc, b.query_start_loc, b.seq_lens, b.block_tables,
                                  b.max_query_len, 1 / math.sqrt(64))
    _check(out, paged_attention_ref(b.q, b.k_cache, b.v_cache, b.query_start_loc, b.seq_lens,
                                    b.block_tables, 1 / math.sqrt(64)))


def test_shape_errors_are_reported():
    b = make_paged_batch([4], [3], num_heads=4, num_kv_heads=2, head_dim=64, block_size=16)
    args = (b.query_start_loc, b.seq_lens, b.block_tables, b.max_query_len, 0.125)
    with pytest.raises(ValueError, match="kv heads must divide"):
        paged_prefill_attention(torch.randn(3, 3, 64), b.k_cache, b.v_cache, *args)
    with pytest.raises(ValueError, match="head dims must match"):
        paged_decode_attention(torch.randn(1, 4, 32), b.k_cache, b.v_cache, b.seq_lens, b.block_tables, 0.1)
    with pytest.raises(ValueError, match="same shape"):
        paged_prefill_attention(b.q, b.k_cache, b.v_cache[:, :8], *args)
