"""Pure-torch references for every Triton kernel in this package.

Each function computes, in plain and obviously-correct PyTorch, what the kernel of the same job
must produce; tests sweep shapes against them. They favour clarity over speed (per-sequence loops,
fp32 math) and are not used on the serving path.
"""
from __future__ import annotations

import torch


def write_kv_ref(k, v, k_cache, v_cache, slot_mapping):
    """Scatter new K/V [T, nkv, d] into the paged caches by flat slot; a negative slot is padding."""
    nb, bs, nkv, d = k_cache.shape
    keep = slot_mapping >= 0
    slots = slot_mapping[keep].long()
    k_cache.view(nb * bs, nkv, d)[slots] = k[keep].to(k_cache.dtype)
    v_cache.view(nb * bs, nkv, d)[slots] = v[keep].to(v_cache.dtype)


def gather_kv_ref(cache, block_table, seq_len):
    """The first seq_len tokens of one sequence as a dense [seq_len, nkv, d] tensor."""
    bs = cache.shape[1]
    n_blocks = (seq_len + bs - 1) // bs
    blocks = block_table[:n_blocks].long()
    return cache[blocks].reshape(n_blocks * bs, *cache.shape[2:])[:seq_len]


def paged_attention_ref(q, k_cache, v_cache, query_start_loc, seq_lens, block_tables, scale):
    """Causal attention of each sequence's new tokens over its whole context (cached prefix + new).

    q: [T, nh, d] flat over sequences; sequence i's new tokens are the last q_len of its seq_len.
    """
    out = torch.empty_like(q)
    nh = q.shape[1]
    starts = query_start_loc.tolist()
    for i, seq_len in enumerate(seq_lens.tolist()):
        a, b = starts[i], starts[i + 1]
        q_len = b - a
        if q_len == 0:
            continue
        k = gather_kv_ref(k_cache, block_tables[i], seq_len).float()
        v = gather_kv_ref(v_cache, block_tables[i], seq_len).float()
        group = nh // k.shape[1]
        k = k.repeat_interleave(group, dim=1)  # [S, nh, d]
        v = v.repeat_interleave(group, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q[a:b].float(), k) * scale
        q_pos = torch.arange(seq_len - q_len, seq_len, device=q.device).unsqueeze(1)
        k_pos = torch.arange(seq_len, device=q.device).unsqueeze(0)
        scores = scores.masked_fill(k_pos > q_pos, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        out[a:b] = torch.einsum("hqk,khd->qhd", probs, v).to(q.dtype)
    return out


def rms_norm_ref(x, weight, eps):
    """Llama's RMSNorm: normalise in fp32, round to the input dtype, then scale by the weight."""
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (weight.float() * y.to(x.dtype).float()).to(x.dtype)


def add_rms_norm_ref(x, residual, weight, eps):
    """(rms_norm(x + residual), x + residual) with the sum rounded to the input dtype first."""
    s = (x.float() + residual.float()).to(x.dtype)
    return rms_norm_ref(s, weight, eps), s


def rotary_cos_sin(max_pos, head_dim, theta=10000.0, dtype=torch.float32):
    """The cos_sin table the rotary op takes: row p is cat(cos(p * f), sin(p * f)), f the d/2 inverse frequencies."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.arange(max_pos, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return torch.cat([angles.cos(), angles.sin()], dim=-1).to(dtype)


def rotary_ref(q, k, positions, cos_sin):
    """Neox-style rotary embedding (rotate the two halves of each head), as Hugging Face Llama does."""

    def rotate(x):
        half = x.shape[-1] // 2
        cs = cos_sin[positions.long()].float()
        cos, sin = cs[:, None, :half], cs[:, None, half:]
        x1, x2 = x[..., :half].float(), x[..., half:].float()
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)

    return rotate(q), rotate(k)


def silu_and_mul_ref(gate_up):
    """silu(gate) * up for gate_up = cat(gate, up) along the last dimension."""
    gate, up = gate_up.float().chunk(2, dim=-1)
    return (torch.nn.functional.silu(gate) * up).to(gate_up.dtype)
