"""`--feedback public` may only use examples that the task's prompt shows."""
from oci_engine.evals.public_examples import examples_from_prompt
from oci_engine.evals.tasks import load_humaneval

DOCTEST = '''def longest(strings):
    """ Return the longest.
    >>> longest([])

    >>> longest(['a', 'bb'])  # the second one
    'bb'
    """
'''
PROSE = '''def anti_shuffle(s):
    """
    For example:
    anti_shuffle('Hi') returns 'Hi'
    anti_shuffle('hello') ==> 'ehllo'
    anti_shuffle(x) -> some text that is not python
    """
'''


def test_doctest_examples_become_asserts_without_comments():
    assert examples_from_prompt(DOCTEST, "longest") == ["assert longest([]) == None",
                                                        "assert longest(['a', 'bb']) == 'bb'"]


def test_prose_examples_and_unparseable_values_dropped():
    assert examples_from_prompt(PROSE, "anti_shuffle") == ["assert anti_shuffle('Hi') == 'Hi'",
                                                           "assert anti_shuffle('hello') == 'ehllo'"]


def test_public_examples_never_come_from_the_hidden_tests():
    tasks = load_humaneval()
    with_examples = [t for t in tasks if t.public_tests]
    assert len(with_examples) >= 130
    for t in with_examples:
        for a in t.public_tests:
            call = a[len("assert "):].split(" == ")[0]
            # Every example's call is written in the prompt (modulo spacing), none is taken from the test.
            assert _norm(call) in _norm(t.prompt), (t.task_id, a)


def _norm(text: str) -> str:
    """Spacing and quote style differ after normalising examples through the ast."""
    return text.replace(" ", "").replace("\n", "").replace('"', "'")
