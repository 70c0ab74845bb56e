"""`python -m bench load_time [--model NAME_OR_PATH] [--repeats N] [--peer-repeats N]`

Time from a model name to weights ready: our loader (resolve_model + load_checkpoint, in-process
and in a fresh interpreter with torch already importable) against transformers reading the same
GGUF with `gguf_file=` (which dequantizes everything to fp32). Medians over repeats; ratio ours/peer.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

_FRESH = """
import time, torch
t = time.perf_counter()
from oci_engine.model_cache import resolve_model
from oci_engine.loader import load_checkpoint
load_checkpoint(resolve_model({model!r}))
print(time.perf_counter() - t)
"""


def _ours(model: str) -> float:
    from oci_engine.loader import load_checkpoint
    from oci_engine.model_cache import resolve_model

    t = time.perf_counter()
    load_checkpoint(resolve_model(model))
    return time.perf_counter() - t


def _ours_fresh(model: str) -> float:
    out = subprocess.run([sys.executable, "-c", _FRESH.format(model=model)], check=True,
                         capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def _transformers(model: str) -> float:
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    from oci_engine.model_cache import resolve_model

    logging.disable_progress_bar()
    os.environ["TQDM_DISABLE"] = "1"  # its GGUF conversion bar ignores the switch above
    path = resolve_model(model)
    t = time.perf_counter()
    AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench load_time", description=__doc__)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--peer-repeats", type=int, default=3)
    args = ap.parse_args(argv)
    import torch  # noqa: F401  (its import is not part of any measurement)

    _ours(args.model)  # pulls if needed, warms the page cache
    rows = [
        ("oci-engine load_checkpoint (in process)", [_ours(args.model) for _ in range(args.repeats)]),
        ("oci-engine import+resolve+load (fresh process)", [_ours_fresh(args.model) for _ in range(args.repeats)]),
        ("transformers from_pretrained(gguf_file=)", [_transformers(args.model) for _ in range(args.peer_repeats)]),
    ]
    peer = statistics.median(rows[-1][1])
    print(f"model: {args.model}   machine: {platform.machine()} {platform.processor() or ''}, "
          f"python {platform.python_version()}")
    print(f"{'what':50s} {'median s':>9s} {'min s':>7s} {'n':>3s} {'ours/peer':>10s}")
    for name, times in rows:
        med = statistics.median(times)
        print(f"{name:50s} {med:9.3f} {min(times):7.3f} {len(times):3d} {med / peer:10.4f}")
    return 0
