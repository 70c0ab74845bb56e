"""Test-only driver for a model over a paged KV cache: hands out blocks from a shuffled free list
(so a sequence's blocks are never contiguous), builds AttentionMetadata for a flat batch of
chunks from several sequences, and returns logits for every new token. The real scheduler and
block pool live in the engine; this is the smallest thing that exercises the model contract."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from oci_engine.attention_metadata import AttentionMetadata
from oci_engine.config import ModelConfig
from oci_engine.loader import load_checkpoint
from oci_engine.models import allocate_kv_cache, build_model


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread():
    """Import into a test module to run it on one intra-op thread. These machines share 2 cores
    among many processes; with 2 threads every small op waits at a barrier for a descheduled
    peer (the tiny-model parity tests took 52 s instead of 7 s, a SmolLM2 decode step 15x longer)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def load_tiny(path: Path):
    """(ModelConfig, tensors) of a checkpoint, through our loader."""
    ckpt = load_checkpoint(path)
    return ckpt.config, ckpt.tensors


class PagedRunner:
    def __init__(self, model, config: ModelConfig, num_blocks: int = 64, block_size: int = 4,
                 kv_dtype=torch.float32, seed: int = 0):
        self.model, self.block_size = model, block_size
        self.kv = allocate_kv_cache(config, num_blocks, block_size, kv_dtype)
        self.free = list(range(num_blocks))
        random.Random(seed).shuffle(self.free)
        self.blocks: dict[int, list[int]] = {}
        self.lengths: dict[int, int] = {}

    def step(self, chunks: list[tuple[int, list[int]]]) -> list[torch.Tensor]:
        """chunks: (sequence id, new token ids) -> logits [n_new, V] per chunk, float32."""
        ids, positions, slots, starts, lens = [], [], [], [0], []
        for sid, toks in chunks:
            blocks = self.blocks.setdefault(sid, [])
            start = self.lengths.get(sid, 0)
            end = start + len(toks)
            while len(blocks) * self.block_size < end:
                blocks.append(self.free.pop())
            for p in range(start, end):
                slots.append(blocks[p // self.block_size] * self.block_size + p % self.block_size)
            ids += toks
            positions += range(start, end)
            starts.append(starts[-1] + len(toks))
            lens.append(end)
            self.lengths[sid] = end
        width = max(len(self.blocks[sid]) for sid, _ in chunks)
        table = torch.zeros(len(chunks), width, dtype=torch.int32)
        for i, (sid, _) in enumerate(chunks):
            table[i, :len(self.blocks[sid])] = torch.tensor(self.blocks[sid], dtype=torch.int32)
        meta = AttentionMetadata(
            slot_mapping=torch.tensor(slots, dtype=torch.int64),
            query_start_loc=torch.tensor(starts, dtype=torch.int32),
            seq_lens=torch.tensor(lens, dtype=torch.int32),
            block_tables=table,
            max_query_len=max(len(t) for _, t in chunks),
            max_seq_len=max(lens),
            is_decode=all(len(t) == 1 for _, t in chunks),
            query_start_loc_list=starts,
            seq_lens_list=lens,
        )
        hidden = self.model.forward(torch.tensor(ids), torch.tensor(positions), self.kv, meta)
        logits = self.model.compute_logits(hidden)
        return list(logits.split([len(t) for _, t in chunks]))

    def greedy(self, prompts: list[list[int]], max_new: int) -> list[list[int]]:
        """Greedy continuations of several prompts decoded together, one batched step per token."""
        base = max(self.blocks, default=-1) + 1
        firsts = self.step([(base + i, p) for i, p in enumerate(prompts)])
        outs = [[int(lg[-1].argmax())] for lg in firsts]
        for _ in range(max_new - 1):
            logits = self.step([(base + i, [o[-1]]) for i, o in enumerate(outs)])
            for o, lg in zip(outs, logits):
                o.append(int(lg[-1].argmax()))
        return outs


def make_model(path: Path, dtype=torch.float32):
    config, tensors = load_tiny(path)
    return build_model(config, tensors, backend="torch", dtype=dtype), config


def hf_model(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()


def hf_greedy(model, prompt: list[int], max_new: int) -> list[int]:
    """Greedy by full recomputation each step (no EOS handling: a fixed number of tokens)."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(max_new):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt):]
