"""The wall clock is the host's: nothing a cell does with signals, threads or C calls outlives it."""

GRACE_S = 3.0  # fork, kill and reap on a loaded 2-core machine


def test_kill_everyone_refused(sb, guard):
    r = sb.run("import os\nos.kill(-1, 9)")
    assert r.error.type == "PermissionError"


def test_kill_parent_refused(sb, guard):
    r = sb.run("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)")
    assert r.error.type == "PermissionError"


def test_kill_zygote_by_pid_refused(sb, guard):
    r = sb.run("import os\nos.kill(1, 9)")
    assert r.error.type == "PermissionError"


def test_tgkill_refused(sb, guard):
    r = sb.run("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nprint(libc.syscall(234, 1, 1, 9), ctypes.get_errno())")
    assert r.stdout == "-1 1\n"


def test_own_process_group_may_be_signalled(sb, guard):
    r = sb.run("import os, signal\nsignal.signal(signal.SIGUSR1, lambda *a: print('got it'))\nos.kill(0, signal.SIGUSR1)")
    assert r.error is None and r.stdout == "got it\n"


def test_ignoring_signals_does_not_outlive_timeout(sb, guard):
    code = ("import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU):\n"
            "    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass")
    r = sb.run(code, timeout=1.0)
    assert r.timed_out and r.error.type == "Timeout" and r.duration_s < 1.0 + GRACE_S


def test_catching_exceptions_does_not_outlive_timeout(sb, guard):
    code = ("import time\nwhile True:\n    try:\n        time.sleep(100)\n    except BaseException:\n        pass")
    r = sb.run(code, timeout=1.0)
    assert r.timed_out and r.duration_s < 1.0 + GRACE_S


def test_long_c_call_killed_at_deadline(sb, guard):
    r = sb.run("x = 2 ** 10 ** 9", timeout=1.0)
    assert r.timed_out and r.duration_s < 1.0 + GRACE_S


def test_busy_threads_killed_at_deadline(sb, guard):
    code = ("import threading\ndef spin():\n    while True:\n        pass\n"
            "for _ in range(4):\n    threading.Thread(target=spin).start()\nprint('started')")
    r = sb.run(code, timeout=1.0)
    # main returns at once, but the process lives on in its threads: it is killed at the deadline
    assert r.duration_s < 1.0 + GRACE_S and (r.timed_out or r.ok)


def test_output_before_timeout_is_kept(sb, guard):
    r = sb.run("import time\nprint('before', flush=True)\ntime.sleep(30)", timeout=1.0)
    assert r.timed_out and r.error.type == "Timeout"
    assert r.stdout == "before\n"  # the zygote holds the output files, so a kill loses nothing


def test_sleep_within_timeout_is_fine(sb, guard):
    r = sb.run("import time\ntime.sleep(0.2)\n'done'", timeout=5.0)
    assert r.error is None and r.stdout == "'done'\n" and not r.timed_out
