"""The KV cache's element type: bf16 by default on the `cpu` backend (twice the tokens per GiB),
float32 on request, the model's dtype on the torch and triton backends, and clear errors for the
rest. The accuracy of bf16 K/V is checked against transformers in
tests/runtime/test_cpu_backend_smollm2.py."""
from __future__ import annotations

import pytest
import torch

from oci_engine import LLM, SamplingParams
from oci_engine.engine_args import resolve_kv_dtype
from oci_engine.errors import InvalidRequestError

pytest.importorskip("oci_engine._C", reason="the C++ extension is not built (pip install -e .)")


def test_cpu_backend_keeps_bf16_kv_by_default_with_twice_the_tokens(smollm2_gguf):
    default = LLM(str(smollm2_gguf), backend="cpu", kv_cache_memory=0.05)
    fp32 = LLM(str(smollm2_gguf), backend="cpu", kv_cache_memory=0.05, kv_cache_dtype="float32")
    k, v = default.engine.runner.kv_caches[0]
    assert k.dtype == v.dtype == torch.bfloat16
    assert fp32.engine.runner.kv_caches[0][0].dtype == torch.float32
    assert default.stats.num_blocks // 2 == fp32.stats.num_blocks  # whole blocks of 0.05 GiB
    sp = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)
    prompt = "def fibonacci(n):\n    "
    out = default.generate(prompt, sp, use_tqdm=False)[0]
    ref = fp32.generate(prompt, sp, use_tqdm=False)[0]
    assert len(out.token_ids) == 24
    # 16-bit K/V rounds the attention inputs, not the model: the first tokens agree
    assert out.token_ids[:8] == ref.token_ids[:8], (out.text, ref.text)
    assert default.stats.num_blocks_used == 0


def test_resolution_per_backend():
    assert resolve_kv_dtype("auto", torch.float32, "cpu") == torch.bfloat16
    assert resolve_kv_dtype(None, torch.float32, "cpu") == torch.bfloat16
    assert resolve_kv_dtype("auto", torch.float32, "torch") == torch.float32
    assert resolve_kv_dtype("auto", torch.bfloat16, "triton") == torch.bfloat16
    assert resolve_kv_dtype("fp32", torch.float32, "cpu") == torch.float32
    assert resolve_kv_dtype(torch.bfloat16, torch.float32, "torch") == torch.bfloat16
    assert resolve_kv_dtype("float16", torch.float32, "torch") == torch.float16


@pytest.mark.parametrize("kv, backend, model_dtype, words", [
    ("int4", "cpu", torch.float32, "unknown dtype"),
    ("float16", "cpu", torch.float32, "float32 or bfloat16"),
    ("float32", "triton", torch.bfloat16, "model's dtype"),
])
def test_unsupported_kv_dtypes_are_refused(kv, backend, model_dtype, words):
    with pytest.raises(InvalidRequestError, match=words):
        resolve_kv_dtype(kv, model_dtype, backend)


def test_a_bad_kv_dtype_fails_at_engine_creation(smollm2_gguf):
    with pytest.raises(InvalidRequestError, match="kv_cache_dtype"):
        LLM(str(smollm2_gguf), backend="cpu", kv_cache_memory=0.05, kv_cache_dtype="float16")
