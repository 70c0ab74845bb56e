"""The `cpu` backend (C++ kernels, GGUF weights kept quantized) end to end on SmolLM2-135M Q4_1,
against transformers fp32 reading the same file: teacher-forced next-token argmax agreement and
perplexity. The int8 activation path (decode, short chunks) and the bf16 prefill path are both
covered, since they round differently."""
from __future__ import annotations

import math

import pytest
import torch

from oci_engine.loader import load_checkpoint
from oci_engine.models import build_model
from oci_engine.tokenizer import Tokenizer
from paged_runner import PagedRunner
from test_model_smollm2 import CODE

pytest.importorskip("oci_engine._C", reason="the C++ extension is not built (pip install -e .)")

PROSE = ("The history of computing is a story of abstraction. Early machines were programmed by "
         "rewiring panels; then came stored programs, assemblers, and compilers that let people write "
         "in something closer to mathematics. Each layer hid the one below it, and each one made it "
         "possible for more people to build more ambitious systems. Today a student can write a web "
         "server in a few lines, standing on decades of operating systems, networking stacks, and "
         "language runtimes that she never has to think about. The cost of this convenience is that "
         "performance problems, when they appear, are often far from the code that causes them.")


@pytest.fixture(scope="module")
def cpu_model(smollm2_gguf):
    ckpt = load_checkpoint(smollm2_gguf)
    return build_model(ckpt.config, ckpt.tensors, backend="cpu"), ckpt.config


@pytest.fixture(scope="module")
def texts(smollm2_gguf):
    tok = Tokenizer.from_pretrained(smollm2_gguf)
    return [tok.encode(CODE)[:320], tok.encode(PROSE)]


def _nll(logits: torch.Tensor, ids: list[int]) -> float:
    """Mean negative log-likelihood of ids[1:] given logits for positions 0..n-2."""
    return torch.nn.functional.cross_entropy(logits[:-1].float(), torch.tensor(ids[1:])).item()


def _compare(got: torch.Tensor, ref: torch.Tensor, ids: list[int]):
    agreement = (got[:-1].argmax(-1) == ref[:-1].argmax(-1)).float().mean().item()
    ppl, ppl_ref = math.exp(_nll(got, ids)), math.exp(_nll(ref, ids))
    return agreement, ppl, ppl_ref


# chunk plans: one prefill (chunked bf16 torch GEMM), then chunks of 8 and 12 rows (bf16-expanding
# kernel on AVX512-BF16 CPUs) and token-by-token decode (int8 kernel) over the cached prefix
PLANS = {"prefill": lambda n: [(0, n)],
         "chunks+decode": lambda n: [(0, 40), (40, 48), (48, 60)] + [(i, i + 1) for i in range(60, n)]}


# K/V kept in bf16 (the engine's default on this backend) is read back only by decode and later
# chunks; a one-chunk prefill attends over its own fresh K/V either way
@pytest.mark.parametrize("plan, kv_dtype", [("prefill", torch.float32), ("chunks+decode", torch.float32),
                                            ("chunks+decode", torch.bfloat16)])
def test_agreement_and_perplexity_vs_transformers(cpu_model, texts, smollm2_hf_model, plan, kv_dtype):
    model, config = cpu_model
    for ids in texts:
        runner = PagedRunner(model, config, num_blocks=64, block_size=16, kv_dtype=kv_dtype)
        got = torch.cat([runner.step([(0, ids[a:b])])[0] for a, b in PLANS[plan](len(ids))])
        with torch.no_grad():
            ref = smollm2_hf_model(torch.tensor([ids])).logits[0].float()
        agreement, ppl, ppl_ref = _compare(got, ref, ids)
        assert agreement >= 0.97, f"{plan}, {kv_dtype} K/V: argmax agreement {agreement:.3f} with transformers fp32"
        assert abs(ppl / ppl_ref - 1) < 0.02, f"{plan}, {kv_dtype} K/V: perplexity {ppl:.3f} vs transformers {ppl_ref:.3f}"


@pytest.mark.parametrize("kv_dtype", [torch.float32, torch.bfloat16])
def test_batched_decode_equals_single_sequence_decode(cpu_model, texts, kv_dtype):
    """Sequences decoded in one flat batch get the same greedy tokens as each decoded alone."""
    model, config = cpu_model
    prompts = [texts[0][:20], texts[1][:33], texts[0][100:105]]
    kw = dict(num_blocks=64, block_size=16, kv_dtype=kv_dtype)
    together = PagedRunner(model, config, **kw).greedy(prompts, 12)
    alone = [PagedRunner(model, config, **kw).greedy([p], 12)[0] for p in prompts]
    assert together == alone
