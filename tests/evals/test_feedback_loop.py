"""The refinement loop's protocol, driven by a scripted stand-in for the model so each reply is
known: what the model is sent after a failure, which samples get another round, and what is
recorded. (The real engine runs the same loop in test_eval_smollm2.py.)"""
from dataclasses import dataclass

import pytest

from oci_engine.evals.execute import Executor
from oci_engine.evals.records import RecordWriter
from oci_engine.evals.report import pass_by_round
from oci_engine.evals.runner import RunConfig, evaluate_model
from oci_engine.evals.tasks import load_humaneval

WRONG = "```python\ndef add(x, y):\n    return x * y\n```"
RIGHT = "Fixed:\n```python\ndef add(x: int, y: int):\n    return x + y\n```"
CHEAT = "```python\ndef add(x, y):\n    return {(2, 3): 5, (5, 7): 12}.get((x, y), 0)\n```"


@dataclass
class _Completion:
    text: str


@dataclass
class _Output:
    outputs: list


class ScriptedModel:
    """Answers `first` to a new task and RIGHT once it has been shown an execution result."""

    def __init__(self, first: str):
        self.first = first
        self.requests = []

    def chat(self, conversations, params):
        self.requests.append(conversations)
        replies = []
        for conv in conversations:
            seen_feedback = any("Execution result:" in m["content"] for m in conv if m["role"] == "user")
            replies.append(_Output([_Completion(RIGHT if seen_feedback else self.first)] * params.n))
        return replies


@pytest.fixture(scope="module")
def add_task():
    return [t for t in load_humaneval() if t.task_id == "HumanEval/53"]


@pytest.fixture(scope="module")
def executor():
    with Executor(workers=2, timeout=2.0) as ex:
        yield ex


@pytest.mark.parametrize("style", ["chat", "oci"])
def test_oracle_feedback_reaches_the_model_and_the_retry_is_recorded(add_task, executor, style):
    model = ScriptedModel(WRONG)
    cfg = RunConfig(style=style, feedback_rounds=2)
    [record] = evaluate_model(model, add_task, cfg, executor, RecordWriter(None))
    assert [r.passed for r in record.rounds] == [False, True]  # fixed after one round: no third
    expected = ("Execution result: \nThe results aren't as expected.\nInput: add(0, 1)\nExpected Output: 1\n"
                "Actual Output: 0")
    assert record.rounds[0].feedback == expected[len("Execution result: \n"):]
    second = model.requests[1][0]
    if style == "chat":
        assert [m["role"] for m in second] == ["user", "assistant", "user"]
        assert second[1]["content"] == WRONG and second[2]["content"].startswith(expected)
    else:
        [turn] = second
        assert turn["content"].startswith("You are an exceptionally intelligent coding assistant")
        assert turn["content"].count("@@ Instruction") == 2 and turn["content"].endswith("@@ Response\n")
        assert expected in turn["content"]
    rows = pass_by_round([record])
    assert [row["pass@1"] for row in rows] == [0.0, 1.0]


def test_public_feedback_does_not_refine_a_sample_that_passes_its_examples(add_task, executor):
    model = ScriptedModel(CHEAT)
    [record] = evaluate_model(model, add_task, RunConfig(style="chat", feedback_rounds=2, public_feedback=True),
                              executor, RecordWriter(None))
    assert len(model.requests) == 1 and len(record.rounds) == 1
    assert not record.rounds[0].passed  # the hidden tests still judge it


def test_public_feedback_shows_only_a_prompt_example(add_task, executor):
    model = ScriptedModel(WRONG)
    [record] = evaluate_model(model, add_task, RunConfig(style="chat", feedback_rounds=1, public_feedback=True),
                              executor, RecordWriter(None))
    assert record.rounds[0].feedback == ("The results aren't as expected.\nInput: add(2, 3)\n"
                                         "Expected Output: 5\nActual Output: 6")
    assert record.rounds[1].passed


def test_n_samples_each_get_their_own_record(add_task, executor):
    model = ScriptedModel(WRONG)
    records = evaluate_model(model, add_task, RunConfig(style="chat", n=3, temperature=0.8), executor,
                             RecordWriter(None))
    assert [(r.task_id, r.sample) for r in records] == [("HumanEval/53", i) for i in range(3)]
