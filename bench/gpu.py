"""`python -m bench gpu`: the Triton GPU path against its peers on the same GPU, in one run.

  prefill  paged prefill attention  vs  torch SDPA (flash) on dense tensors of the same shapes
  decode   paged decode attention   vs  gather the paged K/V into dense tensors, then SDPA
  e2e      decode tokens/s of the engine (and of a CUDA-graph decode loop) vs transformers
  --sweep-tiles  times the kernels' tile / partition alternatives, to set the launchers' defaults

Kernel times are medians over --repeats timed batches of CUDA-event measurements; ratios are
peer time / our time (> 1: we are faster). Results go to a table on stdout and --out as JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

# (batch, tokens per sequence, query heads, kv heads, head dim): Llama-3-8B-like GQA 4,
# OpenCodeInterpreter-DS-6.7B (no GQA), SmolLM2-135M (GQA 3, head dim 64)
PREFILL_SHAPES = [(1, 4096, 32, 8, 128), (4, 1024, 32, 32, 128), (8, 512, 9, 3, 64)]
DECODE_SHAPES = [(1, 4096, 32, 8, 128), (16, 2048, 32, 8, 128), (64, 1024, 32, 32, 128), (64, 1024, 9, 3, 64)]


def cuda_median_ms(fn, repeats: int, inner: int = 10) -> float:
    """Median over `repeats` of the mean time of `inner` back-to-back calls (CUDA events)."""
    import torch

    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / inner)
    return statistics.median(times)


def paged_cache(B, ctx, nkv, d, block_size, dtype, seed=0):
    """Random K/V for B sequences of ctx tokens in shuffled blocks: (k_cache, v_cache, block_tables)."""
    import torch

    g = torch.Generator(device="cuda").manual_seed(seed)
    per_seq = -(-ctx // block_size)
    num_blocks = B * per_seq
    k_cache = torch.randn(num_blocks, block_size, nkv, d, device="cuda", dtype=dtype, generator=g)
    v_cache = torch.randn(num_blocks, block_size, nkv, d, device="cuda", dtype=dtype, generator=g)
    tables = torch.randperm(num_blocks, device="cuda", generator=g).view(B, per_seq).to(torch.int32)
    return k_cache, v_cache, tables


def dense_kv(cache, tables, ctx, group):
    """The peer's gather: [B, nh, ctx, d] from the paged cache."""
    B, bs = tables.shape[0], cache.shape[1]
    dense = cache[tables.long()].view(B, -1, *cache.shape[2:])[:, :ctx]
    return dense.repeat_interleave(group, dim=2).transpose(1, 2)


def bench_prefill(shape, repeats, dtype, block_size):
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from oci_engine.kernels.paged_prefill_attention import paged_prefill_attention

    B, L, nh, nkv, d = shape
    k_cache, v_cache, tables = paged_cache(B, L, nkv, d, block_size, dtype)
    q = torch.randn(B * L, nh, d, device="cuda", dtype=dtype)
    qsl = torch.arange(0, B * L + 1, L, device="cuda", dtype=torch.int32)
    seq_lens = torch.full((B,), L, device="cuda", dtype=torch.int32)
    scale = d ** -0.5
    ours = lambda: paged_prefill_attention(q, k_cache, v_cache, qsl, seq_lens, tables, L, scale)  # noqa: E731
    # the peer gets dense, head-expanded K/V for free (outside the timing)
    qd = q.view(B, L, nh, d).transpose(1, 2)
    kd, vd = dense_kv(k_cache, tables, L, nh // nkv), dense_kv(v_cache, tables, L, nh // nkv)

    def peer():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(qd, kd, vd, is_causal=True, scale=scale)

    err = (ours().view(B, L, nh, d).transpose(1, 2).float() - peer().float()).abs().max().item()
    return dict(ours_ms=cuda_median_ms(ours, repeats), peer_ms=cuda_median_ms(peer, repeats), max_abs_diff=err)


def bench_decode(shape, repeats, dtype, block_size):
    import torch
    import torch.nn.functional as F

    from oci_engine.kernels.paged_decode_attention import paged_decode_attention

    B, ctx, nh, nkv, d = shape
    k_cache, v_cache, tables = paged_cache(B, ctx, nkv, d, block_size, dtype)
    q = torch.randn(B, nh, d, device="cuda", dtype=dtype)
    seq_lens = torch.full((B,), ctx, device="cuda", dtype=torch.int32)
    scale = d ** -0.5
    ours = lambda: paged_decode_attention(q, k_cache, v_cache, seq_lens, tables, scale)  # noqa: E731

    def peer():  # what a runtime without a paged kernel does every step
        kd = dense_kv(k_cache, tables, ctx, nh // nkv)
        vd = dense_kv(v_cache, tables, ctx, nh // nkv)
        return F.scaled_dot_product_attention(q.unsqueeze(2), kd, vd, scale=scale).squeeze(2)

    err = (ours().float() - peer().float()).abs().max().item()
    return dict(ours_ms=cuda_median_ms(ours, repeats), peer_ms=cuda_median_ms(peer, repeats), max_abs_diff=err)


def sweep_tiles(repeats, dtype, block_size):
    """Time every prefill tile configuration and decode partition size; print the best per shape."""
    import itertools

    import torch

    from oci_engine.kernels.paged_decode_attention import paged_decode_attention
    from oci_engine.kernels.paged_prefill_attention import paged_prefill_attention, prefill_tiles

    found = []
    for B, L, nh, nkv, d in PREFILL_SHAPES:
        k_cache, v_cache, tables = paged_cache(B, L, nkv, d, block_size, dtype)
        q = torch.randn(B * L, nh, d, device="cuda", dtype=dtype)
        qsl = torch.arange(0, B * L + 1, L, device="cuda", dtype=torch.int32)
        seq_lens = torch.full((B,), L, device="cuda", dtype=torch.int32)
        timings = []
        for bm, bn, warps, stages in itertools.product([64, 128], [32, 64, 128], [4, 8], [2, 3, 4]):
            try:
                ms = cuda_median_ms(lambda: paged_prefill_attention(
                    q, k_cache, v_cache, qsl, seq_lens, tables, L, d ** -0.5, block_m=bm, block_n=bn,
                    num_warps=warps, num_stages=stages), repeats)
            except Exception as e:  # a tile that does not fit this GPU's shared memory or registers
                print(f"  prefill {(B, L, nh, nkv, d)} {(bm, bn, warps, stages)}: {type(e).__name__}")
                continue
            timings.append((ms, (bm, bn, warps, stages)))
        timings.sort()
        default = prefill_tiles(L, d)
        dms = next((ms for ms, c in timings if c == default), float("nan"))
        print(f"prefill {(B, L, nh, nkv, d)}: default {default} {dms:.3f} ms; best "
              + ", ".join(f"{c} {ms:.3f} ms" for ms, c in timings[:3]))
        found.append(dict(kind="prefill", shape=(B, L, nh, nkv, d), default=default, default_ms=dms,
                          best=[dict(tiles=c, ms=ms) for ms, c in timings[:3]]))
    for B, ctx, nh, nkv, d in DECODE_SHAPES:
        k_cache, v_cache, tables = paged_cache(B, ctx, nkv, d, block_size, dtype)
        q = torch.randn(B, nh, d, device="cuda", dtype=dtype)
        seq_lens = torch.full((B,), ctx, device="cuda", dtype=torch.int32)
        timings = sorted(
            (cuda_median_ms(lambda: paged_decode_attention(q, k_cache, v_cache, seq_lens, tables, d ** -0.5,
                                                           partition=part, block_n=bn), repeats), (part, bn))
            for part, bn in itertools.product([64, 128, 256, 512, 1024], [16, 32, 64]))
        print(f"decode {(B, ctx, nh, nkv, d)}: best (partition, block_n) "
              + ", ".join(f"{c} {ms:.3f} ms" for ms, c in timings[:3]))
        found.append(dict(kind="decode", shape=(B, ctx, nh, nkv, d),
                          best=[dict(tiles=c, ms=ms) for ms, c in timings[:3]]))
    return found


def _row(kind, shape, r, peer):
    ratio = r["peer_ms"] / r["ours_ms"]
    print(f"{kind:8} {str(shape):26} {r['ours_ms']:9.3f} {r['peer_ms']:9.3f} {ratio:7.2f}x  {peer}  "
          f"(max |diff| {r['max_abs_diff']:.1e})")
    return dict(kind=kind, shape=shape, ratio=ratio, peer=peer, **r)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench gpu", description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=["prefill", "decode", "e2e"], action="append",
                    help="run only these parts (repeatable); default: all")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--model", default="smollm2-135m", help="model for the end-to-end part")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16], help="e2e batch sizes")
    ap.add_argument("--tokens", type=int, default=128, help="e2e new tokens per sequence")
    ap.add_argument("--sweep-tiles", action="store_true",
                    help="also time every prefill tile / decode partition configuration (slow)")
    ap.add_argument("--out", default=".benchmarks/gpu.json")
    args = ap.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("bench gpu: no CUDA GPU here (torch.cuda.is_available() is False); these benchmarks compare "
              "GPU kernels and need a machine with an NVIDIA GPU and a CUDA build of torch.", file=sys.stderr)
        return 2
    parts = args.only or ["prefill", "decode", "e2e"]
    dtype = torch.bfloat16
    results = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, rows=[])
    print(f"device: {results['device']}  torch {torch.__version__}  dtype bf16  block size {args.block_size}  "
          f"medians of {args.repeats}")
    print(f"{'part':8} {'shape':26} {'ours ms':>9} {'peer ms':>9} {'peer/ours':>8}")
    if "prefill" in parts:
        for shape in PREFILL_SHAPES:  # (B, L, nh, nkv, d)
            r = bench_prefill(shape, args.repeats, dtype, args.block_size)
            results["rows"].append(_row("prefill", shape, r, "SDPA flash"))
    if "decode" in parts:
        for shape in DECODE_SHAPES:  # (B, context, nh, nkv, d)
            r = bench_decode(shape, args.repeats, dtype, args.block_size)
            results["rows"].append(_row("decode", shape, r, "gather+SDPA"))
    if args.sweep_tiles:
        results["tile_sweep"] = sweep_tiles(max(5, args.repeats // 4), dtype, args.block_size)
    if "e2e" in parts:
        from bench._gpu_e2e import bench_e2e

        results["e2e"] = bench_e2e(args.model, args.batch, args.tokens, max(3, args.repeats // 5))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
