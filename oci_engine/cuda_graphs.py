"""CUDA graphs for the decode step: capture once per batch-size bucket, then replay.

A decode step of a small model is dozens of tiny kernel launches whose CPU-side launch cost exceeds
their GPU time; a captured graph replays them all with one launch. A graph fixes every tensor
address and shape, so the step runs over static buffers: each call copies the live batch into the
leading rows (and columns) of those buffers, fills the rows up to the bucket's size with padding
values that make the padded rows harmless (slot -1: no KV write; seq_len 0: empty attention), and
replays the graph captured for that bucket. Batches larger than the largest bucket run eagerly.

The engine owns what the step means: `step(views)` gets a dict of the static buffers cut to the
bucket's batch size and returns the output tensor (e.g. logits); anything not batch-shaped that it
needs (the KV caches, an arange for query_start_loc) it keeps itself, at fixed addresses.
"""
from __future__ import annotations

from bisect import bisect_left
from typing import Callable, Mapping

from oci_engine.errors import BackendError

# vLLM-like buckets: every size up to 4, then coarser steps (padding waste stays under ~33%)
DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128)


def pick_batch_size(n: int, sizes) -> int | None:
    """The smallest captured batch size that holds n rows, or None when n exceeds them all."""
    sizes = sorted(sizes)
    i = bisect_left(sizes, n)
    return sizes[i] if i < len(sizes) else None


class DecodeGraphs:
    def __init__(self, step: Callable[[dict], "object"], buffers: Mapping[str, "object"],
                 pad: Mapping[str, float] | None = None, batch_sizes=DEFAULT_BATCH_SIZES):
        """buffers: name -> CUDA tensor whose first dimension (the batch) holds max(batch_sizes) rows."""
        import torch

        if not torch.cuda.is_available():
            raise BackendError("CUDA graphs need a CUDA GPU; run the decode step eagerly on this machine")
        self.batch_sizes = sorted(set(int(b) for b in batch_sizes))
        for name, buf in buffers.items():
            if not buf.is_cuda or buf.shape[0] < self.batch_sizes[-1]:
                raise ValueError(f"static buffer {name!r} must be a CUDA tensor with at least "
                                 f"{self.batch_sizes[-1]} rows (the largest batch size); got {tuple(buf.shape)} "
                                 f"on {buf.device}")
        self.step, self.buffers, self.pad = step, dict(buffers), dict(pad or {})
        self.graphs: dict[int, tuple] = {}
        self.pool = None

    def _views(self, bs: int) -> dict:
        return {name: buf[:bs] for name, buf in self.buffers.items()}

    def capture(self) -> "DecodeGraphs":
        import torch

        # Largest first: its memory pool is then big enough for every smaller graph that shares it.
        for bs in reversed(self.batch_sizes):
            views = self._views(bs)
            for name, v in views.items():
                v.fill_(self.pad.get(name, 0))
            # One eager run on a side stream first: Triton compiles and cuBLAS picks its algorithms
            # outside the capture (neither may happen inside one).
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.step(views)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                out = self.step(views)
            self.pool = graph.pool()
            self.graphs[bs] = (graph, out)
        torch.cuda.synchronize()
        return self

    def __call__(self, inputs: Mapping[str, "object"]):
        """Run the step on a live batch; the result is a view of a static buffer, valid until the next call."""
        if set(inputs) != set(self.buffers):
            raise ValueError(f"decode graph inputs must be exactly {sorted(self.buffers)}; got {sorted(inputs)}")
        n = next(iter(inputs.values())).shape[0]
        bs = pick_batch_size(n, self.graphs) if self.graphs else None
        if bs is None:
            return self.step(dict(inputs))
        fill_static(self.buffers, inputs, bs, self.pad)
        graph, out = self.graphs[bs]
        graph.replay()
        return out[:n]


def fill_static(buffers: Mapping[str, "object"], inputs: Mapping[str, "object"], bs: int,
                pad: Mapping[str, float]) -> None:
    """Copy a live batch of n <= bs rows into the leading rows (and columns) of the static buffers and
    pad rows n..bs. Columns beyond the live ones keep stale values: a step must not read them
    (attention reads a block-table row only up to its seq_len)."""
    n = next(iter(inputs.values())).shape[0]
    for name, x in inputs.items():
        buf = buffers[name]
        buf[(slice(0, n),) + tuple(slice(0, s) for s in x.shape[1:])].copy_(x, non_blocking=True)
        if bs > n:
            buf[n:bs].fill_(pad.get(name, 0))


def model_decode_step(model, kv_caches: list, max_blocks_per_seq: int, rows: int, device="cuda"):
    """(step, buffers, pad) of a model's decode step over static buffers of `rows` rows.

    The step reads input_ids, positions, slot_mapping [B] int64, seq_lens [B] int32 and
    block_tables [B, max_blocks_per_seq] int32 and returns logits [B, V]; padded rows write no KV
    (slot -1) and attend to nothing (seq_len 0).
    """
    import torch

    from oci_engine.attention_metadata import AttentionMetadata

    block_size = kv_caches[0][0].shape[1]
    i64, i32 = dict(dtype=torch.int64, device=device), dict(dtype=torch.int32, device=device)
    buffers = dict(input_ids=torch.zeros(rows, **i64), positions=torch.zeros(rows, **i64),
                   slot_mapping=torch.zeros(rows, **i64), seq_lens=torch.zeros(rows, **i32),
                   block_tables=torch.zeros(rows, max_blocks_per_seq, **i32))
    query_start_loc = torch.arange(rows + 1, **i32)  # one new token per sequence, at a fixed address

    def step(x):
        n = x["input_ids"].shape[0]
        meta = AttentionMetadata(slot_mapping=x["slot_mapping"], query_start_loc=query_start_loc[:n + 1],
                                 seq_lens=x["seq_lens"], block_tables=x["block_tables"], max_query_len=1,
                                 max_seq_len=max_blocks_per_seq * block_size, is_decode=True)
        hidden = model.forward(x["input_ids"], x["positions"], kv_caches, meta)
        return model.compute_logits(hidden)

    return step, buffers, {"slot_mapping": -1}


def model_decode_graphs(model, kv_caches: list, max_blocks_per_seq: int, batch_sizes=DEFAULT_BATCH_SIZES,
                        device="cuda") -> DecodeGraphs:
    """Captured decode steps of a model (forward + logits of the one new token per sequence).

    Call the result with input_ids, positions, slot_mapping [B] int64, seq_lens [B] int32 and
    block_tables [B, <= max_blocks_per_seq] int32 (all on the GPU); it returns logits [B, V].
    """
    step, buffers, pad = model_decode_step(model, kv_caches, max_blocks_per_seq, max(batch_sizes), device)
    return DecodeGraphs(step, buffers, pad=pad, batch_sizes=batch_sizes).capture()
