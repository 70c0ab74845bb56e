"""The frames a fresh fork reads and writes without json: round trips, and what a hostile cell
could put in them."""
import socket

from oci_engine.sandbox import cell, protocol
from oci_engine.sandbox.result import from_done


def test_cell_frame_round_trip():
    a, b = socket.socketpair()
    with a, b:
        a.sendall(protocol.encode_cell("print('é')".encode(), 2.5))
        assert protocol.recv_cell(b) == (2.5, bytearray("print('é')".encode()))


def test_recv_cell_rejects_other_frames_and_eof():
    a, b = socket.socketpair()
    with a, b:
        a.sendall(protocol.encode({"op": "spare"}, b"12345678"))
        assert protocol.recv_cell(b) is None
    a, b = socket.socketpair()
    with b:
        a.sendall(protocol.encode_cell(b"x", 1.0)[:10])
        a.close()
        assert protocol.recv_cell(b) is None  # cut short


def test_plain_body_round_trip_and_header_reads_as_json():
    body = cell.plain_body("out\n", "err ünï\n")
    r = from_done({"ok": True}, body, False, 0.01, 5.0)
    assert (r.stdout, r.stderr, r.error) == ("out\n", "err ünï\n", None)
    a, b = socket.socketpair()
    with a, b:
        protocol.send_result(a, True, body)
        header, got, _ = protocol.FrameReader(b).recv()
        assert header == {"op": "result", "ok": True} and got == body


def test_malformed_plain_body_claims_nothing():
    good = cell.plain_body("abc", "")
    for bad in (good[:5], good + b"x", b"\x00" + b"\xff" * 8 + b"abc"):
        r = from_done({"ok": True}, bad, False, 0.01, 5.0)
        assert r.stdout == "" and r.stderr == "" and r.error is None
    r = from_done({"ok": True}, cell.plain_body("a", "")[:-1] + b"\xff", False, 0.01, 5.0)
    assert r.stdout == "\ufffd"  # not UTF-8: decoded with replacement
