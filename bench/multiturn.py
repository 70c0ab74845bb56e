"""`python -m bench multiturn [--sessions 8] [--rounds 4] [--reply-tokens 32] [--exec-tokens 120]
[--system-tokens 900] [--repeats 1] [--threads N]`

Interleaved code-interpreter sessions: session 1 round 1, session 2 round 1, ..., session 1 round 2,
... Every round re-sends the whole conversation (a shared system prompt, the task, then per
round the assistant's reply and an "Execution result" message), one request at a time, as an interpreter
serving several users does. Measured: total time, and TTFT per round (median over sessions), for
  - oci-engine with the prefix cache,
  - oci-engine with it off,
  - llama-cpp-python (which keeps the KV of its single previous prompt and reuses the longest
    common prefix; interleaving leaves it only the system prompt).
Prompts are built at the token level (previous prompt + reply tokens + the next message's tokens),
so every engine sees the same prefix structure. Replies have a fixed length (EOS suppressed).
Each engine runs in its own fresh process on the same machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

SYSTEM = ("You are a Python code interpreter assistant. Write one code block per answer. The code runs and "
          "its output comes back as a message starting with 'Execution result'. Fix errors you see there. ")
TASKS = ["Parse a CSV of sales and print the total per region.", "Implement an LRU cache class with get and put.",
         "Compute the first 20 primes with a sieve.", "Flatten a nested list of arbitrary depth.",
         "Find the longest palindromic substring of a string.", "Merge overlapping intervals in a list.",
         "Count word frequencies in a paragraph and print the top 5.", "Validate a sudoku board given as a list."]
TRACE = ("Traceback (most recent call last):\n  File \"<cell>\", line {i}, in <module>\n    result = solve(data[{i}])\n"
         "  File \"<cell>\", line {j}, in solve\n    value = table[key] + offset * {i}\nKeyError: 'region_{i}'\n")


def exec_result(tokenizer, session: int, rnd: int, n_tokens: int) -> list[int]:
    text = "Execution result:\n"
    i = 0
    while len(tokenizer.encode(text, add_special_tokens=False)) < n_tokens:
        text += TRACE.format(i=session * 100 + rnd * 10 + i, j=i + 3)
        i += 1
    ids = tokenizer.encode(text, add_special_tokens=False)[:n_tokens]
    return ids


def system_prompt(tokenizer, n_tokens: int) -> str:
    """The shared system prompt, padded with numbered guidelines to about n_tokens."""
    text, i = SYSTEM, 1
    while len(tokenizer.encode(text, add_special_tokens=False)) < n_tokens:
        text += (f"\nGuideline {i}: keep cell {i} self-contained, import what it uses, print intermediate values "
                 f"of step {i}, and never read from standard input.")
        i += 1
    return text


def build_first_prompts(tokenizer, sessions: int, system_tokens: int) -> list[list[int]]:
    out = []
    system = system_prompt(tokenizer, system_tokens)
    for s in range(sessions):
        msgs = [{"role": "system", "content": system}, {"role": "user", "content": TASKS[s % len(TASKS)]}]
        out.append(tokenizer.encode(tokenizer.apply_chat_template(msgs, add_generation_prompt=True),
                                    add_special_tokens=False))
    return out


def turn_suffix(tokenizer, session: int, rnd: int, exec_tokens: int) -> list[int]:
    """Tokens after a reply: end of the assistant turn, the execution result, a new assistant turn."""
    enc = lambda t: tokenizer.encode(t, add_special_tokens=False)  # noqa: E731
    return (enc("<|im_end|>\n<|im_start|>user\n") + exec_result(tokenizer, session, rnd, exec_tokens)
            + enc("<|im_end|>\n<|im_start|>assistant\n"))


def run_ours(args, cache: bool) -> dict:
    import torch

    from oci_engine import LLM, SamplingParams

    torch.set_num_threads(args.threads)
    llm = LLM(args.model, enable_prefix_caching=cache, backend=args.backend)
    tok = llm.tokenizer
    eos = sorted(llm.engine.eos_token_ids)
    sp = SamplingParams(temperature=0.0, max_tokens=args.reply_tokens, ignore_eos=True)
    llm.generate(prompt_token_ids=[1, 2, 3], sampling_params=sp)  # warm-up
    llm.engine.reset_prefix_cache()
    prompts = build_first_prompts(tok, args.sessions, args.system_tokens)
    ttft = [[] for _ in range(args.rounds)]
    hist = [[] for _ in range(args.rounds)]
    t0 = time.perf_counter()
    for r in range(args.rounds):
        for s in range(args.sessions):
            start = time.perf_counter()
            first = None
            final = None
            for out in llm.stream(prompt_token_ids=prompts[s], sampling_params=sp):
                if first is None and out.delta_token_ids:
                    first = time.perf_counter() - start
                final = out
            ttft[r].append(first)
            hist[r].append(len(prompts[s]))
            reply = [t for t in final.token_ids if t not in eos]
            prompts[s] = prompts[s] + reply + turn_suffix(tok, s, r, args.exec_tokens)
    return {"total": time.perf_counter() - t0, "ttft": ttft, "history": hist}


def run_llamacpp(args) -> dict:
    from llama_cpp import Llama

    from oci_engine.model_cache import resolve_model
    from oci_engine.tokenizer import Tokenizer

    path = resolve_model(args.model)
    tok = Tokenizer.from_pretrained(path)
    llm = Llama(model_path=str(path), n_ctx=4096, n_threads=args.threads, n_threads_batch=args.threads, n_batch=512, verbose=False)
    eos = sorted(int(t) for t in tok.eos_token_ids)

    def no_eos(_ids, logits):
        logits[eos] = -float("inf")
        return logits

    def reply_of(prompt: list[int]) -> tuple[list[int], float]:
        start = time.perf_counter()
        first, reply = None, []
        # greedy; llama.cpp reuses its KV for the longest common prefix with its previous prompt
        for t in llm.generate(prompt, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, logits_processor=[no_eos]):
            if first is None:
                first = time.perf_counter() - start
            reply.append(int(t))
            if len(reply) == args.reply_tokens:
                break
        return reply, first

    reply_of([1, 2, 3])
    prompts = build_first_prompts(tok, args.sessions, args.system_tokens)
    ttft = [[] for _ in range(args.rounds)]
    hist = [[] for _ in range(args.rounds)]
    t0 = time.perf_counter()
    for r in range(args.rounds):
        for s in range(args.sessions):
            reply, first = reply_of(prompts[s])
            ttft[r].append(first)
            hist[r].append(len(prompts[s]))
            prompts[s] = prompts[s] + reply + turn_suffix(tok, s, r, args.exec_tokens)
    return {"total": time.perf_counter() - t0, "ttft": ttft, "history": hist}


def child(args) -> None:
    res = run_llamacpp(args) if args.engine == "llamacpp" else run_ours(args, cache=args.engine == "cache")
    print("RESULT " + json.dumps(res))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench multiturn", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--backend", default=None)
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--reply-tokens", type=int, default=32)
    ap.add_argument("--exec-tokens", type=int, default=120)
    ap.add_argument("--system-tokens", type=int, default=900, help="shared system prompt length")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="compute threads for every engine (1 on a machine busy with other work)")
    ap.add_argument("--engines", default="cache,nocache,llamacpp")
    ap.add_argument("--engine", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.engine:
        child(args)
        return 0
    results: dict[str, list[dict]] = {}
    for _ in range(args.repeats):
        for engine in args.engines.split(","):
            cmd = [sys.executable, "-m", "bench", "multiturn", "--engine", engine, "--model", args.model,
                   "--sessions", str(args.sessions), "--rounds", str(args.rounds),
                   "--reply-tokens", str(args.reply_tokens), "--exec-tokens", str(args.exec_tokens),
                   "--system-tokens", str(args.system_tokens)]
            if args.backend:
                cmd += ["--backend", args.backend]
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            p = subprocess.run(cmd + ["--threads", str(args.threads)], capture_output=True, text=True, env=env)
            line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
            if p.returncode or not line:
                print(f"{engine}: failed (exit {p.returncode}): {p.stderr.strip()[-500:]}", file=sys.stderr)
                continue
            results.setdefault(engine, []).append(json.loads(line[0][7:]))
    names = {"cache": "oci-engine, prefix cache on", "nocache": "oci-engine, prefix cache off",
             "llamacpp": "llama-cpp-python (one cached prefix)"}
    print(f"model {args.model}, {args.sessions} sessions x {args.rounds} rounds, replies {args.reply_tokens} tokens, "
          f"execution results {args.exec_tokens} tokens; {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{args.threads} thread(s) per engine, "
          f"python {platform.python_version()}; medians over {args.repeats} repeat(s)")
    if not results:
        return 1
    any_run = next(iter(results.values()))[0]
    hist = [statistics.median(h) for h in any_run["history"]]
    header = f"{'engine':40s} {'total s':>8s} " + " ".join(f"{f'ttft r{r + 1} ms':>11s}" for r in range(args.rounds))
    print(header)
    print(f"{'(history tokens, median)':40s} {'':8s} " + " ".join(f"{h:11.0f}" for h in hist))
    summary = {}
    for engine, runs in results.items():
        total = statistics.median(r["total"] for r in runs)
        ttfts = [statistics.median(statistics.median(r["ttft"][k]) for r in runs) for k in range(args.rounds)]
        summary[engine] = (total, ttfts)
        print(f"{names.get(engine, engine):40s} {total:8.2f} " + " ".join(f"{t * 1000:11.1f}" for t in ttfts))
    if "cache" in summary:
        c_total, c_ttft = summary["cache"]
        for peer in ("nocache", "llamacpp"):
            if peer in summary:
                p_total, p_ttft = summary[peer]
                print(f"speedup vs {names[peer]}: total x{p_total / c_total:.2f}, "
                      f"last-round TTFT x{p_ttft[-1] / c_ttft[-1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
