"""The `cpu` backend's prefill-sized paths: the bf16 dense GEMM (one chunk or several, bf16 or fp32
out) and the SwiGLU MLP op that keeps its intermediates in bf16, against fp32 torch on the
dequantized weights; below the dense threshold the MLP op must be exactly the op-by-op path."""
from __future__ import annotations

import gguf
import pytest
import torch
from cpu_isa import ISAS, forced_isa
from test_cpu_qgemm import random_blocks, reference_dense

from oci_engine.ops import cpu_backend, cpu_linear
from oci_engine.ops import torch_backend as ref

T = gguf.GGMLQuantizationType


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b).norm() / b.norm()).item()


@pytest.mark.parametrize("qtype", [T.Q4_1, T.Q8_0, T.Q6_K], ids=lambda t: t.name)
def test_dense_matmul_one_chunk_and_many_agree(qtype, monkeypatch):
    qt = random_blocks(qtype, 70, 512, seed=3)
    w = cpu_linear.prepare_linear(qt)
    x = torch.randn(50, 512)
    want = x @ reference_dense(qt).T
    one = cpu_linear.dense_matmul(x, w)
    assert one.dtype == torch.float32 and _rel(one, want) < 1e-2
    # a bf16 input is used as it is; asking for bf16 out rounds the same GEMM's result
    assert torch.equal(cpu_linear.dense_matmul(x.bfloat16(), w), one)
    assert torch.equal(cpu_linear.dense_matmul(x, w, torch.bfloat16), one.bfloat16())
    monkeypatch.setattr(cpu_linear, "_CHUNK_ELEMS", 512 * 16)  # 16-row chunks, a short last one
    many = cpu_linear.dense_matmul(x, w)
    torch.testing.assert_close(many, one, rtol=1e-5, atol=1e-5)
    many_bf16 = cpu_linear.dense_matmul(x.bfloat16(), w, torch.bfloat16)
    assert many_bf16.dtype == torch.bfloat16
    torch.testing.assert_close(many_bf16.float(), one, rtol=1e-2, atol=1e-2)


def _mlp_weights(hidden: int, inter: int, bias: bool):
    gu, dn = random_blocks(T.Q4_1, 2 * inter, hidden, seed=1), random_blocks(T.Q4_K, hidden, inter, seed=2)
    biases = (torch.randn(2 * inter), torch.randn(hidden)) if bias else (None, None)
    return gu, dn, biases


def _reference_mlp(x, gu, dn, biases):
    g = x @ reference_dense(gu).T
    d = reference_dense(dn)
    if biases[0] is not None:
        g = g + biases[0]
    y = ref.silu_and_mul(g) @ d.T
    return y if biases[1] is None else y + biases[1]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [1, 5, 47, 48, 200])
def test_mlp_op_matches_fp32_and_equals_per_op_path_below_threshold(isa, bias, rows):
    hidden, inter = 96, 256
    gu, dn, biases = _mlp_weights(hidden, inter, bias)
    x = torch.randn(rows, hidden)
    with forced_isa(isa):
        wg, wd = cpu_linear.prepare_linear(gu), cpu_linear.prepare_linear(dn)
        got = cpu_backend.mlp(x, wg, biases[0], wd, biases[1])
        per_op = cpu_linear.linear(cpu_backend.silu_and_mul(cpu_linear.linear(x, wg, biases[0])), wd, biases[1])
    assert got.shape == (rows, hidden) and got.dtype == torch.float32
    assert _rel(got, _reference_mlp(x, gu, dn, biases)) < 2e-2
    if rows < cpu_linear.DENSE_MIN_ROWS:
        assert torch.equal(got, per_op), "below the dense threshold the MLP op must be the op-by-op path"
    else:  # bf16 intermediates: close to the per-op path's fp32 ones, but not equal (the path was taken)
        assert not torch.equal(got, per_op) and _rel(got, per_op) < 1e-2


def test_mlp_op_in_batch_invariant_mode_is_the_per_op_path(monkeypatch):
    gu, dn, _ = _mlp_weights(96, 256, False)
    wg, wd = cpu_linear.prepare_linear(gu), cpu_linear.prepare_linear(dn)
    monkeypatch.setattr(cpu_linear, "BATCH_INVARIANT", True)
    x = torch.randn(64, 96)
    per_op = cpu_linear.linear(cpu_backend.silu_and_mul(cpu_linear.linear(x, wg)), wd)
    assert torch.equal(cpu_backend.mlp(x, wg, None, wd, None), per_op)
