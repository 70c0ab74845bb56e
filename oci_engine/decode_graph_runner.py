"""Decode steps of the engine through captured CUDA graphs (triton backend on a GPU).

A decode step of a small model on a GPU is launch-bound: dozens of kernels per layer, each a few
microseconds of GPU work behind tens of microseconds of Python and launch cost. The ModelRunner
hands every step that `handles` accepts to `logits`, which replays the graph captured for the
smallest batch-size bucket that holds it (see cuda_graphs.DecodeGraphs); anything else (prefill
chunks, prompt logprobs, batches beyond the largest bucket) runs eagerly. `enforce_eager=True`
turns this off, as in vLLM.
"""
from __future__ import annotations

import torch

from oci_engine.cuda_graphs import DEFAULT_BATCH_SIZES, model_decode_graphs
from oci_engine.scheduler import ScheduledBatch


def graph_batch_sizes(max_num_seqs: int, sizes=DEFAULT_BATCH_SIZES) -> list[int]:
    """The buckets worth capturing: none larger than the scheduler can ever run at once."""
    out = [b for b in sizes if b < max_num_seqs]
    return out + [max_num_seqs] if max_num_seqs <= max(sizes) else out


class DecodeGraphRunner:
    def __init__(self, model, kv_caches: list, block_size: int, max_seq_len: int, max_num_seqs: int,
                 device="cuda", batch_sizes=None):
        self.block_size = block_size
        # Block tables are captured at their widest, so every context up to max_seq_len replays.
        self.width = -(-max_seq_len // block_size)
        self.device = torch.device(device)
        sizes = batch_sizes or graph_batch_sizes(max_num_seqs)
        self.max_batch = max(sizes)
        with torch.inference_mode():  # as the eager steps run (ModelRunner.execute)
            self.graphs = model_decode_graphs(model, kv_caches, self.width, sizes, device=device)

    def handles(self, batch: ScheduledBatch) -> bool:
        """One new token per sequence, each the last one it has (so each is sampled), no prompt logprobs."""
        if len(batch.seqs) > self.max_batch:
            return False
        for seq, n in zip(batch.seqs, batch.num_new_tokens):
            if n != 1 or seq.num_computed_tokens + 1 != len(seq) or seq.wants_prompt_logprobs:
                return False
        return True

    def logits(self, batch: ScheduledBatch) -> torch.Tensor:
        """[len(batch.seqs), vocab] logits of the step, row i for batch.seqs[i]."""
        bs = self.block_size
        n = len(batch.seqs)
        ids, pos, slots, lens = [], [], [], []
        # Attention reads a row only up to its seq_len; blocks held beyond that are not passed.
        cols = max(-(-(s.num_computed_tokens + 1) // bs) for s in batch.seqs)
        table = torch.zeros(n, cols, dtype=torch.int32)
        for i, seq in enumerate(batch.seqs):
            p = seq.num_computed_tokens
            ids.append(seq.token_ids[p])
            pos.append(p)
            slots.append(seq.block_table[p // bs] * bs + p % bs)
            lens.append(p + 1)
            used = seq.block_table[:-(-(p + 1) // bs)]
            table[i, :len(used)] = torch.tensor(used, dtype=torch.int32)
        dev = self.device
        inputs = dict(input_ids=torch.tensor(ids, dtype=torch.int64).to(dev, non_blocking=True),
                      positions=torch.tensor(pos, dtype=torch.int64).to(dev, non_blocking=True),
                      slot_mapping=torch.tensor(slots, dtype=torch.int64).to(dev, non_blocking=True),
                      seq_lens=torch.tensor(lens, dtype=torch.int32).to(dev, non_blocking=True),
                      block_tables=table.to(dev, non_blocking=True))
        return self.graphs(inputs)
