"""Plain-PyTorch op table: the reference every other backend is tested against, and the fallback.

Correctness over speed: norms, rotary and softmax run in float32 whatever the model dtype, and
quantized weights are dequantized once at load. Only decode attention (every sequence one new
token) is vectorised across sequences, because it is the step an engine repeats most.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from oci_engine.attention_metadata import AttentionMetadata
from oci_engine.ops import Ops


def prepare_linear(weight, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """A dense [out, in] weight in the model dtype; a loader.QuantTensor is dequantized here."""
    if not isinstance(weight, torch.Tensor):
        weight = weight.dequantize(torch.float32)
    return weight.to(device=device, dtype=dtype).contiguous()


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    return F.linear(x, weight, bias)


def embedding(ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return F.embedding(ids, weight)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # Same rounding points as Hugging Face's LlamaRMSNorm: normalise in fp32, cast, then scale.
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float):
    s = x + residual
    return rms_norm(s, weight, eps), s


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # neox / HF rotate_half layout: the first half of each head pairs with the second half
    half = x.shape[-1] // 2
    xf = x.float()
    x1, x2 = xf[..., :half], xf[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)


def rotary(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos_sin: torch.Tensor):
    """cos_sin[max_pos, d] holds cos in its first d/2 columns and sin in the last d/2 (float32)."""
    cs = cos_sin.index_select(0, positions)
    half = cs.shape[-1] // 2
    cos, sin = cs[:, None, :half], cs[:, None, half:]
    return _rotate(q, cos, sin), _rotate(k, cos, sin)


def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def write_kv(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
             slot_mapping: torch.Tensor) -> None:
    nkv, d = k_cache.shape[-2:]
    slots = slot_mapping.long()
    if bool((slots < 0).any()):
        # slot -1 marks a padding row (bucketed CUDA-graph decode): it writes nothing
        keep = slots >= 0
        k, v, slots = k[keep], v[keep], slots[keep]
    k_cache.view(-1, nkv, d).index_copy_(0, slots, k.to(k_cache.dtype))
    v_cache.view(-1, nkv, d).index_copy_(0, slots, v.to(v_cache.dtype))


def _gather(cache: torch.Tensor, block_ids: torch.Tensor, length: int) -> torch.Tensor:
    """The first `length` cached tokens of one sequence: [length, nkv, d]."""
    blocks = cache.index_select(0, block_ids.long())
    return blocks.reshape(-1, *cache.shape[2:])[:length]


def _prefill_attention(q, k_cache, v_cache, meta: AttentionMetadata, scale: float) -> torch.Tensor:
    bs = k_cache.shape[1]
    nh, nkv = q.shape[1], k_cache.shape[2]
    group = nh // nkv
    starts = meta.query_start_loc_list or meta.query_start_loc.tolist()
    lens = meta.seq_lens_list or meta.seq_lens.tolist()
    out = torch.empty_like(q)
    for i, ctx in enumerate(lens):
        s, e = starts[i], starts[i + 1]
        n = e - s
        if n == 0:
            continue
        nblocks = -(-ctx // bs)
        k = _gather(k_cache, meta.block_tables[i, :nblocks], ctx).float()
        v = _gather(v_cache, meta.block_tables[i, :nblocks], ctx).float()
        # GQA: every group of `group` query heads shares one KV head
        k = k.repeat_interleave(group, dim=1).transpose(0, 1)  # [nh, ctx, d]
        v = v.repeat_interleave(group, dim=1).transpose(0, 1)
        qi = q[s:e].float().transpose(0, 1)  # [nh, n, d]
        scores = torch.matmul(qi, k.transpose(1, 2)) * scale  # [nh, n, ctx]
        # new token j sits at position ctx - n + j and sees keys 0 .. ctx - n + j
        qpos = torch.arange(ctx - n, ctx, device=q.device)[:, None]
        kpos = torch.arange(ctx, device=q.device)[None, :]
        scores.masked_fill_(kpos > qpos, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        out[s:e] = torch.matmul(probs, v).transpose(0, 1).to(q.dtype)
    return out


def _decode_attention(q, k_cache, v_cache, meta: AttentionMetadata, scale: float) -> torch.Tensor:
    """One new token per sequence: gather every sequence's blocks at once, mask by length."""
    B, nh, d = q.shape
    bs, nkv = k_cache.shape[1], k_cache.shape[2]
    group = nh // nkv
    nblocks = -(-meta.max_seq_len // bs)
    table = meta.block_tables[:, :nblocks].long()
    k = k_cache[table].reshape(B, nblocks * bs, nkv, d).float()  # [B, S, nkv, d]
    v = v_cache[table].reshape(B, nblocks * bs, nkv, d).float()
    qg = q.float().view(B, nkv, group, d)
    scores = torch.einsum("bkgd,bskd->bkgs", qg, k) * scale
    valid = torch.arange(nblocks * bs, device=q.device)[None, :] < meta.seq_lens.to(q.device).long()[:, None]
    scores.masked_fill_(~valid[:, None, None, :], float("-inf"))
    # a padding row (seq_len 0) has nothing to attend to: zeros, not the NaN of an empty softmax
    probs = torch.softmax(scores, dim=-1).nan_to_num_(0.0)
    out = torch.einsum("bkgs,bskd->bkgd", probs, v)
    return out.reshape(B, nh, d).to(q.dtype)


def attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata,
              scale: float) -> torch.Tensor:
    if meta.is_decode:
        return _decode_attention(q, k_cache, v_cache, meta, scale)
    return _prefill_attention(q, k_cache, v_cache, meta, scale)


OPS = Ops(
    name="torch",
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
