"""From a model's reply to the code that gets tested.

Chat models answer in prose around fenced blocks, repeat the prompt, add usage examples,
`print(...)` calls and `if __name__ == "__main__":` demos. What a test needs is the program's
definitions: imports, functions, classes and constant assignments. Everything that runs at
import time (prints, loops, calls, asserts, input()) is dropped, because it can only make a
correct solution fail or hang before the tests start.
"""
from __future__ import annotations

import ast
import re

from oci_engine.code_blocks import extract_code_blocks

_OPEN_FENCE = re.compile(r"^[ \t]*```[ \t]*(?:python3?|py)?[ \t]*$", re.MULTILINE)


def extract_code(reply: str, entry_point: str) -> str:
    """The fenced block that defines the entry point (else the longest block); a reply without a
    complete fence is taken from its last unterminated fence, or whole."""
    blocks = extract_code_blocks(reply)
    if blocks:
        defining = [i for i, b in enumerate(blocks) if _defines(b, entry_point)]
        if defining:
            # The last definition is the model's final answer; helper-only blocks before it stay.
            last = defining[-1]
            helpers = [b for b in blocks[:last] if not _defines(b, entry_point) and _only_definitions(b)]
            return "\n\n".join(helpers + [blocks[last]])
        return max(blocks, key=len)
    opens = list(_OPEN_FENCE.finditer(reply))
    if opens:  # cut off by max_tokens inside a block
        return reply[opens[-1].end():].lstrip("\n")
    return reply


def sanitize(code: str, entry_point: str) -> str:
    """Keep the definitions of a program; drop statements that run on import."""
    tree = _parse_prefix(code)
    if tree is None:
        return code
    kept = [node for node in tree.body if _is_definition(node)]
    if not kept:
        return code
    lines = code.split("\n")
    parts = []
    for node in kept:
        start = min([d.lineno for d in getattr(node, "decorator_list", [])] + [node.lineno]) - 1
        parts.append("\n".join(lines[start:node.end_lineno]))
    return "\n".join(parts) + "\n"


def completion_from_reply(reply: str, task_prompt: str, entry_point: str) -> str:
    """What gets appended to the task's prompt: whole sanitized code when the reply defines the
    entry point; otherwise the reply is taken as the body that continues the prompt."""
    code = extract_code(reply, entry_point)
    clean = sanitize(code, entry_point)
    if _defines(clean, entry_point) or not task_prompt:
        return clean
    return truncate_body(code)


def truncate_body(text: str) -> str:
    """A base model's continuation of a function: everything up to the first line that starts
    a new top-level statement."""
    out = []
    for line in text.split("\n"):
        if line and not line[0].isspace() and out and any(o.strip() for o in out):
            break
        out.append(line)
    return "\n".join(out).rstrip() + "\n"


def _parse_prefix(code: str) -> ast.Module | None:
    """Parse the code, or its longest prefix of whole lines that parses (a reply cut off by the
    token limit still has its finished functions)."""
    lines = code.split("\n")
    for end in range(len(lines), 0, -1):
        try:
            return ast.parse("\n".join(lines[:end]))
        except (SyntaxError, ValueError):
            if end < len(lines) - 200:
                return None
    return None


def _is_definition(node: ast.stmt) -> bool:
    if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return True
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        value = node.value
        # Constants and tables are definitions; an assignment that calls something is a demo run.
        return value is not None and not any(isinstance(n, (ast.Call, ast.Await)) for n in ast.walk(value))
    return False


def _defines(code: str, name: str) -> bool:
    tree = _parse_prefix(code)
    return tree is not None and any(
        isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name == name for n in tree.body)


def _only_definitions(code: str) -> bool:
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return bool(tree.body) and all(_is_definition(n) for n in tree.body)
