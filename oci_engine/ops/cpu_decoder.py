"""The `cpu` backend's fused decoder stack: every layer of a small step (batch-1 or batched decode,
short prefill chunks) in one C++ call (csrc/decoder_stack.cpp) instead of ~13 op calls per layer.

`fuse_decoder` is the optional op the Llama model asks for at load time. It returns None when the
model's weights are not all kernel-backed GGUF blocks in float32 (then the model keeps the per-op
path), and otherwise a callable that runs the stack, or returns None for a step it does not cover
(prefill-sized steps, which the per-op path sends to torch's bf16 GEMMs). Its result equals the
per-op `cpu` path bit for bit: same kernels, same GEMM path choice, same row arithmetic.
"""
from __future__ import annotations

import torch

from oci_engine import _C
from oci_engine.attention_metadata import AttentionMetadata
from oci_engine.ops import cpu_linear
from oci_engine.ops.cpu_backend import PREFILL_MIN_NEW_TOKENS, block_tables_for  # cpu_backend imports this module lazily
from oci_engine.ops.cpu_linear import QuantLinear

_F32 = torch.float32


def _weight(fused) -> list[int] | None:
    """(address, row stride, ggml type, N, K, bias address) of a FusedLinear held as one QuantLinear."""
    if len(fused.handles) != 1 or not isinstance(fused.handles[0], QuantLinear):
        return None
    h, b = fused.handles[0], fused.biases[0]
    if b is not None and not (b.dtype == _F32 and b.is_contiguous() and b.numel() == h.out_features):
        return None
    return [h.address, h.row_stride, h.ggml_type, h.out_features, h.in_features, 0 if b is None else b.data_ptr()]


def _vector_ok(v: torch.Tensor, n: int) -> bool:
    return isinstance(v, torch.Tensor) and v.dtype == _F32 and v.is_contiguous() and v.numel() == n


class FusedDecoder:
    """Callable (h [T, H] embeddings, positions, kv_caches, meta) -> final-normed hidden [T, H] | None."""

    def __init__(self, stack, keep: list, hidden: int, widest: QuantLinear):
        # widest: the layer weight with the most elements, which the per-op path sends to torch's
        # GEMM from the fewest rows (cpu_linear.takes_dense); a step it would send there is left to it
        self.stack, self.keep, self.hidden, self.widest = stack, keep, hidden, widest

    def __call__(self, h: torch.Tensor, positions: torch.Tensor, kv_caches: list,
                 meta: AttentionMetadata) -> torch.Tensor | None:
        T = h.shape[0]
        if T == 0 or cpu_linear.takes_dense(T, self.widest) or h.dtype != _F32:
            return None  # the per-op path sends such steps (or some of their GEMMs) to torch's GEMM
        starts = meta.query_start_loc_list or meta.query_start_loc.tolist()
        lens = meta.seq_lens_list or meta.seq_lens.tolist()
        if any(starts[i + 1] - starts[i] >= PREFILL_MIN_NEW_TOKENS for i in range(len(lens))):
            return None  # the per-op path sends long chunks to the blocked bf16 prefill attention
        k0 = kv_caches[0][0]
        if k0.dtype not in (_F32, torch.bfloat16):
            return None
        kv = []
        for k, v in kv_caches:
            if k.dtype != k0.dtype or v.dtype != k0.dtype or not (k.is_contiguous() and v.is_contiguous()):
                return None
            kv += (k.data_ptr(), v.data_ptr())
        bs = k0.shape[1]
        bt = block_tables_for(meta, lens, bs)
        h = h.contiguous()
        pos = positions if positions.dtype == torch.int64 and positions.is_contiguous() else \
            positions.to(torch.int64).contiguous()
        sm = meta.slot_mapping
        slots = sm if sm.dtype == torch.int64 and sm.is_contiguous() else sm.to(torch.int64).contiguous()
        out = torch.empty(T, self.hidden)
        _C.decoder_stack_run(self.stack, h.data_ptr(), out.data_ptr(), T, pos.data_ptr(), slots.data_ptr(), kv,
                             k0.dtype == torch.bfloat16, k0.shape[0] * bs, bs, bt.data_ptr(), bt.shape[1],
                             list(starts), list(lens), cpu_linear.BATCH_INVARIANT)
        return out


def fuse_decoder(*, layers: list[dict], final_norm: torch.Tensor, num_heads: int, num_kv_heads: int, head_dim: int,
                 eps: float, scale: float, cos_sin: torch.Tensor) -> FusedDecoder | None:
    """layers: the Llama model's per-layer dicts (input_norm, post_norm: [H] tensors; qkv, o, gate_up,
    down: FusedLinear). None when any weight is not a single kernel-backed QuantLinear."""
    H = final_norm.numel()
    if not layers or not _vector_ok(final_norm, H) or cos_sin.dtype != _F32 or not cos_sin.is_contiguous() \
            or cos_sin.shape[1] != head_dim:
        return None
    rows = []
    for ly in layers:
        ws = [_weight(ly[n]) for n in ("qkv", "o", "gate_up", "down")]
        if any(w is None for w in ws) or not (_vector_ok(ly["input_norm"], H) and _vector_ok(ly["post_norm"], H)):
            return None
        rows.append([ly["input_norm"].data_ptr(), ly["post_norm"].data_ptr()] + [x for w in ws for x in w])
    inter = layers[0]["down"].handles[0].in_features
    widest = max((ly[n].handles[0] for ly in layers for n in ("qkv", "o", "gate_up", "down")),
                 key=lambda w: w.out_features * w.in_features)
    stack = _C.DecoderStack(rows, final_norm.data_ptr(), H, num_heads, num_kv_heads, head_dim, inter, float(eps),
                            float(scale), cos_sin.data_ptr(), cos_sin.stride(0), cos_sin.shape[0])
    keep = [layers, final_norm, cos_sin]  # the addresses above point into these
    return FusedDecoder(stack, keep, H, widest)
