"""Sessions keep state, and a failing cell of any kind leaves the state exactly as it was."""
import time

import pytest

from oci_engine.errors import SessionClosedError, TooManySessionsError


@pytest.fixture
def session(sb):
    s = sb.session()
    yield s
    s.close()


def test_state_persists(session, guard):
    assert session.run("x = 41").ok
    assert session.run("x + 1").stdout == "42\n"
    assert session.run("import math\ndef f(v):\n    return math.sqrt(v)").ok
    assert session.run("f(16)").stdout == "4.0\n"


def test_rollback_after_exception(session, guard):
    session.run("x = 1\nitems = [1]")
    r = session.run("x = 2\nitems.append(2)\nraise ValueError('boom')")
    assert r.error.type == "ValueError"
    assert session.run("x, items").stdout == "(1, [1])\n"


def test_rollback_after_timeout(session, guard):
    session.run("x = 1")
    r = session.run("x = 2\nwhile True:\n    pass", timeout=1.0)
    assert r.timed_out
    assert session.run("x").stdout == "1\n"


def test_rollback_after_segfault(session, guard):
    session.run("x = 'kept'")
    r = session.run("x = 'lost'\nimport ctypes\nctypes.string_at(0)")
    assert r.error.type == "Crash" and "SIGSEGV" in r.error.message
    assert session.run("x").stdout == "'kept'\n"


def test_rollback_after_memory_bomb(session, guard):
    session.run("x = [1, 2, 3]")
    r = session.run("x.append(4)\nbig = bytearray(10 ** 10)")
    assert r.error.type == "MemoryError"
    assert session.run("x").stdout == "[1, 2, 3]\n"


def test_rollback_after_forbidden_syscall(session, guard):
    session.run("x = 5")
    r = session.run("x = 6\nimport ctypes\nctypes.CDLL(None).ptrace(0, 0, 0, 0)")
    assert r.error.type == "Crash" and "SIGSYS" in r.error.message
    assert session.run("x").stdout == "5\n"


def test_session_cannot_fork(session, guard):
    session.run("import os")
    r = session.run("os.fork()")
    assert r.error.type == "PermissionError"
    r = session.run("import ctypes\nprint(ctypes.CDLL(None, use_errno=True).syscall(56, 17, 0, 0, 0, 0))")
    assert r.stdout == "-1\n"
    assert session.run("1 + 1").stdout == "2\n"


def test_session_cannot_kill_its_parked_state(session, guard):
    session.run("import os\nx = 'alive'")
    r = session.run("os.kill(os.getppid(), 9)")
    assert r.error.type == "PermissionError"
    r = session.run("os.kill(0, 9)")
    assert r.error.type == "PermissionError"
    assert session.run("x").stdout == "'alive'\n"


def test_files_persist_in_session_workdir(session, guard):
    session.run("open('notes.txt', 'w').write('remember')")
    assert session.run("open('notes.txt').read()").stdout == "'remember'\n"


def test_reset_forgets_everything(session, guard):
    session.run("x = 1")
    session.reset()
    assert session.run("x").error.type == "NameError"


def test_closed_session_raises(sb, guard):
    s = sb.session()
    s.close()
    with pytest.raises(SessionClosedError):
        s.run("1")


def test_live_session_cap(sb, guard):
    old = sb.max_sessions
    sb.max_sessions = sb.live_sessions + 2
    opened = [sb.session(), sb.session()]
    try:
        with pytest.raises(TooManySessionsError):
            sb.session()
    finally:
        for s in opened:
            s.close()
        sb.max_sessions = old


def test_idle_sessions_expire(sb, guard):
    old = sb.session_idle_s
    sb.session_idle_s = 0.3
    try:
        s = sb.session()
        s.run("x = 1")
        deadline = time.monotonic() + 10
        while not s.closed and time.monotonic() < deadline:
            time.sleep(0.1)
        with pytest.raises(SessionClosedError, match="expired"):
            s.run("x")
    finally:
        sb.session_idle_s = old


def test_sessions_are_independent(sb, guard):
    a, b = sb.session(), sb.session()
    try:
        a.run("x = 'a'")
        b.run("x = 'b'")
        assert a.run("x").stdout == "'a'\n" and b.run("x").stdout == "'b'\n"
    finally:
        a.close(), b.close()


def test_many_cells_keep_state(session, guard):
    for i in range(30):
        assert session.run(f"v{i} = {i}").ok
    assert session.run("sum(v0 for v0 in range(30))").stdout == "435\n"
    assert session.run("v29").stdout == "29\n"


def test_thread_left_running_does_not_follow_into_the_next_cell(sb, guard):
    # A parked state with a live thread is forked the full way (os.fork), which drops the thread
    # cleanly: the next cell sees it stopped instead of hanging on it.
    with sb.session() as s:
        assert s.run("import threading, time\nt = threading.Thread(target=time.sleep, args=(30,), "
                     "daemon=True)\nt.start()").error is None
        r = s.run("t.join(5)\nprint(t.is_alive(), threading.active_count())", timeout=10)
        assert r.error is None and r.stdout == "False 1\n"
        assert s.run("print('still fine')").stdout == "still fine\n"


def test_later_cell_may_have_a_longer_budget_than_an_earlier_one(sb, guard):
    with sb.session() as s:
        assert s.run("x = 1", timeout=1).error is None
        r = s.run("import resource\nsoft, hard = resource.getrlimit(resource.RLIMIT_CPU)\n"
                  "print(soft >= 20, hard >= soft, x)", timeout=20)
        assert r.error is None and r.stdout == "True True 1\n"
        r = s.run("import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True: pass",
                  timeout=1.5)
        assert r.timed_out and r.error.type == "Timeout"  # the wall clock still ends it
        assert s.run("print(x)").stdout == "1\n"


def test_timeout_after_a_cell_that_succeeded_before_its_fork_was_reported(sb, guard):
    # The parked state reports each spare's pid after the fork, but the spare can run its cell and
    # succeed first (seen under load). Here the parked state holds the report back on purpose: a
    # live thread makes it fork with os.fork(), which runs the state's after-fork hooks first. The
    # zygote must still learn the new parked state's pid, or a later cell's kill fails its parent
    # check and the whole session is lost instead of the cell timing out.
    with sb.session() as s:
        assert s.run("import os, threading, time\n"
                     "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
                     "os.register_at_fork(after_in_parent=lambda: time.sleep(0.5))").error is None
        assert s.run("y = 2").error is None
        r = s.run("while True: pass", timeout=1)
        assert r.timed_out and r.error.type == "Timeout", r.error
        assert s.run("print(y)").stdout == "2\n"


def test_lost_session_says_why(sb, guard):
    with sb.session() as s:
        # The cell succeeds, so its process becomes the parked state; then its thread ends it.
        assert s.run("import os, threading, time\nthreading.Thread(target=lambda: (time.sleep(0.5), "
                     "os._exit(0))).start()").error is None
        deadline = time.monotonic() + 10
        while not s.lost and time.monotonic() < deadline:
            time.sleep(0.05)
        r = s.run("1")
        assert r.error.type == "SessionLost" and "(its process died)" in r.error.message, r.error
        assert s.run("print('fresh')").stdout == "fresh\n"


def test_cell_kept_as_the_state_just_past_its_deadline_returns_its_result(sb, guard, monkeypatch):
    # A cell that succeeds just past its deadline can become the session's state before the
    # host's kill reaches the zygote (which reads it first is a race). The user must then see the
    # result the state now holds, not a Timeout for a cell whose effects stayed. The host's kill
    # is held back here until the zygote took the success (it then hands over the next spare).
    zygote = sb._zygote
    send = zygote.send

    def late_kill(header, body=b""):
        if header.get("op") == "session_kill":
            deadline = time.monotonic() + 20
            while s._spare is None and time.monotonic() < deadline:
                time.sleep(0.01)
        send(header, body)

    with sb.session() as s:
        s.run("x = 1")
        monkeypatch.setattr(zygote, "send", late_kill)
        r = s.run("import time\ntime.sleep(1.2)\nx = 2\nprint('finished')", timeout=1)
        monkeypatch.undo()
        assert not r.timed_out and r.error is None and r.stdout == "finished\n", r
        assert r.duration_s < 5  # no wait for an exit report that cannot come
        assert s.run("print(x)").stdout == "2\n"
