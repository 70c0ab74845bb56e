"""When a sequence stops, and how much of its text may be shown while it runs.

Stop strings are matched on the detokenized text, so a stop string split across several tokens is
found; the text is cut before it (or after it with include_stop_str_in_output). While a sequence
runs, the last len(longest stop string) - 1 characters are held back from streaming: they could
still turn out to be the start of a stop string that must never be shown.
"""
from __future__ import annotations

from oci_engine.sequence import Sequence


def token_stop(seq: Sequence, eos_token_ids, max_len: int) -> tuple[str, int | None] | None:
    """(finish_reason, stop_reason) if the sequence's latest token ends it on token grounds."""
    p = seq.params
    tok = seq.token_ids[-1]
    if seq.num_output_tokens >= p.min_tokens:
        if tok in p.stop_token_ids:
            return "stop", tok
        if not p.ignore_eos and tok in eos_token_ids:
            return "stop", None
    if p.max_tokens is not None and seq.num_output_tokens >= p.max_tokens:
        return "length", None
    if len(seq) >= max_len:
        return "length", None
    return None


def find_stop_string(text: str, stops: list[str], num_new_chars: int) -> tuple[int, str] | None:
    """Earliest (index, stop string) whose match ends within the last num_new_chars characters."""
    if not stops or not num_new_chars:
        return None
    best = None
    for stop in stops:
        begin = max(0, len(text) - num_new_chars - len(stop) + 1)
        i = text.find(stop, begin)
        if i != -1 and (best is None or i < best[0]):
            best = (i, stop)
    return best


def hold_back(stops: list[str]) -> int:
    return max((len(s) for s in stops), default=1) - 1
