"""The lean and full one-shot templates: which cell gets which, and that both confine alike."""
import pytest

from oci_engine.sandbox.template_choice import Chooser

CHOOSER = Chooser(lean=["numpy"], heavy=["pandas", "matplotlib"])


@pytest.mark.parametrize("code", [
    "print(1)",
    "import numpy as np\nprint(np.arange(1000).sum())",
    "import os, sys as s; import json",
    "from collections import deque\nimport numpy.linalg",
    "import re\npattern = re.compile('a+')",
    "x = [i * i for i in range(10)]\nx",
])
def test_code_that_cannot_need_more_runs_lean(code):
    assert CHOOSER.kind(code) == "lean"


@pytest.mark.parametrize("code", [
    "import pandas as pd",
    "import matplotlib.pyplot as plt",
    "from pylab import *",
    "df = make()  # a pandas frame from elsewhere",
    "import scipy",  # third-party: may import pandas itself
    "a = 1; import seaborn",
    "from . import sibling",
    "m = __import__('os')",
    "import importlib",
    "exec(source)",
    "import pickle\npickle.loads(blob)",
    "import sys\nsys.modules['x'] = None",
])
def test_code_that_may_need_more_runs_full(code):
    assert CHOOSER.kind(code) == "full"


def test_both_templates_are_running(sb):
    assert sb.isolation["templates"] == ["full", "lean"]
    assert sb.isolation["lean_preloaded"] == ["numpy"]
    assert set(sb.isolation["preloaded"]) >= {"numpy", "pandas", "matplotlib"}


IDENTITY = """import os
status = dict(line.split(':', 1) for line in open('/proc/self/status').read().splitlines())
print(os.getuid(), os.getgid(), os.getgroups(), sorted(os.listdir('/')), os.getcwd().split('-')[0])
for key in ('CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb', 'NoNewPrivs', 'Seccomp',
            'Seccomp_filters'):
    print(key, status[key].strip())
# the name split in two: the whole word would send this cell to a full spare
print('heavy loaded:', any(('matplot' + 'lib') in line for line in open('/proc/self/maps')))
"""


def test_lean_and_full_spares_confine_alike(sb, guard):
    lean = sb.run(IDENTITY)
    full = sb.run(IDENTITY + "# ask for pandas: a full spare\n")
    assert lean.error is None and full.error is None, (lean, full)
    assert lean.stdout.replace("heavy loaded: False", "") == full.stdout.replace("heavy loaded: True", "")
    assert "heavy loaded: False" in lean.stdout and "heavy loaded: True" in full.stdout
    assert "CapEff 0000000000000000" in lean.stdout and "NoNewPrivs 1" in lean.stdout


def test_a_lean_cell_that_reaches_a_heavy_module_still_gets_it(sb, guard):
    # `code` is the standard library; the module name is assembled at run time, so the host's
    # reading of the text cannot see it: the import happens in the cell, at its usual cost.
    r = sb.run("import code\n_ = code.InteractiveInterpreter().runsource("
               "'import ' + 'pan' + 'das as p; print(p.DataFrame({\"a\": [1, 2]}).shape)')",
               timeout=60)
    assert r.error is None and r.stdout == "(2, 1)\n", r


PROCESS_STATE = """import os, resource, signal
print(sorted(int(fd) for fd in os.listdir('/proc/self/fd')))
print(os.getsid(0) == os.getpid(), os.getpgrp() == os.getpid())
print(signal.getsignal(signal.SIGCHLD) is signal.SIG_DFL,
      signal.getsignal(signal.SIGINT) is signal.default_int_handler)
print(sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])))
print(resource.getrlimit(resource.RLIMIT_NPROC), resource.getrlimit(resource.RLIMIT_NOFILE),
      resource.getrlimit(resource.RLIMIT_CPU))
print(os.getcwd().startswith('/work/run-'))
"""


@pytest.mark.parametrize("extra", ["", "# pandas: a full spare\n"])
def test_one_shot_child_starts_clean(sb, guard, extra):
    # Whichever loop forked it (C or Python) and whichever template: its own session, only its
    # own fds (the listing's own fd aside), default signal handling with nothing blocked, and the
    # per-cell limits of a 5 s cell.
    r = sb.run(PROCESS_STATE + extra, timeout=5)
    assert r.error is None, r
    lines = r.stdout.splitlines()
    fds = eval(lines[0])
    assert fds[:6] == [0, 1, 2, 3, 4, 5] and len(fds) <= 7, fds
    assert lines[1] == "True True" and lines[2] == "True True", lines
    assert lines[3] == "[]", lines
    lim = sb.policy.limits
    cpu = 5 + lim.cpu_slack_s
    assert lines[4] == f"({lim.processes}, {lim.processes}) ({lim.open_files}, {lim.open_files}) " \
                       f"({cpu}, {cpu + 1})", lines
    assert lines[5] == "True"
