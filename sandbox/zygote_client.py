"""Host side of the zygote: starts it as a fresh interpreter and carries frames both ways.

The zygote is never a fork of the host (which may hold torch, threads, secrets): it is a new
`python` started with only the variables it needs. A reader thread hands each incoming frame to
the Sandbox; end of stream means the zygote died.
"""
import os
import socket
import subprocess
import sys
import threading

from . import protocol

# The imports that start the zygote already take Python's object arenas from malloc's heap, as
# the preload does (hugepages.arenas_on_heap): what they allocate then collapses into huge pages
# with the rest instead of staying a few 1 MiB mappings that every fork copies entry by entry.
# hugepages.py is loaded by path: importing the package would allocate before it could act.
_BOOT = ("import importlib.util as u\n"
         "s = u.spec_from_file_location('_oci_boot_hugepages', %r)\n"
         "h = u.module_from_spec(s); s.loader.exec_module(h)\n"
         "with h.arenas_on_heap():\n"
         "    from oci_engine.sandbox.zygote import main\n"
         "main()" % os.path.join(os.path.dirname(os.path.abspath(__file__)), "hugepages.py"))


def scrubbed_env():
    """The zygote's whole environment: nothing of the host's (tokens, keys, proxies) leaks in."""
    import oci_engine
    root = os.path.dirname(os.path.dirname(os.path.abspath(oci_engine.__file__)))
    cache = os.path.join(os.path.expanduser("~"), ".cache", "oci-engine", "matplotlib")
    try:
        os.makedirs(cache, exist_ok=True)
    except OSError:
        cache = "/nonexistent"
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": "/nonexistent",
        "PYTHONPATH": root,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        # BLAS pools would make the zygote multi-threaded, and fork is only safe single-threaded.
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": cache,  # the font cache, built once on the host, read before pivot
    }


class ZygoteProcess:
    def __init__(self, policy, on_frame, on_death, workers=2, start_timeout_s=120.0):
        self.sock, theirs = socket.socketpair()
        self.proc = subprocess.Popen(
            [sys.executable, "-s", "-c", _BOOT, str(theirs.fileno())],
            pass_fds=[theirs.fileno()], env=scrubbed_env(), cwd="/", stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, start_new_session=True)
        theirs.close()
        self._send_lock = threading.Lock()
        self.alive = True
        try:
            self.send({"op": "init", "policy": policy.to_dict(), "workers": workers})
            self.sock.settimeout(start_timeout_s)
            reader = protocol.FrameReader(self.sock)
            frame = reader.recv()
            self.sock.settimeout(None)
        except OSError:
            frame = None
        if frame is None or frame[0].get("op") != "ready":
            self.kill()
            from oci_engine.errors import SandboxError
            raise SandboxError("the sandbox helper process failed to start (see its messages on "
                               "stderr above); check that pyseccomp and libseccomp.so.2 are installed")
        self.isolation = frame[0]["isolation"]
        self._on_frame, self._on_death = on_frame, on_death
        self._reader = reader
        self._thread = threading.Thread(target=self._read_loop, name="oci-sandbox-reader", daemon=True)
        self._thread.start()

    def send(self, header, body=b""):
        with self._send_lock:
            protocol.send(self.sock, header, body)

    def _read_loop(self):
        try:
            while True:
                frame = self._reader.recv()
                if frame is None:
                    break
                self._on_frame(*frame)
        except Exception:
            pass
        self.alive = False
        self._on_death(self)

    def kill(self):
        """End the zygote and with it every cell: they live in its pid namespace."""
        self.alive = False
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.proc.kill()
        except OSError:
            pass
        self.proc.wait()
        self.sock.close()
