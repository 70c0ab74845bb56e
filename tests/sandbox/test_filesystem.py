"""The cell sees the interpreter, its libraries and a private work directory; nothing else."""
import os
import time

import pytest

from sandbox_host import require_namespaces


@pytest.fixture(autouse=True)
def _private_root(sb):
    require_namespaces(sb, "mount", "pid")


def test_host_secret_file_is_invisible(sb, guard):
    r = sb.run(f"open({guard.secret_path!r}).read()")
    assert r.error.type == "FileNotFoundError"
    guard.no_secret(r)


def test_etc_passwd_and_shadow_invisible(sb, guard):
    r = sb.run("import os\n[os.path.exists(p) for p in ('/etc/passwd', '/etc/shadow', '/etc/hosts')]")
    assert r.stdout == "[False, False, False]\n"


def test_host_home_tmp_var_invisible(sb, guard):
    home = os.path.expanduser("~")
    r = sb.run(f"import os\n[os.path.exists(p) for p in ({home!r} + '/.bashrc', '/var/log', '/tmp/' , '/work/main')]")
    assert r.stdout == "[False, False, False, False]\n"


def test_root_listing_is_minimal(sb, guard):
    r = sb.run("import os\nsorted(os.listdir('/'))")
    names = eval(r.stdout)
    assert set(names) <= {"bin", "dev", "etc", "lib", "lib32", "lib64", "proc", "sbin", "usr", "work",
                          os.path.expanduser("~").strip("/").split("/")[0], "opt", "home"}
    assert "tmp" not in names and "var" not in names


def test_write_outside_workdir_refused(sb, guard):
    r = sb.run("open('/usr/oci_escape', 'w').write('x')")
    assert r.error.type == "OSError" and "Read-only file system" in r.error.message
    assert not os.path.exists("/usr/oci_escape")


def test_write_to_root_refused(sb, guard):
    r = sb.run("open('/escape', 'w')")
    assert r.error.type == "OSError" and "Read-only" in r.error.message
    assert not os.path.exists("/escape")


def test_write_into_python_prefix_refused(sb, guard):
    import sys
    target = os.path.join(sys.prefix, "lib", "oci_escape.py")
    r = sb.run(f"open({target!r}, 'w').write('x')")
    assert r.error is not None and r.error.type in ("OSError", "PermissionError")
    assert not os.path.exists(target)


def test_workdir_is_writable(sb, guard):
    r = sb.run("import os\nopen('data.txt', 'w').write('hello')\nprint(open('data.txt').read(), os.getcwd().startswith('/work/'))")
    assert r.error is None and r.stdout == "hello True\n"


def test_symlink_to_host_path_resolves_inside(sb, guard):
    code = (f"import os\nos.symlink({guard.secret_path!r}, 'link')\nopen('link').read()")
    r = sb.run(code)
    assert r.error.type == "FileNotFoundError"
    guard.no_secret(r)


def test_symlink_through_proc_root_refused(sb, guard):
    r = sb.run("import os\nos.symlink('/proc/1/root/etc', 'l')\nos.listdir('l')")
    assert r.error is not None and r.error.type in ("PermissionError", "FileNotFoundError")


def test_host_environment_not_inherited(sb, guard):
    r = sb.run("import os\nsorted(os.environ)")
    assert r.error is None and "OCI_SANDBOX_TEST_SECRET" not in r.stdout
    assert set(eval(r.stdout)) <= {"HOME", "LANG", "LC_ALL", "MKL_NUM_THREADS", "MPLBACKEND", "MPLCONFIGDIR",
                                   "NUMEXPR_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PATH",
                                   "PWD", "PYTHONDONTWRITEBYTECODE", "PYTHONPATH", "PYTHONUNBUFFERED", "TMPDIR"}
    guard.no_secret(r)


def test_zygote_environ_through_proc_refused(sb, guard):
    r = sb.run("open('/proc/1/environ', 'rb').read()")
    assert r.error.type == "PermissionError"
    guard.no_secret(r)


def test_zygote_memory_through_proc_refused(sb, guard):
    r = sb.run("open('/proc/1/mem', 'rb')")
    assert r.error.type == "PermissionError"


def test_only_sandbox_processes_visible(sb, guard):
    # The zygote, its templates with their ready spares, the unmounting helper, open sessions
    # (parked state and spare), this cell and the replacement already forked for it.
    spares = sb.isolation["spares"]
    most = 1 + len(spares) + sum(spares.values()) + 1 + 2 * sb.live_sessions + 2
    r = sb.run(f"import os\npids = [p for p in os.listdir('/proc') if p.isdigit()]\nprint(len(pids) <= {most}, '1' in pids)")
    assert r.stdout == "True True\n"  # its own pid namespace: the zygote is pid 1


def test_inherited_file_descriptors_closed(sb, guard):
    code = ("import os\nopen_fds = []\nfor fd in range(3, 1024):\n    try:\n        os.fstat(fd)\n"
            "        open_fds.append(fd)\n    except OSError:\n        pass\n"
            "kinds = [os.readlink(f'/proc/self/fd/{fd}').split(':')[0] for fd in open_fds]\nprint(kinds)")
    r = sb.run(code)
    # fd 3 is its own result channel; the rest are its own output capture files
    assert r.error is None
    kinds = eval(r.stdout)
    assert kinds[0] == "socket" and all(k == "/memfd" for k in kinds[1:]) and len(kinds) <= 3


def test_forged_result_ends_the_cell(sb, guard):
    # A result frame is the cell's own word about its output (it could print the same); what it
    # cannot do is keep running after it: the zygote kills it the moment a result arrives.
    code = ("import os, json, struct, time\nbody = json.dumps({'stdout': 'all good', 'stderr': '', 'error': None, 'images': []}).encode()\n"
            "h = json.dumps({'op': 'result', 'ok': True}).encode()\n"
            "os.write(3, struct.pack('<II', len(h) + len(body), len(h)) + h + body)\ntime.sleep(60)")
    r = sb.run(code, timeout=10)
    assert not r.timed_out and r.duration_s < 5 and r.stdout == "all good"


def test_garbage_on_result_channel(sb, guard):
    r = sb.run("import os\nos.write(3, b'\\xff' * 64)\nimport time\ntime.sleep(60)", timeout=1)
    assert r.error is not None and r.error.type in ("OutputLimit", "Timeout", "Crash")


def test_finished_work_directories_are_removed(sb, guard):
    # A cell's files never reach the next cell, and its work directory (its own tmpfs) goes
    # once it ends: the helper unmounts it off the zygote's loop.
    for i in range(12):
        r = sb.run(f"open('mine-{i}', 'w').write('x' * 100000)\nimport os\nsorted(os.listdir('.'))")
        assert r.error is None and r.stdout == f"['mine-{i}']\n", r
    live = sum(sb.isolation["spares"].values()) + 1  # ready spares and this cell
    listing = "import os\nprint(len(os.listdir('/work')), open('/proc/self/mountinfo').read().count(' /work/'))"
    for _ in range(50):
        dirs, mounts = map(int, sb.run(listing).stdout.split())
        if dirs <= live and mounts <= live:
            break
        time.sleep(0.05)
    assert dirs <= live and mounts <= live, (dirs, mounts, live)
