"""Checks on the default model's coding replies that hold whatever the model wrote.

The tests about running a reply's code check that the code shown was the code run and that what it
printed reached the user, by running that same code here in a plain interpreter. They do not check
the model's exact text: a kernel change that moves a float sum's rounding may change a greedy
reply of this 135M model (even into code that is wrong), which is not what these tests are about."""
from __future__ import annotations

import subprocess
import sys


def stdout_of(code: str) -> str:
    """What `code` prints when run by a plain `python -c` (the reference for the sandbox's output)."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return done.stdout
