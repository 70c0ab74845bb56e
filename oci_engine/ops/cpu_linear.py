"""Linear layers of the `cpu` backend: GGUF weights stay in their block format and run through the
C++ integer GEMM (oci_engine._C); dense weights go to torch.

Three paths for a quantized weight, chosen by the number of rows M in the call (thresholds
measured on SmolLM2's shapes, AVX-512 machine, 1-2 threads):
- M < 4 (decode): activations quantized once per row to two int8 planes and dotted with the raw
  blocks by integer instructions (no copy: resident memory stays at the file size);
- 4 <= M < DENSE_MIN_ROWS (batched decode), on CPUs with AVX512-BF16: the C++ kernel expands each
  weight row to bf16 once and runs vdpbf16ps against every row in 4 x 4 register tiles (the C++
  side picks this itself); at 16 rows it beats the torch path below on every shape (by 10-40%,
  one thread; the 49k-row LM head by 15%), at 32 rows it ties on the layers and keeps a batched
  decode step of 32 sequences in the fused decoder stack (cpu_decoder.py: 7% faster per step than
  the per-op path, one thread); big weights with long rows take the torch path from 32 rows
  (DENSE_BIG_ELEMS, DENSE_BIG_MIN_K);
- M >= DENSE_MIN_ROWS (prefill): the weight is expanded to bf16 in row chunks into one reused
  scratch buffer (bounded memory, no page faults per call) and multiplied by torch's blocked GEMM
  (oneDNN), which beats both kernels once a weight row meets this many activation rows.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from oci_engine import _C  # noqa: E402  (torch first: the extension then shares torch's OpenMP runtime)
from oci_engine.errors import BackendError, UnsupportedModelError

try:
    _C.isa()  # resolves OCI_ENGINE_ISA now, so a bad value fails at backend selection
except ValueError as e:
    raise BackendError(f"OCI_ENGINE_ISA: {e}; unset it to pick the fastest path automatically") from e

# ggml type ids with a C++ kernel (gguf.GGMLQuantizationType values)
KERNEL_TYPES = {2: "Q4_0", 3: "Q4_1", 8: "Q8_0", 12: "Q4_K", 14: "Q6_K"}
BLOCK_ELEMS = {2: 32, 3: 32, 8: 32, 12: 256, 14: 256}
DENSE_MIN_ROWS = 48


def _cpu_has_amx() -> bool:
    """AMX tiles (Intel from Sapphire Rapids): torch's bf16 GEMM (oneDNN) then ran ~1.1 TFLOP/s on
    2 cores, against 0.69 on the AVX-512 FMAs of an AMD Zen 5, which moves where it overtakes ours."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_bf16" in line.split()
    except OSError:
        pass
    return False


# Weights this large take the torch path from 32 rows: an LM head over a big vocabulary, with AMX
# (SmolLM2's 49152 x 576 Q8_0 head, one thread: 16 rows 1.7 ms faster in the bf16 kernel, 32 rows
# 1 ms slower there), and without AMX those with long rows (a 7B model's MLP and LM head, a 1B
# model's MLP: the bf16 kernel tied at 32 rows and lost from 64, 7B Q4_K up-projection 1.23x slower,
# Q6_K LM head 1.10x; random blocks, 2 threads, Zen 5). Without AMX a big weight with short rows
# (SmolLM2's head) follows DENSE_MIN_ROWS like the layers: the kernel took 0.68x the torch path's
# time at 32 rows, 0.72x at 48, 0.93x at 128 (one thread 0.83x / 0.93x / 0.98x).
DENSE_BIG_ELEMS, DENSE_BIG_MIN_ROWS = 1 << 23, 32
DENSE_BIG_MIN_K = 0 if _cpu_has_amx() else 1024  # rows up to this long count as short

# OCI_ENGINE_BATCH_INVARIANT=1 keeps every call on the int8 kernel, whose result for a row does not
# depend on the other rows in the step (bitwise): a request then decodes the same tokens alone or
# batched, at the cost of batched-decode and prefill speed.
BATCH_INVARIANT = os.environ.get("OCI_ENGINE_BATCH_INVARIANT", "") not in ("", "0")
_CHUNK_ELEMS = 1 << 21  # bf16 weights expanded per torch GEMM call: 4 MiB of scratch
_scratch: list[torch.Tensor] = []


@dataclass(slots=True)
class QuantLinear:
    """A [out_features, in_features] weight as raw GGUF blocks, one row per output feature."""
    ggml_type: int
    out_features: int
    in_features: int
    data: np.ndarray  # uint8 [out_features, row_bytes], rows contiguous
    address: int
    row_stride: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.out_features, self.in_features)

    @classmethod
    def from_quant_tensor(cls, qt) -> "QuantLinear":
        data = np.asarray(qt.data)
        if data.ndim != 2 or data.dtype != np.uint8:
            raise UnsupportedModelError(f"quantized weight of shape {qt.shape} is not a uint8 block matrix "
                                        f"(got {data.dtype} {data.shape}); the loader handed over a malformed tensor")
        if data.strides[1] != 1:
            data = np.ascontiguousarray(data)
        return cls(qt.ggml_type, qt.shape[0], qt.shape[1], data, data.__array_interface__["data"][0], data.strides[0])

    def dequantize(self, dtype=torch.float32, rows: torch.Tensor | None = None) -> torch.Tensor:
        """All rows (or the rows `rows` picks) as a dense tensor, via the C++ dequantizer."""
        bf16 = dtype == torch.bfloat16
        n = self.out_features if rows is None else rows.numel()
        out = torch.empty(n, self.in_features, dtype=torch.bfloat16 if bf16 else torch.float32)
        ids = 0
        if rows is not None:
            rows = rows.reshape(-1).to(torch.int64).contiguous()
            if n and (int(rows.min()) < 0 or int(rows.max()) >= self.out_features):
                raise IndexError(f"row index out of range for a weight with {self.out_features} rows")
            ids = rows.data_ptr()
        _C.dequant(self.address, self.row_stride, self.ggml_type, n, self.in_features, out.data_ptr(), bf16, ids,
                   self.in_features)
        return out if out.dtype == dtype else out.to(dtype)


def prepare_linear(weight, dtype=torch.float32, device="cpu"):
    """QuantLinear for a GGUF weight with a kernel; a dense fp32 (or model-dtype) tensor otherwise."""
    if isinstance(weight, torch.Tensor):
        return weight.to(device=device, dtype=dtype).contiguous()
    if weight.ggml_type in KERNEL_TYPES and weight.shape[1] % BLOCK_ELEMS[weight.ggml_type] == 0:
        return QuantLinear.from_quant_tensor(weight)
    # F16/BF16/F32 blocks or a format without a kernel (Q5_K, IQ*): dense, dequantized once
    return weight.dequantize(torch.float32).to(device=device, dtype=dtype).contiguous()


def quant_matmul(x2: torch.Tensor, w: QuantLinear, path: str = "auto") -> torch.Tensor:
    """x2 [M, in] float32 with unit stride along in -> [M, out] float32 through the C++ kernels;
    path: "auto", "int8" or "bf16" (the latter only on the avx512 path of a CPU with AVX512-BF16)."""
    M = x2.shape[0]
    y = torch.empty(M, w.out_features, dtype=torch.float32)
    if M:
        _C.gemm(w.address, w.row_stride, w.ggml_type, w.out_features, w.in_features, x2.data_ptr(), M,
                x2.stride(0), y.data_ptr(), w.out_features, path)
    return y


def dense_matmul(x2: torch.Tensor, w: QuantLinear, out_dtype=torch.float32) -> torch.Tensor:
    """x2 [M, in] (float32 or bfloat16) @ W^T through bf16 row chunks of W and torch.mm. A bf16
    result is the GEMM's own output where W fits one chunk (no copy): the prefill MLP feeds it to
    the next GEMM, which reads bf16 anyway."""
    K, N = w.in_features, w.out_features
    xb = x2 if x2.dtype == torch.bfloat16 else x2.to(torch.bfloat16)
    rows = max(1, min(N, _CHUNK_ELEMS // K))
    if not _scratch or _scratch[0].numel() < rows * K:
        _scratch[:] = [torch.empty(rows * K, dtype=torch.bfloat16)]
    buf = _scratch[0]
    if rows == N:
        wb = buf[:N * K].view(N, K)
        _C.dequant(w.address, w.row_stride, w.ggml_type, N, K, wb.data_ptr(), True, 0, K)
        y = torch.mm(xb, wb.t())
        return y if out_dtype == torch.bfloat16 else y.to(out_dtype)
    y = torch.empty(x2.shape[0], N, dtype=out_dtype)
    for r0 in range(0, N, rows):
        n = min(rows, N - r0)
        wb = buf[:n * K].view(n, K)
        _C.dequant(w.address + r0 * w.row_stride, w.row_stride, w.ggml_type, n, K, wb.data_ptr(), True, 0, K)
        y[:, r0:r0 + n] = torch.mm(xb, wb.t())
    return y


def takes_dense(rows: int, handle) -> bool:
    """Whether a call of this many rows on this weight goes to dense_matmul (see the module notes)."""
    if BATCH_INVARIANT or not isinstance(handle, QuantLinear):
        return False
    big = handle.out_features * handle.in_features >= DENSE_BIG_ELEMS and handle.in_features > DENSE_BIG_MIN_K
    return rows >= DENSE_MIN_ROWS or (big and rows >= DENSE_BIG_MIN_ROWS)


def linear(x: torch.Tensor, handle, bias: torch.Tensor | None = None) -> torch.Tensor:
    if isinstance(handle, torch.Tensor):
        return F.linear(x, handle, bias)
    if x.shape[-1] != handle.in_features:
        raise ValueError(f"linear: input has {x.shape[-1]} features, weight expects {handle.in_features}")
    lead = x.shape[:-1]
    x2 = x.reshape(-1, handle.in_features)
    if takes_dense(x2.shape[0], handle):
        y = dense_matmul(x2, handle)
    else:
        if x2.dtype != torch.float32 or x2.stride(-1) != 1:
            x2 = x2.float().contiguous()
        y = quant_matmul(x2, handle, "int8" if BATCH_INVARIANT else "auto")
    if bias is not None:
        y += bias
    y = y.reshape(*lead, handle.out_features)
    return y if y.dtype == x.dtype else y.to(x.dtype)


def embedding(ids: torch.Tensor, handle) -> torch.Tensor:
    if isinstance(handle, torch.Tensor):
        return F.embedding(ids, handle)
    return handle.dequantize(torch.float32, rows=ids).reshape(*ids.shape, handle.in_features)
