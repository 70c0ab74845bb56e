"""`oci-engine chat` driven through a pipe, as a script or a user with a terminal would."""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

from model_replies import stdout_of

from oci_engine.code_blocks import extract_code_blocks


def start_chat(gguf, *flags):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "oci_engine", "chat", "--model", str(gguf), "--max-model-len",
                             "2048", "--max-tokens", "160", *flags],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def read_until(proc, needle: bytes, timeout: float = 120) -> tuple[bytes, int]:
    """stdout until `needle` appears, and in how many reads it came (streaming shows as many)."""
    buf, reads, deadline = b"", 0, time.monotonic() + timeout
    while needle not in buf:
        left = deadline - time.monotonic()
        assert left > 0, buf.decode(errors="replace")
        # wait with a deadline: a blocking read would hang the suite instead of failing it
        if not select.select([proc.stdout], [], [], left)[0]:
            continue
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            raise AssertionError(f"chat exited before {needle!r}: {buf.decode(errors='replace')}")
        buf += chunk
        reads += 1
    return buf, reads


def test_chat_streams_a_reply_runs_its_code_and_exits_on_eof(smollm2_gguf):
    proc = start_chat(smollm2_gguf, "--max-rounds", "1")  # one reply; its code still runs
    try:
        proc.stdin.write(b"Write Python code that prints the squares of 1 to 5.\n")
        proc.stdin.flush()
        out, reads = read_until(proc, b"execution result")
        assert b"```python" in out and reads > 10, "the reply should arrive token by token"
        if b"\n>>> " not in out.split(b"execution result", 1)[1]:  # one read may carry both
            out2, _ = read_until(proc, b"\n>>> ")  # the result, then the next prompt
            out += out2
        proc.stdin.close()  # EOF: Ctrl-D
        proc.wait(timeout=60)
        rest, err = proc.stdout.read(), proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    out = (out + rest).decode()
    assert proc.returncode == 0, err.decode()[-2000:]
    # what the reply's code prints comes after the result's header and before the next prompt
    reply = out[out.index(">>> ") + 4:out.index("execution result")]  # the reply follows the first prompt
    printed = stdout_of(extract_code_blocks(reply)[0]).strip()
    assert printed and printed in out[out.index("execution result"):out.rindex(">>> ")], out
    assert "\x1b[" not in out, "no colour codes when stdout is not a terminal"
    assert "Traceback" not in err.decode()


def test_ctrl_c_stops_a_reply_and_the_chat_goes_on(smollm2_gguf):
    proc = start_chat(smollm2_gguf, "--max-rounds", "1", "--max-tokens", "300")
    try:
        read_until(proc, b">>> ")
        proc.stdin.write(b"Write a long story about a dragon, at least 2000 words.\n")
        proc.stdin.flush()
        read_until(proc, b" the ")
        proc.send_signal(signal.SIGINT)
        read_until(proc, b"[stopped]", timeout=30)
        read_until(proc, b">>> ", timeout=30)
        proc.stdin.write(b"What is 2 + 2? Answer with one number.\n")
        proc.stdin.flush()
        out, _ = read_until(proc, b">>> ", timeout=60)
        assert len(out.strip()) > len(b">>>")
        proc.stdin.close()
        proc.wait(timeout=60)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()[-2000:]
