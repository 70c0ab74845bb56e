"""`oci-engine generate -m MODEL "prompt"`: stream a completion to stdout.

The prompt comes from the argument or, with "-", from stdin. Text goes to stdout as it is
generated; the model's load line and a timing summary go to stderr, so stdout pipes cleanly.
"""
from __future__ import annotations

import argparse
import sys

from oci_engine.commands.engine_flags import add_engine_arguments, engine_kwargs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help='the prompt ("-" reads it from stdin)')
    add_engine_arguments(parser)
    parser.add_argument("-n", "--max-tokens", type=int, default=256, help="most tokens to generate (default 256)")
    parser.add_argument("-t", "--temperature", type=float, default=0.0, help="0 is greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    parser.add_argument("--system", default=None, help="system message (with --chat)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no load line or timing summary on stderr")


def run(args: argparse.Namespace) -> int:
    import logging
    import time

    from oci_engine.errors import InvalidRequestError
    from oci_engine.llm import LLM
    from oci_engine.sampling_params import SamplingParams

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    params = SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, seed=args.seed,
                            max_tokens=args.max_tokens, stop=args.stop)
    if args.quiet:
        logging.getLogger("oci_engine").setLevel(logging.WARNING)
    llm = LLM(args.model, **engine_kwargs(args))
    ids = None
    if args.chat:
        if llm.tokenizer is None:
            raise InvalidRequestError("--chat needs a model with a tokenizer and chat template")
        messages = ([{"role": "system", "content": args.system}] if args.system else [])
        messages.append({"role": "user", "content": prompt})
        prompt = llm.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        ids = llm.tokenizer.encode(prompt, add_special_tokens=False)
    start = time.perf_counter()
    last = None
    for out in llm.stream(prompt, params, prompt_token_ids=ids):
        if out.delta_text:
            sys.stdout.write(out.delta_text)
            sys.stdout.flush()
        last = out
    sys.stdout.write("\n")
    if not args.quiet and last is not None:
        n = len(last.token_ids)
        m = last.metrics
        ttft = m.time_to_first_token if m else None
        print(f"[{n} tokens in {time.perf_counter() - start:.2f} s, first token after "
              f"{ttft if ttft is not None else float('nan'):.2f} s, finish: {last.finish_reason}]", file=sys.stderr)
    return 0
