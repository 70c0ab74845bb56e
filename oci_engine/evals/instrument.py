"""Rewrite test asserts so a failure says which input failed, what was expected and what came
back: the paper's feedback ("The results aren't as expected. Input: ... Expected Output: ...
Actual Output: ..."). Evaluation order is kept (callee, arguments, call, then the expected
value), so an instrumented test passes and fails exactly where the original does.
"""
from __future__ import annotations

import ast
import re


class _AssertRewriter(ast.NodeTransformer):
    def __init__(self, entry_point: str):
        self.entry_point = entry_point

    def _shown(self, node: ast.AST) -> str:
        return re.sub(r"\bcandidate\b", self.entry_point, ast.unparse(node)) if self.entry_point else ast.unparse(node)

    def visit_Assert(self, node: ast.Assert) -> ast.stmt:
        test = node.test
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq):
            left, right = test.left, test.comparators[0]
            if (isinstance(left, ast.Call) and not left.keywords
                    and not any(isinstance(a, ast.Starred) for a in left.args)):
                name = self._shown(left.func)
                call = ast.Call(
                    func=ast.Name("__oci_expect_call", ast.Load()),
                    args=[left.func, ast.Tuple(left.args, ast.Load()),
                          ast.Lambda(_no_args(), right), ast.Constant(name)],
                    keywords=[])
            else:
                call = ast.Call(func=ast.Name("__oci_expect", ast.Load()),
                                args=[left, right, ast.Constant(self._shown(left))], keywords=[])
            return ast.copy_location(ast.Expr(call), node)
        message = "Test failed: assert " + self._shown(test)
        raise_ = ast.Raise(exc=ast.Call(ast.Name("__oci_Mismatch", ast.Load()), [ast.Constant(message)], []), cause=None)
        return ast.copy_location(ast.If(test=ast.UnaryOp(ast.Not(), test), body=[raise_], orelse=[]), node)


def _no_args() -> ast.arguments:
    return ast.arguments(posonlyargs=[], args=[], vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[])


def instrument_tests(test_code: str, entry_point: str) -> str:
    """The test code with its asserts reporting their failures; unchanged if it does not parse."""
    try:
        tree = ast.parse(test_code)
    except (SyntaxError, ValueError):
        return test_code
    tree = ast.fix_missing_locations(_AssertRewriter(entry_point).visit(tree))
    return ast.unparse(tree) + "\n"
