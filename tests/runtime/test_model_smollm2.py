"""The real default model: SmolLM2-135M-Instruct (Q4_1 GGUF) through our loader, tokenizer and
torch-backend model, against transformers reading the same file (dequantized to fp32)."""
from __future__ import annotations

import pytest
import torch

from oci_engine.tokenizer import Tokenizer
from paged_runner import PagedRunner, make_model, single_torch_thread  # noqa: F401 (autouse)

CODE = '''import heapq
from dataclasses import dataclass, field


@dataclass(order=True)
class Job:
    priority: int
    name: str = field(compare=False)
    retries: int = field(default=0, compare=False)


class JobQueue:
    """A priority queue of jobs; lower numbers run first."""

    def __init__(self):
        self._heap: list[Job] = []
        self._names: set[str] = set()

    def push(self, job: Job) -> None:
        if job.name in self._names:
            raise ValueError(f"duplicate job {job.name!r}")
        heapq.heappush(self._heap, job)
        self._names.add(job.name)

    def pop(self) -> Job:
        job = heapq.heappop(self._heap)
        self._names.discard(job.name)
        return job

    def __len__(self) -> int:
        return len(self._heap)


def fibonacci(n: int) -> list[int]:
    seq = [0, 1]
    while len(seq) < n:
        seq.append(seq[-1] + seq[-2])
    return seq[:n]


if __name__ == "__main__":
    q = JobQueue()
    for i, name in enumerate(["build", "test", "deploy"]):
        q.push(Job(priority=3 - i, name=name))
    while q:
        print(q.pop().name, fibonacci(10))
'''

RAW_PROMPTS = ["def is_prime(n):\n", "# Sort a list of dictionaries by the key 'age'\n"]
CHAT_PROMPTS = ["Write a Python function that reverses a string.",
                "Write a Python function that returns the factorial of n, with a docstring."]
NEW_TOKENS = 32


@pytest.fixture(scope="module")
def ours(smollm2_gguf):
    return make_model(smollm2_gguf)


@pytest.fixture(scope="module")
def tokenizer(smollm2_gguf):
    return Tokenizer.from_pretrained(smollm2_gguf)


def test_teacher_forced_argmax_agreement_on_code(ours, tokenizer, smollm2_hf_model):
    model, config = ours
    ids = tokenizer.encode(CODE)
    assert len(ids) >= 300
    ids = ids[:320]
    runner = PagedRunner(model, config, num_blocks=32, block_size=16)
    # through the paged cache in three chunks, the way a chunked prefill sees it
    got = torch.cat([runner.step([(0, ids[a:b])])[0] for a, b in [(0, 100), (100, 101), (101, 320)]])
    with torch.no_grad():
        ref = smollm2_hf_model(torch.tensor([ids])).logits[0].float()
    agreement = (got.argmax(-1) == ref.argmax(-1)).float().mean().item()
    assert agreement >= 0.995
    # both dequantize the same blocks to fp32: the logits themselves agree closely too
    assert (got - ref).abs().max().item() < 1e-2


def _hf_greedy(model, prompt: list[int], n: int, eos: set[int]) -> list[int]:
    out = []
    with torch.no_grad():
        res = model(torch.tensor([prompt]), use_cache=True)
        for _ in range(n):
            tok = int(res.logits[0, -1].argmax())
            out.append(tok)
            if tok in eos:
                break
            res = model(torch.tensor([[tok]]), past_key_values=res.past_key_values, use_cache=True)
    return out


def test_greedy_continuations_match_transformers(ours, tokenizer, smollm2_hf_model):
    model, config = ours
    prompts = [tokenizer.encode(p) for p in RAW_PROMPTS]
    prompts += [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                              tokenize=True) for p in CHAT_PROMPTS]
    eos = set(config.eos_token_id)
    # decoded together, one flat batch per step, so batching must not change a greedy token
    outs = PagedRunner(model, config, num_blocks=64, block_size=16).greedy(prompts, NEW_TOKENS)
    for prompt, out in zip(prompts, outs):
        ref = _hf_greedy(smollm2_hf_model, prompt, NEW_TOKENS, eos)
        assert len(ref) == NEW_TOKENS, "pick prompts whose answers run past 32 tokens"
        assert out == ref, (tokenizer.decode(prompt), tokenizer.decode(out), tokenizer.decode(ref))
