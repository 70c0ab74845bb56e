"""What the attention op needs to know about a flat batch of tokens from several sequences.

The model's forward takes all new tokens of a step flattened into one dimension T (prefill chunks
and decode tokens mixed). Sequence i owns new tokens query_start_loc[i]:query_start_loc[i+1]; its
context is seq_lens[i] tokens (cached prefix + new tokens), the new ones being the last. The KV
cache of a layer is two tensors [num_blocks, block_size, num_kv_heads, head_dim]; token j of
sequence i lives in block block_tables[i, j // block_size] at offset j % block_size, and the
K/V of new token t is written to flat slot slot_mapping[t] (= block * block_size + offset).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(slots=True)
class AttentionMetadata:
    slot_mapping: torch.Tensor  # [T] int64
    query_start_loc: torch.Tensor  # [B+1] int32, cumulative new-token counts
    seq_lens: torch.Tensor  # [B] int32, context length after this step
    block_tables: torch.Tensor  # [B, max_blocks] int32, padded with 0
    max_query_len: int
    max_seq_len: int
    is_decode: bool  # every sequence has exactly one new token
    # host copies, so backends never synchronize to read sizes
    query_start_loc_list: list[int] | None = None
    seq_lens_list: list[int] | None = None

    @property
    def num_seqs(self) -> int:
        return self.seq_lens.shape[0]
