"""`oci-engine pull [NAME]`: fetch a registry model into the local cache and print its path."""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from oci_engine.model_cache import DEFAULT_MODEL, REGISTRY

    parser.add_argument("name", nargs="?", default=DEFAULT_MODEL,
                        help=f"registry name (default: {DEFAULT_MODEL}); known: {', '.join(sorted(REGISTRY))}")
    parser.add_argument("--force", action="store_true", help="download and extract again even if present")
    parser.add_argument("--list", action="store_true", help="list the registry and what is already pulled")


def run(args: argparse.Namespace) -> int:
    from oci_engine import model_cache

    if args.list:
        print(f"cache: {model_cache.cache_dir()}")
        for name, entry in sorted(model_cache.REGISTRY.items()):
            state = "pulled" if model_cache.is_pulled(name) else "not pulled"
            print(f"{name:20s} {state:11s} {entry.description}")
        return 0
    already = not args.force and model_cache.is_pulled(args.name)
    path = model_cache.pull(args.name, force=args.force, progress=True)
    print(f"{args.name}: {'already in the cache, checksum verified' if already else 'pulled, checksum verified'}",
          file=sys.stderr)
    print(path)
    return 0
