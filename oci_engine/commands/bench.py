"""`oci-engine bench NAME [args]`: the benchmarks in bench/ (the same as `python -m bench NAME`)."""
from __future__ import annotations

import argparse
import os
import sys

from oci_engine.errors import OCIEngineError


def add_arguments(p) -> None:
    p.add_argument("name", nargs="?", help="benchmark: decode, sandbox, gpu, evals, ...")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the benchmark")


def run(args) -> int:
    # bench/ lives beside the package in a checkout; it is not installed with the wheel.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if os.path.isdir(os.path.join(root, "bench")) and root not in sys.path:
        sys.path.insert(0, root)
    try:
        from bench.__main__ import main
    except ImportError as e:
        raise OCIEngineError("the benchmarks live in the repository's bench/ folder; run this from a checkout "
                             f"of oci-engine ({e})") from e
    return main(([args.name] if args.name else []) + list(args.rest))
