"""oci_engine.sandbox: a seccomp-restricted fork executor. Imports nothing of the runtime, never torch.

    from oci_engine.sandbox import Sandbox
    with Sandbox() as sb:
        r = sb.run("print(1)", timeout=5.0)   # Result: stdout, stderr, error, timed_out, ...
        s = sb.session(); s.run("x = 41"); s.run("x + 1").stdout   # '42\\n'
"""
from .policy import Limits, Namespaces, Policy, SyscallPolicy
from .result import CellError, Result
from .sandbox import Sandbox
from .session import Session

__all__ = ["Sandbox", "Session", "Result", "CellError", "Policy", "Limits", "Namespaces", "SyscallPolicy"]
