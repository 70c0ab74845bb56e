"""Norms, rotary, SiLU-and-mul, KV write and paged attention of the `cpu` backend against the torch
reference backend, on every ISA path, with sizes that are not multiples of any SIMD width."""
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


@pytest.mark.parametrize("T,H", [(1, 576), (3, 17), (70, 100), (2, 4096)])
def test_rms_norm_and_fused_residual(T, H):
    x, r, w = torch.randn(T, H), torch.randn(T, H), torch.randn(H)
    torch.testing.assert_close(cpu.rms_norm(x, w, 1e-5), ref.rms_norm(x, w, 1e-5), rtol=1e-5, atol=1e-5)
    r0 = r.clone()
    y, s = cpu.add_rms_norm(x, r, w, 1e-6)
    y_ref, s_ref = ref.add_rms_norm(x, r, w, 1e-6)
    torch.testing.assert_close(s, s_ref)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(r, r0), "the residual input must not be modified"


def _cos_sin(max_pos, d, theta=10000.0):
    inv = 1.0 / theta ** (torch.arange(0, d, 2).float() / d)
    ang = torch.arange(max_pos).float()[:, None] * inv[None, :]
    return torch.cat([ang.cos(), ang.sin()], dim=-1)


@pytest.mark.parametrize("T,nh,nkv,d", [(1, 9, 3, 64), (5, 4, 2, 16), (33, 6, 1, 128), (2, 3, 3, 6)])
def test_rotary_neox_on_qkv_slices(T, nh, nkv, d):
    qkv = torch.randn(T, (nh + 2 * nkv) * d)
    q, k, _ = qkv.split([nh * d, nkv * d, nkv * d], dim=-1)
    q, k = q.view(T, nh, d), k.view(T, nkv, d)  # row-strided views, as the model passes them
    cs = _cos_sin(4096, d)
    pos = torch.randint(0, 4096, (T,))
    qo, ko = cpu.rotary(q, k, pos, cs)
    q_ref, k_ref = ref.rotary(q, k, pos, cs)
    torch.testing.assert_close(qo, q_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ko, k_ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(IndexError):
        cpu.rotary(q, k, torch.full((T,), 4096), cs)


@pytest.mark.parametrize("T,I", [(1, 1536), (4, 7), (19, 100)])
def test_silu_and_mul(T, I):
    gu = torch.randn(T, 2 * I) * 6  # wide range: exercises the exp approximation's tails
    gu[0, 0], gu[-1, 1] = -100.0, 100.0
    torch.testing.assert_close(cpu.silu_and_mul(gu), ref.silu_and_mul(gu), rtol=1e-5, atol=1e-5)


def _meta(b, decode: bool) -> AttentionMetadata:
    return AttentionMetadata(
        slot_mapping=b.slot_mapping, query_start_loc=b.query_start_loc, seq_lens=b.seq_lens,
        block_tables=b.block_tables, max_query_len=b.max_query_len, max_seq_len=int(b.seq_lens.max()),
        is_decode=decode)


CASES = [
    # prefix_lens, new_lens, nh, nkv, d, block_size
    ([0], [1], 4, 4, 16, 16),                     # first token
    ([37, 5, 100], [1, 1, 1], 9, 3, 64, 16),      # batched decode, GQA 3:1 (SmolLM2's heads)
    ([0], [77], 6, 2, 32, 16),                    # fresh prefill over several blocks and query tiles
    ([40, 0, 3], [9, 20, 1], 8, 2, 24, 8),        # cached prefix + new tokens, mixed with decode
    ([15], [2], 2, 1, 128, 32),                   # MQA, partial last block
    ([0, 30], [150, 140], 6, 2, 32, 16),          # long chunks: blocked bf16 GEMMs on gathered K/V ...
    ([5, 50, 0], [1, 200, 7], 9, 3, 64, 16),      # ... mixed with kernel-served sequences
    ([0, 21], [16, 65], 4, 1, 16, 8),             # ... MQA; exactly the threshold; a partial query block
    ([3], [129], 5, 5, 40, 16),                   # ... MHA (one query head per KV head)
]


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("prefix,new,nh,nkv,d,bs", CASES)
def test_paged_attention(prefix, new, nh, nkv, d, bs, cache_dtype):
    b = make_paged_batch(prefix, new, num_heads=nh, num_kv_heads=nkv, head_dim=d, block_size=bs, seed=len(new) + d)
    k_cache = b.k_cache.to(cache_dtype)
    v_cache = b.v_cache.to(cache_dtype)
    decode = all(n == 1 for n in new)
    meta = _meta(b, decode)
    out = cpu.attention(b.q, k_cache, v_cache, meta, d ** -0.5)
    # Slots no sequence owns hold NaN, so any read past a context shows in `out`; the reference
    # (which multiplies masked slots by zero) gets them zeroed.
    expect = ref.attention(b.q, k_cache.float().nan_to_num(0.0), v_cache.float().nan_to_num(0.0), meta, d ** -0.5)
    assert not out.isnan().any()
    # Chunks of PREFILL_MIN_NEW_TOKENS or more run in bf16 (q, k, scores, probabilities and v rounded
    # to 8 bits of mantissa): each output row within a few bf16 roundings of fp32; the rest is fp32.
    long = torch.zeros(len(out), dtype=torch.bool)
    for s, e in zip(meta.query_start_loc.tolist(), meta.query_start_loc.tolist()[1:]):
        long[s:e] = e - s >= cpu.PREFILL_MIN_NEW_TOKENS
    torch.testing.assert_close(out[~long], expect[~long], rtol=2e-5, atol=2e-5)
    err = (out[long] - expect[long]).norm(dim=-1) / expect[long].norm(dim=-1)
    assert err.numel() == 0 or err.max() < 3e-2, f"bf16 prefill attention: relative row error {err.max():.2e}"


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
def test_write_kv_from_strided_views(cache_dtype):
    T, nkv, d, bs = 5, 2, 12, 4
    kv = torch.randn(T, 2 * nkv * d)
    k, v = (t.view(T, nkv, d) for t in kv.split(nkv * d, dim=-1))
    kc, vc = torch.zeros(6, bs, nkv, d, dtype=cache_dtype), torch.zeros(6, bs, nkv, d, dtype=cache_dtype)
    kr, vr = kc.clone(), vc.clone()
    slots = torch.tensor([23, 0, 7, 8, 12])
    cpu.write_kv(k, v, kc, vc, slots)
    ref.write_kv(k, v, kr, vr, slots)
    assert torch.equal(kc, kr) and torch.equal(vc, vr)
    with pytest.raises(IndexError):
        cpu.write_kv(k, v, kc, vc, torch.tensor([0, 1, 2, 3, 24]))
