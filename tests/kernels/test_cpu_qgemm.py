"""Quantized GEMM / dequantization of the C++ kernels against gguf's reference dequantizer.

Weights are random raw GGUF blocks (every bit pattern of the codes and sub-block scales occurs),
with finite fp16 super-scales. Two references: the exact one multiplies the dequantized weights by
the activations after the same per-32 int8 quantization the kernel applies (only float summation
order may differ), the loose one by the fp32 activations (what a user compares against).
"""
from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from cpu_isa import ISAS, _C, forced_isa

from oci_engine.loader.quant_tensor import QuantTensor
from oci_engine.ops import cpu_linear

T = gguf.GGMLQuantizationType
FORMATS = [T.Q4_0, T.Q4_1, T.Q8_0, T.Q4_K, T.Q6_K]
# byte offsets of fp16 scale fields inside one block (random bytes there could be inf/NaN)
SCALE_FIELDS = {T.Q4_0: [0], T.Q4_1: [0, 2], T.Q8_0: [0], T.Q4_K: [0, 2], T.Q6_K: [208]}


def random_blocks(qtype, rows: int, cols: int, seed: int) -> QuantTensor:
    elems, nbytes = gguf.GGML_QUANT_SIZES[qtype]
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=(rows, cols // elems, nbytes), dtype=np.uint8)
    for off in SCALE_FIELDS[qtype]:
        scales = rng.uniform(0.002, 0.02, size=(rows, cols // elems)).astype(np.float16)
        raw[:, :, off:off + 2] = scales.view(np.uint8).reshape(rows, cols // elems, 2)
    return QuantTensor(int(qtype), (rows, cols), raw.reshape(rows, -1))


def reference_dense(qt: QuantTensor) -> torch.Tensor:
    return torch.from_numpy(gguf.quants.dequantize(qt.data, T(qt.ggml_type)).astype(np.float32)).reshape(qt.shape)


def q8_roundtrip(x: torch.Tensor) -> torch.Tensor:
    """The activations as the kernel sees them: per block of 32, d = amax / 127 and two int8
    planes, x ~ d * (hi + lo / 256)."""
    M, K = x.shape
    xb = x.reshape(M, K // 32, 32)
    amax = xb.abs().amax(-1, keepdim=True)
    v = torch.where(amax > 0, xb * 127 / torch.where(amax > 0, amax, 1), 0)
    hi = torch.round(v)
    lo = torch.round((v - hi) * 256).clamp(-127, 127)
    return ((hi + lo / 256) * (amax / 127)).reshape(M, K)


SHAPES = [(1, 1, 256), (1, 17, 512), (3, 33, 256), (4, 16, 768), (5, 100, 512), (9, 7, 1024), (33, 40, 256),
          (2, 19, 96), (1, 5, 32)]  # odd block counts (the AVX-512 tile pairs blocks); simple formats only


def _skip_if_no_blocks(qtype, K):
    if K % gguf.GGML_QUANT_SIZES[qtype][0]:
        pytest.skip(f"{qtype.name} needs K to be a multiple of {gguf.GGML_QUANT_SIZES[qtype][0]}")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("qtype", FORMATS, ids=lambda t: t.name)
@pytest.mark.parametrize("M,N,K", SHAPES)
def test_gemm_matches_dequantized_reference(isa, qtype, M, N, K):
    _skip_if_no_blocks(qtype, K)
    qt = random_blocks(qtype, N, K, seed=M * 1000 + N + K)
    w = cpu_linear.prepare_linear(qt)
    assert isinstance(w, cpu_linear.QuantLinear)
    dense = reference_dense(qt)
    x = torch.randn(M, K, generator=torch.Generator().manual_seed(N))
    with forced_isa(isa):
        y = cpu_linear.quant_matmul(x, w, "int8")
    exact = q8_roundtrip(x) @ dense.T
    torch.testing.assert_close(y, exact, rtol=1e-4, atol=1e-4 * exact.abs().max().item())
    loose = x @ dense.T
    # Cauchy-Schwarz scale: a wrong kernel is off by O(1) of it, 16-bit activation rounding by ~1e-6
    rel = ((y - loose).abs() / (x.norm(dim=1)[:, None] * dense.norm(dim=1)[None, :])).max()
    assert rel < 5e-5, f"activation quantization error too large: {rel:.2e}"


@pytest.mark.parametrize("qtype", FORMATS, ids=lambda t: t.name)
def test_simd_paths_agree_with_scalar(qtype):
    qt = random_blocks(qtype, 37, 512, seed=7)
    w = cpu_linear.prepare_linear(qt)
    x = torch.randn(6, 512, generator=torch.Generator().manual_seed(3))
    outs = {}
    for isa in ISAS:
        with forced_isa(isa):
            outs[isa] = cpu_linear.quant_matmul(x, w, "int8")
    for isa, y in outs.items():
        scale = outs["scalar"].abs().max().item()
        torch.testing.assert_close(y, outs["scalar"], rtol=1e-5, atol=1e-6 * scale, msg=f"{isa} differs from scalar")


def test_strided_rows_of_a_larger_input():
    qt = random_blocks(T.Q4_1, 24, 256, seed=1)
    w = cpu_linear.prepare_linear(qt)
    big = torch.randn(5, 300)
    x = big[:, 10:266]  # row stride 300, unit stride along K
    torch.testing.assert_close(cpu_linear.linear(x, w), cpu_linear.linear(x.contiguous(), w))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("qtype", FORMATS, ids=lambda t: t.name)
@pytest.mark.parametrize("K", [512, 96])  # 96: an odd block count (the bf16 expansion pairs blocks)
def test_dequantize_is_exact(isa, qtype, K):
    _skip_if_no_blocks(qtype, K)
    qt = random_blocks(qtype, 13, K, seed=5)
    w = cpu_linear.prepare_linear(qt)
    with forced_isa(isa):
        got = w.dequantize(torch.float32)
        rows = torch.tensor([12, 0, 5, 5])
        picked = w.dequantize(torch.float32, rows=rows)
        bf = w.dequantize(torch.bfloat16)
    ref = reference_dense(qt)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    torch.testing.assert_close(picked, ref[rows], rtol=0, atol=0)
    torch.testing.assert_close(bf, ref.to(torch.bfloat16), rtol=0, atol=0)


@pytest.mark.skipif(not _C.has_bf16_gemm(), reason="this CPU has no AVX512-BF16")
@pytest.mark.parametrize("qtype", FORMATS, ids=lambda t: t.name)
@pytest.mark.parametrize("M,N,K", SHAPES)
def test_bf16_weight_expanding_gemm(qtype, M, N, K):
    _skip_if_no_blocks(qtype, K)
    qt = random_blocks(qtype, N, K, seed=M + N + K)
    w = cpu_linear.prepare_linear(qt)
    dense = reference_dense(qt)
    x = torch.randn(M, K, generator=torch.Generator().manual_seed(M))
    with forced_isa("avx512"):
        y = cpu_linear.quant_matmul(x, w, "bf16")
    exact = x.bfloat16().float() @ dense.bfloat16().float().T  # both operands rounded, fp32 sums
    torch.testing.assert_close(y, exact, rtol=1e-4, atol=1e-4 * exact.abs().max().item())


def test_bf16_gemm_refused_off_the_avx512_path():
    w = cpu_linear.prepare_linear(random_blocks(T.Q4_0, 4, 64, seed=0))
    with forced_isa("scalar"), pytest.raises(ValueError, match="avx512"):
        cpu_linear.quant_matmul(torch.randn(2, 64), w, "bf16")


@pytest.mark.parametrize("kind", ["small", "big", "big_short_rows"])
@pytest.mark.parametrize("M", [1, 7, 16, 31, 32, 47, 48, 130])
def test_linear_all_paths_and_bias(M, kind, monkeypatch):
    """int8 kernel (M < 4), bf16 kernel (4 <= M < DENSE_MIN_ROWS), chunked bf16 torch GEMM above,
    and from DENSE_BIG_MIN_ROWS rows for a weight of DENSE_BIG_ELEMS elements whose rows are longer
    than DENSE_BIG_MIN_K (a 7B model's MLP); a big weight with short rows (SmolLM2's LM head) follows
    DENSE_MIN_ROWS."""
    big = kind == "big"
    if kind != "small":
        monkeypatch.setattr(cpu_linear, "DENSE_BIG_ELEMS", 48 * 512)
        monkeypatch.setattr(cpu_linear, "DENSE_BIG_MIN_K", 256 if big else 512)
    qt = random_blocks(T.Q4_K, 48, 512, seed=M)
    w = cpu_linear.prepare_linear(qt)
    cpu_linear._CHUNK_ELEMS, chunk = 512 * 20, cpu_linear._CHUNK_ELEMS  # several chunks, a short last one
    x = torch.randn(M, 512)
    bias = torch.randn(48)
    try:
        y = cpu_linear.linear(x, w, bias)
        torch_path = M >= cpu_linear.DENSE_MIN_ROWS or (big and M >= cpu_linear.DENSE_BIG_MIN_ROWS)
        assert torch.equal(y, cpu_linear.dense_matmul(x, w) + bias) == torch_path, "wrong path for this shape"
    finally:
        cpu_linear._CHUNK_ELEMS = chunk
    ref = x @ reference_dense(qt).T + bias
    rel = (y - ref).norm() / ref.norm()
    assert y.shape == (M, 48) and rel < 0.01


def test_embedding_rows_and_dense_fallback():
    qt = random_blocks(T.Q8_0, 50, 64, seed=2)
    w = cpu_linear.prepare_linear(qt)
    ids = torch.tensor([[3, 49], [0, 3]])
    emb = cpu_linear.embedding(ids, w)
    assert emb.shape == (2, 2, 64)
    torch.testing.assert_close(emb, reference_dense(qt)[ids], rtol=0, atol=0)
    with pytest.raises(IndexError):
        cpu_linear.embedding(torch.tensor([50]), w)
    dense = cpu_linear.prepare_linear(torch.randn(8, 16))
    assert isinstance(dense, torch.Tensor)
    torch.testing.assert_close(cpu_linear.embedding(torch.tensor([1]), dense), dense[[1]])


def test_format_without_kernel_is_dequantized_once():
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    qt = QuantTensor(int(T.F16), (4, 64), x.astype(np.float16).view(np.uint8).reshape(4, -1))
    w = cpu_linear.prepare_linear(qt)
    assert isinstance(w, torch.Tensor) and w.dtype == torch.float32
    torch.testing.assert_close(w, torch.from_numpy(x), rtol=1e-3, atol=1e-3)


def test_input_width_mismatch_is_reported():
    w = cpu_linear.prepare_linear(random_blocks(T.Q4_0, 4, 64, seed=0))
    with pytest.raises(ValueError, match="features"):
        cpu_linear.linear(torch.randn(2, 32), w)


def test_batch_invariant_mode_gives_each_row_the_result_it_gets_alone(monkeypatch):
    monkeypatch.setattr(cpu_linear, "BATCH_INVARIANT", True)
    w = cpu_linear.prepare_linear(random_blocks(T.Q4_1, 70, 512, seed=4))
    x = torch.randn(40, 512)
    batched = cpu_linear.linear(x, w)
    for i in [0, 3, 17, 39]:
        assert torch.equal(batched[i:i + 1], cpu_linear.linear(x[i:i + 1], w))
