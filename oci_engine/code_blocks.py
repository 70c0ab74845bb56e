"""Finding the code a model wrote and phrasing what running it did, in OpenCodeInterpreter's terms.

The feedback strings are the protocol the OpenCodeInterpreter checkpoints were trained on (the
paper's demo): keep them verbatim so those models recognise them.
"""
from __future__ import annotations

import ast
import re

EXECUTION_PREFIX = "Execution result: \n"
EMPTY_RESULT_NUDGE = ("Code is executed, but result is empty. Please make sure that you include test case "
                      "in your code.")
INPUT_GUIDANCE = "Please directly assign the value of inputs instead of using input() function in your code."
TRUNCATION_MARKER = "\n...(truncated due to length)...\n"

# An opening fence: ``` or more, optional language tag. The closing fence must match its length.
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w+.-]*)[^\n]*\n", re.MULTILINE)
PYTHON_TAGS = {"python", "py", "python3", "ipython", "pycon"}


def extract_code_blocks(text: str, *, untagged: bool = True) -> list[str]:
    """Every complete fenced Python block in order. Untagged fences count as Python when their
    content parses, since small models often omit the tag; other languages are skipped."""
    blocks = []
    pos = 0
    while True:
        m = _FENCE.search(text, pos)
        if m is None:
            break
        fence = m.group("fence")
        close = re.compile(r"^[ \t]*" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}[ \t]*$", re.MULTILINE)
        end = close.search(text, m.end())
        if end is None:
            break  # an unterminated block is still being written, or was cut off: do not run it
        body = text[m.end():end.start()]
        lang = m.group("lang").lower()
        if lang in PYTHON_TAGS or (untagged and not lang and _parses(body)):
            blocks.append(_dedent(body, m.group("indent")).rstrip("\n"))
        pos = end.end()
    return blocks


def _dedent(body: str, indent: str) -> str:
    if not indent:
        return body
    return "\n".join(line[len(indent):] if line.startswith(indent) else line for line in body.split("\n"))


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
        return True
    except (SyntaxError, ValueError):
        return False


def calls_input(code: str) -> bool:
    """True when the code calls the builtin input(): a cell cannot be answered, so the model is
    told to assign the values instead of running it."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "input"
               for n in ast.walk(tree))


def truncate_middle(text: str, limit: int) -> str:
    """Head and tail kept, the middle elided: the error that matters is usually at the end and
    the context that explains it at the start."""
    if limit <= 0 or len(text) <= limit:
        return text
    keep = max(1, limit // 5)
    return text[:keep] + TRUNCATION_MARKER + text[-keep:]


def feedback_for_model(output: str, *, limit: int = 1000) -> str:
    """The user turn that reports an execution back to the model."""
    if not output.strip():
        return EMPTY_RESULT_NUDGE
    return EXECUTION_PREFIX + truncate_middle(output, limit)
