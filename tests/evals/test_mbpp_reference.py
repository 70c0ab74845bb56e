"""MBPP verdicts equal those of running each reference solution with its test_list in a plain
interpreter (971 of 974 pass on Python 3.11: 341, 596 and 642 fail there too)."""
from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from oci_engine.evals.execute import Executor
from oci_engine.evals.judge import run_checks, verdict_program
from oci_engine.evals.tasks import load_mbpp

MBPP = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mbpp.jsonl"
KNOWN_FAILURES = {"341", "596", "642"}
TIMEOUT = 10.0

pytestmark = pytest.mark.skipif(not MBPP.exists(), reason=f"{MBPP} not present")


def _plain_interpreter_passes(task) -> bool:
    program = task.canonical_solution + "\n" + task.test
    try:
        p = subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=TIMEOUT,
                           stdin=subprocess.DEVNULL, cwd=os.path.dirname(MBPP))
    except subprocess.TimeoutExpired:
        return False
    return p.returncode == 0


def _subset(tasks):
    """Every task when OCI_EVAL_FULL_MBPP=1; otherwise a fixed fifth of them plus the known failures."""
    if os.environ.get("OCI_EVAL_FULL_MBPP") == "1":
        return tasks
    return [t for t in tasks if int(t.task_id) % 5 == 0 or t.task_id in KNOWN_FAILURES]


def test_reference_solutions_match_plain_interpreter():
    tasks = _subset(load_mbpp(str(MBPP), "all"))
    with ThreadPoolExecutor(2) as pool:
        plain = list(pool.map(_plain_interpreter_passes, tasks))
    with Executor(workers=2, timeout=TIMEOUT) as ex:
        ours = run_checks(ex, [verdict_program(t, t.canonical_solution) for t in tasks])
    mismatches = [(t.task_id, v.result) for t, v, p in zip(tasks, ours, plain) if v.passed != p]
    assert not mismatches
    failed = {t.task_id for t, v in zip(tasks, ours) if not v.passed}
    assert failed == KNOWN_FAILURES


def test_test_split_is_tasks_11_to_510():
    tasks = load_mbpp(str(MBPP))
    assert [int(t.task_id) for t in tasks] == list(range(11, 511))
    assert all(t.entry_point and len(t.public_tests) == 1 for t in tasks)


def test_public_test_is_the_first_listed_assert_and_the_hidden_ones_are_all():
    t = next(t for t in load_mbpp(str(MBPP)) if t.task_id == "11")
    assert t.entry_point == "remove_Occ"
    assert t.public_tests == ['assert remove_Occ("hello","l") == "heo"']
    assert t.test.count("assert remove_Occ") == 3
