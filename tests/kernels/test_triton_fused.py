"""Fused RMSNorm (+ residual), rotary embedding and SiLU-and-mul against the torch references and
against the torch op backend (Triton interpreter on the CPU, float32)."""
import pytest
import torch
from paged_batch import DEVICE

from oci_engine.kernels import reference as ref
from oci_engine.kernels.rms_norm import add_rms_norm, rms_norm
from oci_engine.kernels.rotary import rotary
from oci_engine.kernels.silu_and_mul import silu_and_mul
from oci_engine.ops import torch_backend

TOL = 1e-4


@pytest.fixture(autouse=True)
def _on_test_device():
    """Tensors made in a test land on the GPU when there is one (compiled kernels), else the CPU."""
    with torch.device(DEVICE):
        yield


def _err(a, b):
    return (a.float() - b.float()).abs().max().item()


# hidden sizes of SmolLM2-135M (576, not a power of two) and a 4096-wide model, and a tiny one
@pytest.mark.parametrize("hidden", [64, 576, 4096])
@pytest.mark.parametrize("rows", [1, 7])
def test_rms_norm(hidden, rows):
    torch.manual_seed(hidden + rows)
    x, w = torch.randn(rows, hidden) * 3, torch.randn(hidden)
    y = rms_norm(x, w, 1e-5)
    assert _err(y, ref.rms_norm_ref(x, w, 1e-5)) <= TOL
    assert _err(y, torch_backend.rms_norm(x, w, 1e-5)) <= TOL


@pytest.mark.parametrize("hidden", [64, 576])
def test_add_rms_norm(hidden):
    torch.manual_seed(hidden)
    x, r, w = torch.randn(5, hidden), torch.randn(5, hidden), torch.randn(hidden)
    y, s = add_rms_norm(x, r, w, 1e-6)
    ry, rs = ref.add_rms_norm_ref(x, r, w, 1e-6)
    assert _err(s, rs) <= TOL and _err(y, ry) <= TOL
    # the residual stream itself is left untouched: the sum is a new tensor
    assert not torch.equal(s, r)


def test_rms_norm_leading_dims_and_eps():
    """Any leading shape; eps matters for a near-zero row."""
    x, w = torch.zeros(2, 3, 64), torch.ones(64)
    x[0, 0, 0] = 1e-3
    y = rms_norm(x, w, 1e-2)
    assert y.shape == x.shape
    assert _err(y, ref.rms_norm_ref(x, w, 1e-2)) <= TOL


@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("heads", [(4, 4), (9, 3), (8, 1)])  # (q heads, kv heads): GQA 1, 3, 8
def test_rotary_on_qkv_views(head_dim, heads):
    nh, nkv = heads
    T = 11
    torch.manual_seed(head_dim + nh)
    qkv = torch.randn(T, (nh + 2 * nkv) * head_dim)
    q = qkv[:, :nh * head_dim].view(T, nh, head_dim)
    k = qkv[:, nh * head_dim:(nh + nkv) * head_dim].view(T, nkv, head_dim)
    cos_sin = ref.rotary_cos_sin(2048, head_dim, theta=500000.0)
    positions = torch.tensor([0, 1, 2, 3, 100, 101, 1000, 2047, 5, 5, 0])
    q2, k2 = rotary(q, k, positions, cos_sin)
    rq, rk = ref.rotary_ref(q, k, positions, cos_sin)
    assert _err(q2, rq) <= TOL and _err(k2, rk) <= TOL
    tq, tk = torch_backend.rotary(q, k, positions, cos_sin)
    assert _err(q2, tq) <= TOL and _err(k2, tk) <= TOL
    # position 0 is the identity; the rotation preserves each head's norm
    assert _err(q2[0], q[0]) <= TOL
    assert _err(q2.norm(dim=-1), q.norm(dim=-1)) <= 1e-3


def test_rotary_rejects_mismatched_table():
    q, k = torch.randn(2, 2, 64), torch.randn(2, 1, 64)
    with pytest.raises(ValueError, match="head dim"):
        rotary(q, k, torch.zeros(2, dtype=torch.long), ref.rotary_cos_sin(16, 32))


@pytest.mark.parametrize("inter", [64, 1536, 3000])  # 3000: more than one 1024-wide column tile, ragged
def test_silu_and_mul(inter):
    torch.manual_seed(inter)
    gate_up = torch.randn(6, 2 * inter) * 4
    y = silu_and_mul(gate_up)
    assert y.shape == (6, inter)
    assert _err(y, ref.silu_and_mul_ref(gate_up)) <= TOL
    assert _err(y, torch_backend.silu_and_mul(gate_up)) <= TOL


def test_empty_batch():
    w = torch.ones(64)
    assert rms_norm(torch.empty(0, 64), w, 1e-5).shape == (0, 64)
    assert silu_and_mul(torch.empty(0, 128)).shape == (0, 64)
    q, k = rotary(torch.empty(0, 2, 64), torch.empty(0, 1, 64), torch.empty(0, dtype=torch.long),
                  ref.rotary_cos_sin(8, 64))
    assert q.shape == (0, 2, 64) and k.shape == (0, 1, 64)
