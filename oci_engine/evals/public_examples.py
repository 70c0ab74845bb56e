"""Tests a solver may legitimately see: the examples written in a HumanEval prompt's docstring.

`--feedback public` runs only these, so feedback never leaks the hidden tests. Prompts state
examples as doctests (`>>> f(x)` then the value) or in prose (`f(x) ==> y`, `f(x) returns y`);
each becomes `assert <call> == <value>`. Examples whose value is not a Python expression are
dropped rather than guessed at.
"""
from __future__ import annotations

import ast
import doctest
import re

_PROSE_ARROW = r"(?:==>|=>|->|➞|→|==|=|should return|returns|return|is)"


def examples_from_prompt(prompt: str, entry_point: str) -> list[str]:
    asserts: list[str] = []
    text = _docstring(prompt, entry_point)
    try:
        examples = doctest.DocTestParser().get_examples(text)
    except ValueError:  # a malformed doctest block (inconsistent indentation)
        examples = []
    for ex in examples:
        source = ex.source.strip()
        want = ex.want.strip() or "None"  # a doctest that prints nothing evaluated to None
        if entry_point in source:
            _add(asserts, source, want)
    if asserts:
        return asserts
    prose = re.compile(r"^\s*(?:for\s+)?(?P<call>" + re.escape(entry_point) + r"\s*\(.*?\))\s*#?\s*" + _PROSE_ARROW
                       + r"\s*(?P<want>.+?)\s*$")
    for line in text.splitlines():
        m = prose.match(line)
        if m:
            _add(asserts, m.group("call"), m.group("want").rstrip(".,;"))
    return asserts


def _docstring(prompt: str, entry_point: str) -> str:
    """The entry point's docstring; the whole prompt when it does not parse."""
    try:
        tree = ast.parse(prompt)
    except SyntaxError:
        return prompt
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == entry_point:
            return ast.get_docstring(node) or ""
    return prompt


def _add(asserts: list[str], call: str, want: str) -> None:
    call, want = _expr(call), _expr(want)
    if call is None or want is None:
        return
    line = f"assert {call} == {want}"
    if line not in asserts:
        asserts.append(line)


def _expr(text: str) -> str | None:
    """The expression normalised (comments and line breaks gone), or None if it is not one."""
    try:
        return ast.unparse(ast.parse(text.strip(), mode="eval"))
    except (SyntaxError, ValueError):
        return None
