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

from oci_engine.attention_metadata import AttentionMetadata
from oci_engine.cuda_graphs import DEFAULT_BATCH_SIZES, model_decode_graphs
from oci_engine.scheduler import ScheduledBatch


def graph_batch_sizes(max_num_seqs: int, sizes=DEFAULT_BATCH_SIZES) -> list[int]:
    """The buckets worth capturing: none larger than the scheduler can ever run at once."""
    out = [b for b in sizes if b < max_num_seqs]
    return out + [max_num_seqs] if max_num_seqs <= max(sizes) else out


class DecodeGraphRunner:
    def __init__(self, model, kv_caches: list, block_size: int, max_seq_len: int, max_num_seqs: int,
                 device="cuda", batch_sizes=None):
        # Block tables are captured at their widest, so every context up to max_seq_len replays.
        self.width = -(-max_seq_len // block_size)
        sizes = batch_sizes or graph_batch_sizes(max_num_seqs)
        self.max_batch = max(sizes)
        with torch.inference_mode():  # as the eager steps run (ModelRunner.execute)
            self.graphs = model_decode_graphs(model, kv_caches, self.width, sizes, device=device)

    def handles(self, batch: ScheduledBatch) -> bool:
        """One new token per sequence, each the last one it has (so each is sampled), no prompt logprobs,
        and block tables within the captured width."""
        if len(batch.seqs) > self.max_batch:
            return False
        for seq, n in zip(batch.seqs, batch.num_new_tokens):
            if (n != 1 or seq.num_computed_tokens + 1 != len(seq) or seq.wants_prompt_logprobs
                    or len(seq.block_table) > self.width):
                return False
        return True

    def logits(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        """[B, vocab] logits of a decode step the ModelRunner described (its _metadata), row i for sequence i."""
        return self.graphs(dict(input_ids=input_ids, positions=positions, slot_mapping=meta.slot_mapping,
                                seq_lens=meta.seq_lens, block_tables=meta.block_tables))
