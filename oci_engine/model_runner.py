"""One forward pass over a scheduled batch: flatten its tokens, describe them to the attention op,
run the model, and sample.

Logits are computed only where they are used: the last new token of each sequence that reaches its
end this step (a prefill chunk that stops mid-prompt needs none), plus every prompt position of a
request that asked for prompt logprobs. The LM head over a 49k vocabulary costs as much as several
layers, so this is most of a prefill's savings beyond attention.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from oci_engine.attention_metadata import AttentionMetadata
from oci_engine.kv_cache_manager import KVCacheManager
from oci_engine.sampler import SampleResult, SamplingRow, make_generator, sample, top_logprobs
from oci_engine.scheduler import ScheduledBatch
from oci_engine.sequence import Sequence


@dataclass(slots=True)
class StepResult:
    sampled: dict[int, SampleResult]  # seq_id -> the token picked for it this step


def _take_rows(x: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """x[rows] for increasing rows; a decode step takes every row in order, and then no gather copy."""
    if len(rows) == x.shape[0] and rows[-1] == len(rows) - 1:
        return x
    return x[torch.tensor(rows, device=x.device)]


class ModelRunner:
    def __init__(self, model, kv: KVCacheManager, kv_caches: list, eos_token_ids=(), device="cpu"):
        self.model = model
        self.kv = kv
        self.kv_caches = kv_caches
        self.eos_token_ids = tuple(eos_token_ids)
        self.device = torch.device(device)
        self._generators: dict[int, torch.Generator | None] = {}
        self.graphs = None  # a DecodeGraphRunner when decode steps replay CUDA graphs (engine_args sets it)

    def release(self, seq: Sequence) -> None:
        self._generators.pop(seq.seq_id, None)

    def _metadata(self, batch: ScheduledBatch):
        bs = self.kv.block_size
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        starts = [0]
        lens = []
        for seq, n in zip(batch.seqs, batch.num_new_tokens):
            start, table = seq.num_computed_tokens, seq.block_table
            if n == 1:  # decode: the common case, without building ranges
                ids.append(seq.token_ids[start])
                positions.append(start)
                slots.append(table[start // bs] * bs + start % bs)
            else:
                ids += seq.token_ids[start:start + n]
                positions += range(start, start + n)
                slots += [table[p // bs] * bs + p % bs for p in range(start, start + n)]
            starts.append(starts[-1] + n)
            lens.append(start + n)
        tables = [s.block_table for s in batch.seqs]
        width = max(map(len, tables))
        # one tensor from padded lists: a row-by-row copy costs a tensor per sequence per step
        table = torch.tensor([t if len(t) == width else t + [0] * (width - len(t)) for t in tables],
                             dtype=torch.int32)
        dev = self.device
        to = (lambda t: t) if dev.type == "cpu" else (lambda t: t.to(dev, non_blocking=True))  # noqa: E731
        meta = AttentionMetadata(
            slot_mapping=to(torch.tensor(slots, dtype=torch.int64)),
            query_start_loc=to(torch.tensor(starts, dtype=torch.int32)),
            seq_lens=to(torch.tensor(lens, dtype=torch.int32)),
            block_tables=to(table),
            max_query_len=max(batch.num_new_tokens),
            max_seq_len=max(lens),
            is_decode=all(n == 1 for n in batch.num_new_tokens),
            query_start_loc_list=starts,
            seq_lens_list=lens,
        )
        input_ids = to(torch.tensor(ids, dtype=torch.int64))
        pos = to(torch.tensor(positions, dtype=torch.int64))
        return input_ids, pos, meta, starts

    @torch.inference_mode()
    def execute(self, batch: ScheduledBatch) -> StepResult:
        input_ids, positions, meta, starts = self._metadata(batch)
        if self.graphs is not None and self.graphs.handles(batch):
            logits = self.graphs.logits(input_ids, positions, meta).float()
            return self._sample(logits, [(seq, i) for i, seq in enumerate(batch.seqs)])
        hidden = self.model.forward(input_ids, positions, self.kv_caches, meta)

        rows: list[int] = []  # hidden rows that get logits
        samplers: list[tuple[Sequence, int]] = []  # (seq, index into rows)
        prompt_lp: list[tuple[Sequence, int, int, int]] = []  # (seq, first row idx, first position, count)
        for i, (seq, n) in enumerate(zip(batch.seqs, batch.num_new_tokens)):
            start = seq.num_computed_tokens
            if seq.wants_prompt_logprobs:
                # Row j scores the token after position start + j. A sequence recomputed after
                # preemption has already scored some positions.
                first = max(start, len(seq.prompt_logprobs) - 1 if seq.prompt_logprobs else 0)
                scored = min(start + n, seq.num_prompt_tokens - 1) - first
                if scored > 0:
                    prompt_lp.append((seq, len(rows), first, scored))
                    offset = starts[i] + first - start
                    rows += range(offset, offset + scored)
            if start + n == len(seq):
                samplers.append((seq, len(rows)))
                rows.append(starts[i + 1] - 1)
        if not rows:
            return StepResult({})
        logits = self.model.compute_logits(_take_rows(hidden, rows)).float()

        for seq, first, pos, count in prompt_lp:
            if seq.prompt_logprobs is None:
                seq.prompt_logprobs = [None]
            lps = torch.log_softmax(logits[first:first + count], dim=-1)
            targets = seq.token_ids[pos + 1:pos + 1 + count]
            seq.prompt_logprobs += top_logprobs(lps, targets, [seq.params.prompt_logprobs] * count)

        if not samplers:
            return StepResult({})
        return self._sample(logits, samplers)

    def _sample(self, logits: torch.Tensor, samplers: list[tuple[Sequence, int]]) -> StepResult:
        sample_rows = []
        for seq, _ in samplers:
            p = seq.params
            if seq.seq_id not in self._generators:
                self._generators[seq.seq_id] = make_generator(seq.seed)
            # The sampler reads output_ids only for its length (min_tokens) unless penalties apply;
            # a range avoids copying a long history every step.
            sample_rows.append(SamplingRow(
                params=p,
                prompt_ids=seq.prompt_token_ids if p.has_penalties else (),
                output_ids=seq.output_token_ids if p.has_penalties else range(seq.num_output_tokens),
                generator=self._generators[seq.seq_id],
                eos_token_ids=self.eos_token_ids,
            ))
        results = sample(_take_rows(logits, [r for _, r in samplers]), sample_rows)
        return StepResult({seq.seq_id: r for (seq, _), r in zip(samplers, results)})
