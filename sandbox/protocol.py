"""Framed messages over Unix stream sockets, with file descriptors riding along.

A frame is: u32 total length, u32 header length, a JSON header, then raw body bytes. The body
carries a child's result untouched (the zygote never parses what a cell produced; the host parses
it with size caps). Readers are incremental so one slow or hostile peer never blocks the zygote.
"""
import array
import json
import os
import socket
import struct

_HDR = struct.Struct("<II")
MAX_FDS = 64  # per read: several frames' fds can arrive in one recvmsg


def encode(header, body=b""):
    h = json.dumps(header, separators=(",", ":")).encode()
    return _HDR.pack(len(h) + len(body), len(h)) + h + body


def send(sock, header, body=b"", fds=()):
    if fds:
        header = dict(header, nfds=len(fds))  # the reader hands fds out in order, by this count
    data = encode(header, body)
    sent = sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]) \
        if fds else sock.send(data)
    if sent < len(data):
        sock.sendall(data[sent:])


def send_before(sock, deadline_s, header, body=b"", fds=()):
    """Send on a non-blocking socket, waiting at most `deadline_s` for a peer that does not read.
    `header` may be ready JSON bytes (which then must carry nfds itself)."""
    import select
    import time
    if isinstance(header, bytes):
        data = memoryview(encode_raw(header, body))
    else:
        data = memoryview(encode(dict(header, nfds=len(fds)) if fds else header, body))
    end = time.monotonic() + deadline_s
    first = True
    while data:
        try:
            if first and fds:
                n = sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
            else:
                n = sock.send(data)
            first = False
            data = data[n:]
        except (BlockingIOError, InterruptedError):
            left = end - time.monotonic()
            if left <= 0 or not select.select([], [sock], [], left)[1]:
                raise TimeoutError("peer is not reading")


# The frames a fresh fork exchanges with the host are built and read without json: its first use
# in a fork touches (and so copies) some 60 pages, a fifth of a trivial cell's whole cost.
CELL_HEADER = b'{"op":"cell"}'  # body: f64 timeout (little-endian), then the code as UTF-8
RESULT_OK = b'{"op":"result","ok":true}'
RESULT_FAILED = b'{"op":"result","ok":false}'
_TIMEOUT = struct.Struct("<d")


# Zygote <-> template, whose loop runs between forks: every page it writes is copied again after
# each fork, so it reads and writes these without json too.
SPARE_ORDER = b'{"op":"spare","nfds":3}'  # body: the spare's work directory; fds: channel, out, err
SPARE_ORDER_HEADER = json.loads(SPARE_ORDER)


def template_go():
    """Raw bytes before any frame, to a template forked before the root was built: the root is
    ready, and it is the "/" with this device and inode (the template checks its own)."""
    st = os.stat("/")
    return b"G" + struct.pack("<QQ", st.st_dev, st.st_ino)


def forked_frame(pid):
    return encode_raw(b'{"op":"forked","pid":%s}' % (b"null" if pid is None else b"%d" % pid))


def exited_frame(pid, status):
    return encode_raw(b'{"op":"exited","pid":%d,"status":%d}' % (pid, status))


def encode_raw(header_json, body=b""):
    return _HDR.pack(len(header_json) + len(body), len(header_json)) + header_json + body


def encode_cell(code_bytes, timeout):
    return encode_raw(CELL_HEADER, _TIMEOUT.pack(timeout) + code_bytes)


def send_result(sock, ok, body=b""):
    """`sock`: a socket, or a bare fd (a fresh fork need not build a socket object)."""
    data = encode_raw(RESULT_OK if ok else RESULT_FAILED, body)
    if not isinstance(sock, int):
        sock.sendall(data)
        return
    view = memoryview(data)
    while view:
        view = view[os.write(sock, view):]


def recv_cell(sock, max_frame=64 << 20):
    """The child's one read (blocking): (timeout, code bytes), or None for anything but a cell."""
    prefix = _recv_exact(sock, _HDR.size)
    if prefix is None:
        return None
    total, hlen = _HDR.unpack(prefix)
    if total > max_frame or hlen != len(CELL_HEADER) or total < hlen + _TIMEOUT.size:
        return None
    data = _recv_exact(sock, total)
    if data is None or data[:hlen] != CELL_HEADER:
        return None
    return _TIMEOUT.unpack_from(data, hlen)[0], data[hlen + _TIMEOUT.size:]


def _recv_exact(sock, n):
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = os.readv(sock, [view[got:]]) if isinstance(sock, int) else sock.recv_into(view[got:])
        if k == 0:
            return None
        got += k
    return buf


class FrameTooLarge(Exception):
    pass


class BadFrame(FrameTooLarge):
    """Not a frame this protocol writes: the peer is broken or hostile."""


class FrameReader:
    """Accumulates bytes from a socket; yields (header, body, fds) frames as they complete."""

    def __init__(self, sock, max_frame=64 << 20, known=None):
        self.sock = sock
        self.max_frame = max_frame
        self.known = known or {}  # header bytes -> the header, parsed ahead (read-only)
        self.buf = bytearray()
        self.fds = []
        self.eof = False

    def fill(self, blocking=False):
        """Read what is available (or one chunk when blocking). Returns False at end of stream."""
        while True:
            try:
                data, anc, _, _ = self.sock.recvmsg(
                    1 << 18, socket.CMSG_LEN(MAX_FDS * 4), 0 if blocking else socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return True
            except (ConnectionResetError, OSError):
                self.eof = True
                return False
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(payload[: len(payload) - len(payload) % 4])
                    self.fds.extend(fds)
            if not data:
                self.eof = True
                return False
            self.buf += data
            if len(self.buf) >= 8 and _HDR.unpack_from(self.buf)[0] > self.max_frame:
                raise FrameTooLarge(_HDR.unpack_from(self.buf)[0])
            if blocking:
                return True

    def frames(self):
        while len(self.buf) >= 8:
            total, hlen = _HDR.unpack_from(self.buf)
            if total > self.max_frame or hlen > total:
                raise FrameTooLarge(total)
            if len(self.buf) < 8 + total:
                return
            raw = bytes(self.buf[8:8 + hlen])
            header = self.known.get(raw)
            if header is None:
                try:
                    header = json.loads(raw)
                except ValueError:
                    raise BadFrame("header is not JSON") from None
            if not isinstance(header, dict):
                raise BadFrame("header is not an object")
            body = bytes(self.buf[8 + hlen:8 + total])
            del self.buf[:8 + total]
            n = header.get("nfds", 0)
            n = n if isinstance(n, int) and n >= 0 else 0
            fds, self.fds = self.fds[:n], self.fds[n:]
            yield header, body, fds

    def recv(self):
        """Blocking read of the next frame (for trusted peers). None at end of stream."""
        while True:
            for frame in self.frames():
                return frame
            if not self.fill(blocking=True):
                return None

    def close_fds(self):
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []
