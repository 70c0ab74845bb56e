"""Process creation of every kind is refused; threads are allowed but bounded."""


def test_os_fork_refused(sb, guard):
    r = sb.run("import os\nos.fork()")
    assert r.error.type == "PermissionError" and r.error.lineno == 2


def test_fork_bomb_loop(sb, guard):
    r = sb.run("import os\nn = 0\nwhile True:\n    os.fork()\n    n += 1")
    assert r.error.type == "PermissionError"


def test_raw_clone_via_ctypes(sb, guard):
    code = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "r = libc.syscall(56, 17, 0, 0, 0, 0)\n"  # clone(SIGCHLD): a plain fork
            "print(r, ctypes.get_errno())\nif r == 0: os._exit(0)")
    r = sb.run(code)
    assert r.error is None and r.stdout == "-1 1\n"  # EPERM, in the parent only


def test_raw_clone_with_namespace_flags_refused(sb, guard):
    # CLONE_THREAD plus CLONE_NEWUSER looks like a thread to a naive filter
    code = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "print(libc.syscall(56, 0x00010000 | 0x10000000 | 0x00000800 | 0x00000100, 0, 0, 0, 0), ctypes.get_errno())")
    r = sb.run(code)
    assert r.stdout == "-1 1\n"


def test_vfork_syscall_refused(sb, guard):
    r = sb.run("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nprint(libc.syscall(58), ctypes.get_errno())")
    assert r.stdout == "-1 1\n"


def test_multiprocessing_refused(sb, guard):
    r = sb.run("import multiprocessing as mp\np = mp.Process(target=print, args=(1,))\np.start()\np.join()")
    assert r.error is not None and r.error.type in ("PermissionError", "OSError")
    assert r.stdout == ""


def test_subprocess_refused(sb, guard):
    r = sb.run("import subprocess\nprint(subprocess.run(['echo', 'escaped'], capture_output=True).stdout)")
    assert r.error.type == "PermissionError"
    assert "escaped" not in r.stdout


def test_os_system_refused(sb, guard):
    r = sb.run("import os\nprint('status', os.system('echo escaped > /work/x'))")
    assert "escaped" not in r.stdout
    assert r.stdout.startswith("status ") and r.stdout != "status 0\n"


def test_posix_spawn_refused(sb, guard):
    r = sb.run("import os\nos.posix_spawn('/bin/true', ['true'], {})")
    assert r.error is not None and r.error.type in ("PermissionError", "OSError")


def test_execve_refused_and_cell_continues(sb, guard):
    r = sb.run("import os\ntry:\n    os.execv('/bin/sh', ['sh', '-c', 'echo escaped'])\n"
               "except PermissionError as e:\n    print('refused', e.errno)")
    assert r.error is None and r.stdout == "refused 1\n"


def test_memfd_exec_refused(sb, guard):
    code = ("import os\nfd = os.memfd_create('x')\nos.write(fd, open('/bin/true', 'rb').read())\n"
            "os.execve(fd, ['true'], {})")  # fexecve -> execveat
    r = sb.run(code)
    assert r.error.type == "PermissionError" and r.error.lineno == 4


def test_double_fork_orphan_refused(sb, guard):
    code = ("import os\npid = os.fork()\nif pid == 0:\n    if os.fork() == 0:\n"
            "        import time; time.sleep(60)\n    os._exit(0)")
    r = sb.run(code)
    assert r.error.type == "PermissionError" and r.error.lineno == 2


def test_threads_allowed(sb, guard):
    code = ("import threading\nout = []\nts = [threading.Thread(target=out.append, args=(i,)) for i in range(8)]\n"
            "[t.start() for t in ts]; [t.join() for t in ts]\nsorted(out)")
    r = sb.run(code)
    assert r.error is None and r.stdout == "[0, 1, 2, 3, 4, 5, 6, 7]\n"


def test_thread_bomb_bounded(sb, guard):
    code = ("import threading\nev = threading.Event()\nn = 0\ntry:\n    while n < 100000:\n"
            "        threading.Thread(target=ev.wait, daemon=True).start()\n        n += 1\n"
            "except Exception as e:\n    print('stopped at', n, type(e).__name__)\nev.set()")
    r = sb.run(code, timeout=20)
    assert r.error is None and r.stdout.startswith("stopped at ")
    assert int(r.stdout.split()[2]) <= sb.policy.limits.processes


def test_setuid_and_capabilities_gone(sb, guard):
    code = ("status = open('/proc/self/status').read()\n"
            "fields = dict(l.split(':', 1) for l in status.splitlines())\n"
            "print(fields['CapEff'].strip(), fields['CapPrm'].strip(), fields['NoNewPrivs'].strip(), fields['Seccomp'].strip())")
    r = sb.run(code)
    assert r.stdout == "0000000000000000 0000000000000000 1 2\n"
    guard.no_secret(r)


def test_new_session_or_group_refused(sb, guard):
    # The template that forks every one-shot cell may call these; its cells may not (the second
    # stage of their filter takes them back).
    r = sb.run("import os\nfor f in (os.setsid, lambda: os.setpgid(0, 0)):\n"
               "    try:\n        f()\n        print('allowed')\n"
               "    except PermissionError:\n        print('refused')")
    assert r.error is None and r.stdout == "refused\nrefused\n"


def test_threads_still_allowed_under_the_two_stage_filter(sb, guard):
    r = sb.run("import threading\nout = []\nts = [threading.Thread(target=out.append, args=(i,)) "
               "for i in range(8)]\n[t.start() for t in ts]\n[t.join() for t in ts]\nsorted(out)")
    assert r.error is None and r.stdout == "[0, 1, 2, 3, 4, 5, 6, 7]\n"
