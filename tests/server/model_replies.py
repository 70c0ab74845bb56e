"""What the tests accept as the default model's answer to "print the squares of 1 to 5".

The tests check that the reply's code was extracted, run and its output shown, not the model's exact
wording: a kernel change that moves a float sum's rounding may change a greedy reply's phrasing
("The square of 2 is 4" or "4"), and that is not what these tests are about."""
from __future__ import annotations

import re

SQUARES = (1, 4, 9, 16, 25)


def prints_the_squares(stdout: str) -> bool:
    """True when the integers in `stdout` contain 1, 4, 9, 16, 25 in that order (other numbers,
    such as the bases, may come in between)."""
    want = iter(SQUARES)
    goal = next(want)
    for n in (int(m) for m in re.findall(r"-?\d+", stdout)):
        if n == goal:
            goal = next(want, None)
            if goal is None:
                return True
    return False

