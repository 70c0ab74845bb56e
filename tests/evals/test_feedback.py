"""The paper's feedback: the first failing test's input, expected and actual output, or the
traceback, or "Execution timed out.", at most 500 characters; public mode sees only the prompt's
examples."""
import pytest

from oci_engine.evals.execute import Executor
from oci_engine.evals.judge import explain, feedback_program, run_checks, verdict_program
from oci_engine.evals.tasks import load_humaneval


@pytest.fixture(scope="module")
def tasks():
    return {t.task_id: t for t in load_humaneval()}


@pytest.fixture(scope="module")
def executor():
    with Executor(workers=2, timeout=2.0) as ex:
        yield ex


def test_wrong_result_names_input_expected_and_actual(tasks, executor):
    t = tasks["HumanEval/53"]  # add(x, y)
    fb = explain(executor, t, "    return x - y\n", public=False)
    assert not fb.passed
    assert fb.feedback == ("The results aren't as expected.\nInput: add(0, 1)\nExpected Output: 1\n"
                           "Actual Output: -1")


def test_exception_shows_input_and_the_solution_frames_only(tasks, executor):
    t = tasks["HumanEval/0"]
    fb = explain(executor, t, "    return helper(numbers)\n\ndef helper(xs):\n    return xs[100]\n", public=False)
    text = fb.feedback
    assert text.startswith("Input: has_close_elements([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3)\nTraceback")
    assert "return xs[100]" in text and text.endswith("IndexError: list index out of range")
    assert "__oci" not in text and "check(" not in text  # no harness or rewritten-test internals


def test_syntax_error_and_timeout(tasks, executor):
    t = tasks["HumanEval/0"]
    fb = explain(executor, t, "    return (\n", public=False)
    assert "SyntaxError" in fb.feedback
    assert explain(executor, t, "    while True:\n        pass\n", public=False).feedback == "Execution timed out."


def test_feedback_is_capped_at_500_characters(tasks, executor):
    t = tasks["HumanEval/53"]
    huge = explain(executor, t, "    return 'z' * 5000\n", public=False).feedback
    deep = explain(executor, t, "    return add(x, y)\n", public=False).feedback  # RecursionError
    assert huge.startswith("The results aren't as expected.") and len(huge) <= 500
    assert deep.endswith("maximum recursion depth exceeded") and len(deep) <= 500
    runaway = explain(executor, t, "    return 'ab" + "_ab" * 400 + "\n", public=False).feedback
    assert "SyntaxError: unterminated string literal" in runaway and len(runaway) <= 500
    assert runaway.startswith('  File "<string>"')  # the whole error fits once the long line is cut


def test_public_feedback_uses_only_the_prompts_examples(tasks, executor):
    t = tasks["HumanEval/53"]  # prompt shows add(2, 3) == 5 and add(5, 7) == 12
    # Right on both shown examples, wrong on the hidden tests: public feedback has nothing to say.
    cheat = "    return {(2, 3): 5, (5, 7): 12}.get((x, y), 0)\n"
    assert explain(executor, t, cheat, public=True).passed
    assert not explain(executor, t, cheat, public=False).passed
    fb = explain(executor, t, "    return x * y\n", public=True)
    assert fb.feedback == ("The results aren't as expected.\nInput: add(2, 3)\nExpected Output: 5\n"
                           "Actual Output: 6")
    # Without any examples, the solution still runs alone: errors on definition are reported.
    t2 = tasks["HumanEval/38"]
    assert not t2.public_tests
    assert "NameError" in explain(executor, t2, "    return s\nundefined_name\n", public=True).feedback


def test_instrumented_tests_fail_exactly_where_the_originals_do(tasks, executor):
    """The rewritten asserts keep evaluation order, so oracle feedback runs agree with verdicts."""
    picked = list(tasks.values())[::4]
    completions = []
    for t in picked:
        completions += [(t, t.canonical_solution), (t, t.canonical_solution.replace(" < ", " <= ", 1)),
                        (t, "    return None\n")]
    verdicts = run_checks(executor, [verdict_program(t, c) for t, c in completions])
    explained = run_checks(executor, [feedback_program(t, c, public=False) for t, c in completions])
    assert [v.passed for v in verdicts] == [e.passed for e in explained]
    assert all(e.feedback for e in explained if not e.passed)
