"""The triton op table end to end: a tiny Llama run through it (kernels in the interpreter on the
CPU, float32) gives the same logits and greedy tokens as the torch reference backend, over a paged
cache with prefill, a cached prefix, and batched decode steps."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from paged_runner import PagedRunner, load_tiny  # noqa: E402

from oci_engine.models import build_model  # noqa: E402
from oci_engine.ops import get_ops  # noqa: E402


def _runners(path, block_size=16):
    config, tensors = load_tiny(path)
    models = [build_model(config, tensors, backend=b, dtype=torch.float32) for b in ("torch", "triton")]
    return [PagedRunner(m, config, num_blocks=32, block_size=block_size) for m in models]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter path; on a GPU test_triton_gpu runs the model")
@pytest.mark.parametrize("arch,overrides", [
    ("llama", dict(hidden_size=256, num_attention_heads=4, num_key_value_heads=1)),  # head_dim 64, GQA 4
    ("qwen2", dict(hidden_size=192, num_attention_heads=3, num_key_value_heads=1)),  # qkv bias, GQA 3
])
def test_triton_backend_matches_torch_backend(tiny_checkpoint, arch, overrides):
    ref, tri = _runners(tiny_checkpoint(arch, **overrides))
    assert tri.model.ops.name == "triton"
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 256, (n,), generator=g).tolist() for n in (21, 5, 40)]
    # step 1: two fresh prompts in one flat batch; step 2: a third prompt plus one more chunk of the
    # first (its first 21 tokens are now a cached prefix); steps 3+: batched decode
    steps = [[(0, prompts[0]), (1, prompts[1])],
             [(2, prompts[2]), (0, prompts[1][:3])]]
    for chunks in steps:
        for a, b in zip(ref.step(chunks), tri.step(chunks)):
            assert (a - b).abs().max().item() <= 1e-4
    toks = {0: 7, 1: 8, 2: 9}
    for _ in range(3):
        chunks = [(sid, [t]) for sid, t in toks.items()]
        outs_ref, outs_tri = ref.step(chunks), tri.step(chunks)
        for sid, a, b in zip(list(toks), outs_ref, outs_tri):
            assert (a - b).abs().max().item() <= 1e-4
            assert int(a[-1].argmax()) == int(b[-1].argmax())
            toks[sid] = int(b[-1].argmax())


def test_quantized_weight_is_dequantized_at_load():
    """A GGUF QuantTensor handed to prepare_linear becomes the dense weight it encodes."""
    import gguf
    import numpy as np

    from oci_engine.loader.quant_tensor import QuantTensor

    w = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    qt = QuantTensor(int(gguf.GGMLQuantizationType.Q8_0), (8, 64),
                     gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q8_0))
    dense = get_ops("triton").prepare_linear(qt, dtype=torch.float32, device="cpu")
    assert dense.shape == (8, 64) and dense.dtype == torch.float32
    assert torch.equal(dense, qt.dequantize())
    assert (dense - torch.from_numpy(w)).abs().max().item() < 0.05  # Q8_0 is close to the original


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_backend_without_gpu_or_interpreter_is_a_typed_error():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = ("from oci_engine.ops import get_ops\n"
            "from oci_engine.errors import BackendError\n"
            "try:\n    get_ops('triton')\nexcept BackendError as e:\n    print('BackendError:', e)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "BackendError:" in out.stdout and "CUDA GPU" in out.stdout, out.stdout + out.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_gpu_bench_without_cuda_says_so():
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-m", "bench", "gpu"], cwd=root, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2
    assert "no CUDA GPU" in out.stderr and "Traceback" not in out.stderr
