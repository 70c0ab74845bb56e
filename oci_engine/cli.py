"""`oci-engine` command line. Each subcommand lives in oci_engine/commands/<name>.py and exposes
`add_arguments(parser)` and `run(args) -> int`; they import heavy modules only inside run()."""
from __future__ import annotations

import argparse
import importlib
import sys

from oci_engine.errors import OCIEngineError

COMMANDS = {
    "pull": "fetch a model into the local cache",
    "generate": "generate a completion for a prompt (streams to stdout)",
    "chat": "terminal code interpreter",
    "serve": "OpenAI-compatible HTTP server, interpreter sessions and a web page",
    "eval": "HumanEval / MBPP evaluation, with or without execution feedback",
    "bench": "benchmarks against peers (same as python -m bench NAME)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="oci-engine", description="A fast open code interpreter.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        try:
            module = importlib.import_module(f"oci_engine.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"oci_engine.commands.{name}":
                raise
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help()
        return 2
    try:
        return int(args._module.run(args) or 0)
    except OCIEngineError as e:
        print(f"oci-engine: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
