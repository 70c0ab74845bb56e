"""Memory, output and disk bombs hit a limit inside the cell; the host never notices."""


def test_bytearray_memory_bomb(sb, guard):
    r = sb.run("b = bytearray(10 ** 10)")
    assert r.error.type == "MemoryError"


def test_numpy_memory_bomb(sb, guard):
    r = sb.run("import numpy as np\na = np.ones(10 ** 10)")
    assert r.error is not None and "MemoryError" in r.error.type and r.error.lineno == 2


def test_mmap_memory_bomb(sb, guard):
    r = sb.run("import mmap\nm = mmap.mmap(-1, 10 ** 10)")
    assert r.error.type == "OSError" and "Cannot allocate memory" in r.error.message


def test_growing_memory_bomb(sb, guard):
    r = sb.run("chunks = []\nwhile True:\n    chunks.append(bytes(10 ** 8))", timeout=10)
    assert r.error.type == "MemoryError" and not r.timed_out


def test_endless_print_is_capped(sb, guard):
    r = sb.run("while True:\n    print('x' * 1000)", timeout=20)
    cap = sb.policy.limits.stdout_bytes
    # the memory file stops at RLIMIT_FSIZE: the cell ends with a clean OSError, not a hang
    assert r.error is not None and r.error.type == "OSError" and "File too large" in r.error.message
    assert "bytes truncated]" in r.stdout
    assert len(r.stdout.encode()) < cap + 200
    assert r.stdout.startswith("x" * 1000 + "\n")


def test_endless_os_write_is_capped(sb, guard):
    r = sb.run("import os\nwhile True:\n    os.write(1, b'y' * 65536)", timeout=20)
    assert r.error.type == "OSError" and "bytes truncated]" in r.stdout
    assert len(r.stdout) < sb.policy.limits.stdout_bytes + 200


def test_large_print_keeps_head_and_tail(sb, guard):
    r = sb.run("print('HEAD' + 'm' * 10 ** 6 + 'TAIL')")
    assert r.error is None
    assert r.stdout.startswith("HEAD") and r.stdout.endswith("TAIL\n")
    assert "bytes truncated]" in r.stdout and len(r.stdout) < sb.policy.limits.stdout_bytes + 200


def test_stderr_flood_is_capped(sb, guard):
    r = sb.run("import sys\nfor i in range(200000):\n    sys.stderr.write('e' * 100)")
    assert r.error is None and "bytes truncated]" in r.stderr
    assert len(r.stderr) < sb.policy.limits.stderr_bytes + 200 and r.stdout == ""


def test_non_utf8_output_is_replaced(sb, guard):
    r = sb.run("import os, sys\nos.write(1, b'ok \\xff\\xfe end\\n')\nos.write(2, b'\\xc3(\\n');")
    assert r.error is None
    assert r.stdout == "ok \ufffd\ufffd end\n" and r.stderr == "\ufffd(\n"


def test_single_file_past_size_limit(sb, guard):
    code = ("with open('big', 'wb') as f:\n    for i in range(100):\n        f.write(b'z' * (1 << 20))")
    r = sb.run(code, timeout=20)
    assert r.error.type == "OSError" and "File too large" in r.error.message


def test_disk_fill_stops_at_quota(sb, guard):
    code = ("import os\nn = 0\ntry:\n    while True:\n        with open(f'f{n}', 'wb') as f:\n"
            "            f.write(b'd' * (32 << 20))\n        n += 1\n"
            "except OSError as e:\n    print(e.errno, n)")
    r = sb.run(code, timeout=30)
    assert r.error is None
    errno_, n = map(int, r.stdout.split())
    assert errno_ == 28 and n * 32 <= sb.policy.limits.workdir_bytes >> 20  # ENOSPC at the quota


def test_disk_is_freed_after_a_run(sb, guard):
    r = sb.run("import os\nwith open('leftover', 'wb') as f:\n    f.write(b'1' * (8 << 20))\n"
               "print(os.statvfs('.').f_bfree * os.statvfs('.').f_bsize >= (200 << 20))")
    assert r.stdout == "True\n"
    r = sb.run("import os\nprint(os.listdir('.'))")
    assert r.stdout == "[]\n"  # each one-shot run starts in a fresh, empty work directory


def test_deep_recursion_is_an_error(sb, guard):
    r = sb.run("def f(n):\n    return f(n + 1)\nf(0)")
    assert r.error.type == "RecursionError" and r.error.lineno == 2


def test_unbounded_c_recursion_crashes_only_the_cell(sb, guard):
    # repr of a deeply nested list recurses in C: with the guard lifted, the C stack overflows
    r = sb.run("import sys\nsys.setrecursionlimit(10 ** 8)\na = []\nfor _ in range(10 ** 6):\n"
               "    a = [a]\nrepr(a)", timeout=20)
    assert r.error.type == "Crash" and "SIGSEGV" in r.error.message


def test_segfault_crashes_only_the_cell(sb, guard):
    r = sb.run("import ctypes\nctypes.string_at(0)")
    assert r.error.type == "Crash" and "SIGSEGV" in r.error.message and r.exit_signal == 11
