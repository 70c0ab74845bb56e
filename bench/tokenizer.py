"""`python -m bench tokenizer [--model NAME_OR_GGUF] [--repeats N] [--tokens N]`

The tokenizer against transformers' on the same GGUF: time to load it from the file, encode
throughput on a code/unicode corpus, and the per-token cost of streaming detokenization (ours:
IncrementalDetokenizer; peer: transformers' TextStreamer way, re-decoding the text so far on each
token). Medians over repeats; ratio ours/peer (below 1 is faster).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

_CORPUS = (
    "def fibonacci(n: int) -> int:\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n"
    "# 计算斐波那契数列 — ünïcödé, emoji 😀👍🏽, tabs\tand\r\nCRLF, numbers 3.14159 1_000_000\n"
    "class Stack:\n    def __init__(self):\n        self.items: list[int] = []\n"
) * 40


def _timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench tokenizer", description=__doc__)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=1024, help="length of the streamed sequence")
    args = ap.parse_args(argv)

    from transformers import AutoTokenizer
    from transformers.utils import logging

    from oci_engine.detokenizer import IncrementalDetokenizer
    from oci_engine.model_cache import resolve_model
    from oci_engine.tokenizer import Tokenizer

    logging.set_verbosity_error()
    path = resolve_model(args.model)
    ours = Tokenizer.from_pretrained(path)
    peer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    ids = ours.encode(_CORPUS)[: args.tokens]
    assert ids == peer.encode(_CORPUS)[: args.tokens], "the two tokenizers disagree; fix that before timing"

    def stream_ours():
        d = IncrementalDetokenizer(ours)
        for i in ids:
            d.add(i)
        d.flush()

    def stream_peer():  # TextStreamer: decode the whole cache, print the new stable suffix
        printed = 0
        for n in range(1, len(ids) + 1):
            text = peer.decode(ids[:n], skip_special_tokens=True)
            if not text.endswith("\ufffd"):
                printed = len(text)
        return printed

    ours.piece_bytes()
    rows = [
        ("load from GGUF", _timed(lambda: Tokenizer.from_pretrained(path), args.repeats),
         _timed(lambda: AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name), max(1, args.repeats // 2))),
        (f"encode {len(_CORPUS)} chars", _timed(lambda: ours.encode(_CORPUS), args.repeats),
         _timed(lambda: peer.encode(_CORPUS), args.repeats)),
        (f"stream-decode {len(ids)} tokens", _timed(stream_ours, args.repeats),
         _timed(stream_peer, max(1, args.repeats // 2))),
    ]
    table_s = _timed(lambda: (setattr(ours, "_piece_bytes", None), ours.piece_bytes()), 1)[0]
    print(f"model: {args.model}   machine: {platform.machine()} {platform.processor() or ''}, "
          f"python {platform.python_version()}")
    print(f"{'what':34s} {'ours ms':>9s} {'transformers ms':>16s} {'ours/peer':>10s}")
    for name, a, b in rows:
        ma, mb = statistics.median(a) * 1e3, statistics.median(b) * 1e3
        print(f"{name:34s} {ma:9.2f} {mb:16.2f} {ma / mb:10.4f}")
    print(f"(streaming builds a per-token byte table once per tokenizer: {table_s * 1e3:.0f} ms, not in the rows)")
    return 0
