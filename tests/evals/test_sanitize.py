"""Code extraction from model replies: fenced blocks, the entry point kept, demos dropped."""
from oci_engine.evals.sanitize import completion_from_reply, extract_code, sanitize, truncate_body

PROMPT = 'def add(a: int, b: int) -> int:\n    """Add two numbers."""\n'


def test_fenced_block_with_prose_and_demo_code():
    reply = ("Sure! Here is the code:\n```python\nimport math\n\ndef add(a, b):\n    return a + b\n\n"
             "print(add(1, 2))\nresult = add(3, 4)\nLIMIT = 10 ** 6\nassert add(1, 1) == 2\n"
             "if __name__ == '__main__':\n    print(input())\n```\nThis prints 3.")
    code = completion_from_reply(reply, PROMPT, "add")
    assert code == "import math\ndef add(a, b):\n    return a + b\nLIMIT = 10 ** 6\n"


def test_last_defining_block_wins_and_helper_blocks_stay():
    reply = ("```python\ndef helper(x):\n    return x * 2\n```\nFirst try:\n```python\ndef add(a, b):\n"
             "    return a - b\n```\nFixed:\n```python\ndef add(a, b):\n    return helper(a) // 2 + b\n```")
    code = extract_code(reply, "add")
    assert "def helper" in code and "a - b" not in code and "helper(a) // 2 + b" in code


def test_block_without_language_tag_and_unterminated_block():
    assert "return a + b" in extract_code("```\ndef add(a, b):\n    return a + b\n```", "add")
    cut = "Here:\n```python\ndef add(a, b):\n    return a + b\n\ndef other(:\n"
    assert completion_from_reply(cut, PROMPT, "add") == "def add(a, b):\n    return a + b\n"


def test_body_continuation_for_base_models():
    reply = "    return a + b\n\n\ndef unrelated():\n    pass\n"
    assert completion_from_reply(reply, PROMPT, "add") == "    return a + b\n"
    assert truncate_body("    x = 1\n\n    return x\nprint(1)\n") == "    x = 1\n\n    return x\n"


def test_decorators_and_classes_are_kept():
    code = "import functools\n@functools.lru_cache(None)\ndef fib(n):\n    return n\nclass A:\n    pass\nfib(3)\n"
    assert sanitize(code, "fib") == ("import functools\n@functools.lru_cache(None)\ndef fib(n):\n    return n\n"
                                     "class A:\n    pass\n")


def test_unparseable_reply_is_returned_as_is():
    assert sanitize("def add(a, b)\n    return", "add") == "def add(a, b)\n    return"
