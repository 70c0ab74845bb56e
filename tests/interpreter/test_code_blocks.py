from oci_engine.code_blocks import (EMPTY_RESULT_NUDGE, EXECUTION_PREFIX, TRUNCATION_MARKER, calls_input,
                                    extract_code_blocks, feedback_for_model, truncate_middle)


def test_extracts_python_blocks_in_order_and_skips_other_languages():
    reply = ("Here:\n```python\nx = 1\n```\nthen shell:\n```bash\nls -la\n```\n"
             "and\n```py\nprint(x)\n```\n")
    assert extract_code_blocks(reply) == ["x = 1", "print(x)"]


def test_untagged_block_counts_only_when_it_parses():
    assert extract_code_blocks("```\nprint(2)\n```") == ["print(2)"]
    assert extract_code_blocks("```\nthis is: not python (\n```") == []
    assert extract_code_blocks("```\nprint(2)\n```", untagged=False) == []


def test_unterminated_block_is_not_run():
    assert extract_code_blocks("```python\nwhile True:\n    pass\n") == []


def test_longer_fence_may_contain_triple_backticks():
    reply = '````python\ns = """\n```\n"""\nprint(s)\n````\n'
    assert extract_code_blocks(reply) == ['s = """\n```\n"""\nprint(s)']


def test_indented_fence_is_dedented():
    reply = "1. step\n   ```python\n   def f():\n       return 3\n   print(f())\n   ```\n"
    assert extract_code_blocks(reply) == ["def f():\n    return 3\nprint(f())"]


def test_input_detection():
    assert calls_input("name = input('who? ')")
    assert calls_input("def f():\n    return int(input())")
    assert not calls_input("user_input = 3\nprint(user_input)")
    assert not calls_input("this does not parse (")


def test_feedback_protocol():
    assert feedback_for_model("  \n") == EMPTY_RESULT_NUDGE
    assert feedback_for_model("42\n") == EXECUTION_PREFIX + "42\n"
    long = "A" * 600 + "B" * 600
    out = truncate_middle(long, 1000)
    assert out.startswith("A" * 200) and out.endswith("B" * 200) and TRUNCATION_MARKER in out
    assert truncate_middle("short", 1000) == "short"
