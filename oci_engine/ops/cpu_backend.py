"""The `cpu` op table: C++ kernels from csrc/ (oci_engine._C) for float32 activations.

Quantized GGUF weights run through integer GEMMs in their own block format (cpu_linear.py).
Norms, rotary, SiLU-and-mul, the KV write and paged attention are single C++ calls that split
their rows across OpenMP threads. Prefill-sized work goes to torch's bf16 GEMMs instead: the
linears and the MLP (bf16 intermediates) from DENSE_MIN_ROWS rows, and the attention of a chunk
of PREFILL_MIN_NEW_TOKENS new tokens or more (blocked causal GEMMs). The extension is built against
the same libgomp soname as torch and imported after torch, so both share one OpenMP runtime and
one thread count (torch.set_num_threads governs both); nothing here spawns threads of its own.

Inputs these kernels do not cover (non-float32 activations, other cache dtypes) fall back to the
torch reference backend op by op, so a model in bf16 still runs, only slower.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from oci_engine import _C
from oci_engine.attention_metadata import AttentionMetadata
from oci_engine.ops import Ops
from oci_engine.ops import torch_backend as ref
from oci_engine.ops.cpu_linear import dense_matmul, embedding, linear, prepare_linear, takes_dense

_F32 = torch.float32


def _rows_ok(t: torch.Tensor) -> bool:
    """Float32 with unit stride in the last dim and dense leading dims (rows may be strided)."""
    return t.dtype == _F32 and t.stride(-1) == 1


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    if x.dtype != _F32 or weight.dtype != _F32:
        return ref.rms_norm(x, weight, eps)
    x = x.contiguous()
    H = x.shape[-1]
    y = torch.empty_like(x)
    _C.rms_norm(x.data_ptr(), weight.contiguous().data_ptr(), y.data_ptr(), x.numel() // H, H, float(eps))
    return y


def add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float):
    if x.dtype != _F32 or residual.dtype != _F32 or weight.dtype != _F32:
        return ref.add_rms_norm(x, residual, weight, eps)
    x, residual = x.contiguous(), residual.contiguous()
    H = x.shape[-1]
    y, s = torch.empty_like(x), torch.empty_like(x)
    _C.add_rms_norm(x.data_ptr(), residual.data_ptr(), s.data_ptr(), weight.contiguous().data_ptr(), y.data_ptr(),
                    x.numel() // H, H, float(eps))
    return y, s


def rotary(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos_sin: torch.Tensor):
    """neox layout (what the loader's un-permuted q/k use); q/k may be row-strided slices of qkv."""
    T, nh, d = q.shape
    nkv = k.shape[1]
    if not (q.dtype == k.dtype == cos_sin.dtype == _F32) or q.stride(2) != 1 or q.stride(1) != d \
            or k.stride(2) != 1 or k.stride(1) != d or cos_sin.stride(1) != 1 or cos_sin.shape[1] != d:
        return ref.rotary(q, k, positions, cos_sin)
    pos = positions if positions.dtype == torch.int64 and positions.is_contiguous() else \
        positions.to(torch.int64).contiguous()
    qo, ko = torch.empty(T, nh, d), torch.empty(T, nkv, d)
    # positions are range-checked inside the kernel (a tensor max() here costs more than the op)
    _C.rotary(q.data_ptr(), q.stride(0), k.data_ptr(), k.stride(0), qo.data_ptr(), ko.data_ptr(), T, nh, nkv, d,
              pos.data_ptr(), cos_sin.data_ptr(), cos_sin.stride(0), cos_sin.shape[0], True)
    return qo, ko


def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    if gate_up.dtype != _F32:
        return ref.silu_and_mul(gate_up)
    gate_up = gate_up.contiguous()
    I2 = gate_up.shape[-1]
    out = torch.empty(*gate_up.shape[:-1], I2 // 2)
    _C.silu_mul(gate_up.data_ptr(), out.data_ptr(), gate_up.numel() // I2, I2 // 2)
    return out


def mlp(x: torch.Tensor, gate_up, gate_up_bias, down, down_bias) -> torch.Tensor:
    """down(silu(gate) * up) for x [T, H] and one fused [2I, H] gate/up weight. A prefill-sized step
    (both GEMMs on torch's bf16 path) keeps the [T, 2I] and [T, I] intermediates in bf16: the GEMM's
    own output goes through SiLU-and-mul in bf16 (fp32 arithmetic inside) straight into the next
    GEMM, which reads bf16 anyway, instead of a copy to fp32, an fp32 pass and a copy back (SmolLM2
    layer at 1,000 rows, 1 thread: 31 -> 21 ms). Smaller steps run op by op."""
    T = x.shape[0]
    if not (x.dtype == _F32 and takes_dense(T, gate_up) and takes_dense(T, down)):
        return linear(silu_and_mul(linear(x, gate_up, gate_up_bias)), down, down_bias)
    g = dense_matmul(x, gate_up, torch.bfloat16)
    if gate_up_bias is not None:
        g += gate_up_bias
    inter = g.shape[1] // 2
    a = F.silu(g[:, :inter])
    a *= g[:, inter:]
    y = dense_matmul(a, down)
    if down_bias is not None:
        y += down_bias
    return y


def _cache_ok(c: torch.Tensor) -> bool:
    return c.dtype in (_F32, torch.bfloat16) and c.is_contiguous()


def write_kv(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
             slot_mapping: torch.Tensor) -> None:
    T, nkv, d = k.shape
    if not (_cache_ok(k_cache) and k_cache.dtype == v_cache.dtype and v_cache.is_contiguous()
            and _rows_ok(k) and _rows_ok(v) and k.stride(1) == d and v.stride(1) == d):
        return ref.write_kv(k, v, k_cache, v_cache, slot_mapping)
    slots = slot_mapping if slot_mapping.dtype == torch.int64 and slot_mapping.is_contiguous() else \
        slot_mapping.to(torch.int64).contiguous()
    _C.write_kv(k.data_ptr(), k.stride(0), v.data_ptr(), v.stride(0), k_cache.data_ptr(), v_cache.data_ptr(),
                slots.data_ptr(), T, nkv * d, k_cache.shape[0] * k_cache.shape[1], k_cache.dtype == torch.bfloat16)


# A sequence with at least this many new tokens (a prefill chunk) takes the blocked bf16 attention
# below on its gathered K/V instead of our kernel, which is built for decode (one query row per
# sequence). Measured at 1 thread (nh 9, nkv 3, d 64): 16 new tokens over 924 cached 0.44 ms vs
# 1.44 ms in the kernel, 26 over 940: 0.50 vs 2.36 ms; the kernel wins only where the whole context
# is short (16 over 0: 0.03 vs 0.09 ms). (torch SDPA, used here before the blocked path, was 2.5x
# slower than it at 1,000 tokens.)
PREFILL_MIN_NEW_TOKENS = 16
# Query positions per block: fewer blocks mean fewer thread-pool barriers, more means less of the
# causal triangle computed and masked. SmolLM2 prefill of 1,000 tokens, idle machine: 1 thread,
# 32: 10.2 ms/layer, 64 and 128: 7.9; 2 threads, tok/s: 64: 2072, 128: 2165, 192: 1800, 256: 1620.
PREFILL_BLOCK = 128
_causal_masks: dict[tuple[int, int], torch.Tensor] = {}


def _causal_mask(positions: int, group: int) -> torch.Tensor:
    """[positions * group, positions], True where a query row (position-major, `group` heads per
    position) must not see a key of its own block: a key after the row's position."""
    m = _causal_masks.get((positions, group))
    if m is None:
        m = torch.arange(positions)[None, :] > torch.arange(positions * group)[:, None] // group
        _causal_masks[(positions, group)] = m
    return m


def _prefill_attention(q, k_cache, v_cache, table_row, ctx: int, scale: float, out: torch.Tensor) -> None:
    """Causal attention of n new tokens (the last n of ctx) into out [n, nh, d]; q [n, nh, d].

    Query rows go in blocks of PREFILL_BLOCK positions, each against only the keys it can see (the
    upper triangle is never computed), as batched bf16 GEMMs over the KV heads: the q heads sharing
    one KV head are rows of one GEMM, so GQA costs no K/V copies. Everything is bf16 with fp32
    arithmetic inside each op (the softmax reads bf16 scores and computes in fp32): 2.4x faster than
    torch's fp32 (or bf16) SDPA at 1,000 tokens, and on SmolLM2 as close to transformers fp32 as
    transformers bf16 is (tests/runtime/test_cpu_backend_smollm2.py). Scores kept in fp32 cost 1.6x
    the time here and moved next-token agreement with transformers fp32 by under 0.5% either way.
    Each layout change is fused with a dtype conversion (one pass per tensor)."""
    n, nh, d = q.shape
    bs, nkv = k_cache.shape[1], k_cache.shape[2]
    g, p0, B, bf16 = nh // nkv, ctx - n, PREFILL_BLOCK, torch.bfloat16
    blocks = table_row[:-(-ctx // bs)].long()
    k = k_cache.index_select(0, blocks).view(-1, nkv, d)[:ctx]
    v = v_cache.index_select(0, blocks).view(-1, nkv, d)[:ctx]
    kt = torch.empty(nkv, d, ctx, dtype=bf16).copy_(k.permute(1, 2, 0))
    vh = torch.empty(nkv, ctx, d, dtype=bf16).copy_(v.transpose(0, 1))
    qh = torch.empty(nkv, n, g, d, dtype=bf16)
    torch.mul(q.view(n, nkv, g, d).transpose(0, 1), scale, out=qh)
    qh = qh.view(nkv, n * g, d)
    mask = _causal_mask(B, g)
    o = torch.empty(nkv, n * g, d, dtype=bf16)
    for s in range(0, n, B):
        e = min(n, s + B)
        scores = torch.bmm(qh[:, s * g:e * g], kt[:, :, :p0 + e])
        scores[:, :, p0 + s:].masked_fill_(mask[:(e - s) * g, :e - s], float("-inf"))
        o[:, s * g:e * g] = torch.bmm(torch.softmax(scores, -1), vh[:, :p0 + e])
    out.view(n, nkv, g, d).copy_(o.view(nkv, n, g, d).transpose(0, 1))


def block_tables_for(meta: AttentionMetadata, lens: list[int], block_size: int) -> torch.Tensor:
    """The metadata's block tables as the kernels read them (int32, contiguous), checked to cover every
    sequence: a table too short would send the kernel past its row."""
    bt = meta.block_tables
    if bt.dtype != torch.int32 or not bt.is_contiguous():
        bt = bt.to(torch.int32).contiguous()
    if lens and max(lens) > bt.shape[1] * block_size:
        raise ValueError(f"attention: a sequence of {max(lens)} tokens needs more than the block table's "
                         f"{bt.shape[1]} blocks of {block_size}; the metadata is inconsistent")
    return bt


def attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata,
              scale: float) -> torch.Tensor:
    if q.dtype != _F32 or not (_cache_ok(k_cache) and v_cache.dtype == k_cache.dtype and v_cache.is_contiguous()):
        return ref.attention(q, k_cache, v_cache, meta, scale)
    T, nh, d = q.shape
    q = q.contiguous()
    out = torch.empty_like(q)
    starts = meta.query_start_loc_list or meta.query_start_loc.tolist()
    lens = meta.seq_lens_list or meta.seq_lens.tolist()
    bs = k_cache.shape[1]
    bt = block_tables_for(meta, lens, bs)
    short = [i for i in range(len(lens)) if starts[i + 1] - starts[i] < PREFILL_MIN_NEW_TOKENS]
    for i in range(len(lens)):
        if i not in short and starts[i + 1] > starts[i]:
            s, e = starts[i], starts[i + 1]
            _prefill_attention(q[s:e], k_cache, v_cache, bt[i], lens[i], scale, out[s:e])
    if short:
        rows = bt if len(short) == len(lens) else bt[short].contiguous()
        _C.attention(q.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), k_cache.dtype == torch.bfloat16,
                     rows.data_ptr(), rows.shape[1], [starts[i] for i in short], [starts[i + 1] for i in short],
                     [lens[i] for i in short], nh, k_cache.shape[2], d, bs, float(scale), out.data_ptr())
    return out


def fuse_decoder(**kwargs):
    """The whole decoder stack of a small step in one C++ call (cpu_decoder.py); imported lazily,
    since that module builds on this one."""
    from oci_engine.ops.cpu_decoder import fuse_decoder as fuse

    return fuse(**kwargs)


OPS = Ops(
    name="cpu",
    prepare_linear=prepare_linear,
    linear=linear,
    embedding=embedding,
    rms_norm=rms_norm,
    add_rms_norm=add_rms_norm,
    rotary=rotary,
    silu_and_mul=silu_and_mul,
    mlp=mlp,
    write_kv=write_kv,
    attention=attention,
    fuse_decoder=fuse_decoder,
)
