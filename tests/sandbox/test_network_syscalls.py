"""No network of any family, and the syscalls attacks reach for kill the cell on the spot."""
import socket
import threading

import pytest


@pytest.fixture
def host_server():
    """A TCP server on the host's loopback: a cell must never reach it."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(0.2)
    hits = []

    def accept():
        try:
            while True:
                try:
                    hits.append(srv.accept())
                except socket.timeout:
                    if getattr(accept, "stop", False):
                        return
        except OSError:
            return

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1], hits
    accept.stop = True
    t.join(2)
    srv.close()


def test_tcp_to_host_refused(sb, guard, host_server):
    port, hits = host_server
    r = sb.run(f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)")
    assert r.error.type == "PermissionError"
    assert hits == []


@pytest.mark.parametrize("family", ["AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET"])
def test_socket_family_refused(sb, guard, family):
    kind = "SOCK_RAW" if family in ("AF_NETLINK", "AF_PACKET") else "SOCK_DGRAM"
    r = sb.run(f"import socket\nsocket.socket(socket.{family}, socket.{kind})")
    assert r.error.type == "PermissionError" and r.error.lineno == 2


def test_dns_lookup_fails(sb, guard):
    r = sb.run("import socket\nsocket.getaddrinfo('example.com', 80)")
    assert r.error is not None and r.error.type in ("gaierror", "PermissionError", "OSError")


def test_unix_socketpair_still_works(sb, guard):
    r = sb.run("import socket\na, b = socket.socketpair()\na.sendall(b'ping')\nb.recv(4)")
    assert r.error is None and r.stdout == "b'ping'\n"


# Syscalls that only attacks use: SIGSYS, the process is gone before it returns.
KILLED = {
    "ptrace": "libc.ptrace(0, 0, 0, 0)",                                  # PTRACE_TRACEME
    "process_vm_readv": "libc.syscall(310, 1, 0, 0, 0, 0, 0)",
    "io_uring_setup": "libc.syscall(425, 8, ctypes.create_string_buffer(120))",
    "bpf": "libc.syscall(321, 0, 0, 0)",
    "userfaultfd": "libc.syscall(323, 0)",
    "perf_event_open": "libc.syscall(298, 0, 0, -1, -1, 0)",
    "keyctl": "libc.syscall(250, 0, 0, 0, 0, 0)",
    "x32_getpid": "libc.syscall(0x40000000 | 39)",                         # x32 ABI entry
}


@pytest.mark.parametrize("name", sorted(KILLED))
def test_attack_syscall_kills_the_cell(sb, guard, name):
    r = sb.run(f"import ctypes\nlibc = ctypes.CDLL(None)\nprint('survived', {KILLED[name]})")
    assert r.error.type == "Crash" and "SIGSYS" in r.error.message
    assert "survived" not in r.stdout


def test_i386_int80_kills_the_cell(sb, guard):
    # mov eax, 20 (getpid in the i386 table); int 0x80; ret
    code = ("import ctypes, mmap\nbuf = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
            "buf.write(bytes([0xb8, 20, 0, 0, 0, 0xcd, 0x80, 0xc3]))\n"
            "addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))\n"
            "print('survived', ctypes.CFUNCTYPE(ctypes.c_int)(addr)())")
    r = sb.run(code)
    assert r.error.type == "Crash" and "SIGSYS" in r.error.message and "survived" not in r.stdout


@pytest.mark.parametrize("call", [
    "libc.unshare(0x10000000)",                      # CLONE_NEWUSER
    "libc.mount(b'none', b'/work', b'tmpfs', 0, None)",
    "libc.setns(0, 0)",
    "libc.chroot(b'/work')",
])
def test_namespace_and_mount_calls_refused(sb, guard, call):
    r = sb.run(f"import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nprint({call}, ctypes.get_errno())")
    assert r.error is None and r.stdout == "-1 1\n"  # EPERM: a clean failure
