"""Interpreter sessions over HTTP with the real default model and sandbox."""
from __future__ import annotations

import json
import os
import threading
import time

import httpx
import pytest

from live_server import LiveServer, iter_sse, sse_events
from model_replies import stdout_of

# SmolLM2 (greedy) answers this with a code block that prints, then comments on the output
SQUARES = "Write Python code that prints the squares of 1 to 5."


def events_of(response) -> list[tuple[str, dict]]:
    return [(name, json.loads(data)) for name, data in sse_events(response)]


def new_session(client, **body) -> str:
    r = client.post("/v1/interpreter/sessions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "interpreter.session"
    return r.json()["id"]


def send(client, sid, content, **body) -> list[tuple[str, dict]]:
    with client.stream("POST", f"/v1/interpreter/sessions/{sid}/messages",
                       json={"content": content, "max_tokens": 128, **body}) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        return events_of(r)


def wait_not_busy(client, sid, timeout=30.0):
    deadline = time.monotonic() + timeout
    while client.get(f"/v1/interpreter/sessions/{sid}").json()["busy"]:
        assert time.monotonic() < deadline, "the session stayed busy"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def square_turn(client):
    sid = new_session(client)
    return sid, send(client, sid, SQUARES, max_rounds=2)


def test_a_turn_streams_rounds_code_and_execution(square_turn):
    sid, events = square_turn
    names = [n for n, _ in events]
    assert names[0] == "round" and names[-1] == "done" and "error" not in names, names
    # round 1: tokens, the reply, the code cell, its execution; then round 2 begins
    first = names.index("reply")
    assert set(names[1:first]) == {"token"}
    assert names[first + 1:first + 3] == ["code", "execution"], names
    assert names[first + 3] == "round" and events[first + 3][1]["round"] == 2
    reply = events[first][1]
    assert reply["text"] == "".join(d["text"] for n, d in events[:first] if n == "token")
    assert "```" in reply["text"]
    code = events[first + 1][1]["code"]
    assert "print" in code and "```" not in code
    execution = events[first + 2][1]
    assert execution["stdout"] and execution["stdout"] == stdout_of(code), execution
    assert execution["error"] is None and execution["timed_out"] is False and execution["round"] == 1
    assert "feedback" not in execution  # what the model reads stays on the server
    done = events[-1][1]
    assert done["rounds"] == 2 and done["cancelled"] is False
    # round 2 re-sends the conversation; the prefix cache serves what round 1 already computed
    replies = [d for n, d in events if n == "reply"]
    assert replies[1]["cached_tokens"] >= 0.5 * replies[1]["prompt_tokens"] > 0
    assert done["cached_tokens"] == sum(r["cached_tokens"] for r in replies)


def test_transcript_and_delete(client, square_turn):
    sid, events = square_turn
    body = client.get(f"/v1/interpreter/sessions/{sid}").json()
    assert body["id"] == sid and body["busy"] is False
    roles = [m["role"] for m in body["messages"]]
    assert roles[:4] == ["user", "assistant", "code", "execution"]
    assert body["messages"][0]["content"] == SQUARES
    assert body["messages"][2]["content"] == next(d for n, d in events if n == "code")["code"]
    assert body["messages"][3]["stdout"] == stdout_of(body["messages"][2]["content"]) != ""
    assert client.delete(f"/v1/interpreter/sessions/{sid}").json()["deleted"] is True
    for r in (client.get(f"/v1/interpreter/sessions/{sid}"), client.delete(f"/v1/interpreter/sessions/{sid}"),
              client.post(f"/v1/interpreter/sessions/{sid}/messages", json={"content": "hi"})):
        assert r.status_code == 404 and r.json()["error"]["code"] == "session_not_found"


def test_unknown_session_is_404(client):
    for r in (client.get("/v1/interpreter/sessions/nope"), client.post("/v1/interpreter/sessions/nope/cancel"),
              client.post("/v1/interpreter/sessions/nope/messages", json={"content": "x"})):
        assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"


def test_session_cap_is_429(client):
    made = []
    try:
        while True:
            r = client.post("/v1/interpreter/sessions", json={})
            if r.status_code != 200:
                break
            made.append(r.json()["id"])
            assert len(made) <= 4
        assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_sessions"
        assert len(made) >= 1
    finally:
        for sid in made:
            client.delete(f"/v1/interpreter/sessions/{sid}")
    r = client.post("/v1/interpreter/sessions", json={})
    assert r.status_code == 200
    client.delete(f"/v1/interpreter/sessions/{r.json()['id']}")


LONG = "Write a long story about a dragon, at least 2000 words."  # runs for hundreds of tokens


def test_busy_session_is_409_and_cancel_stops_the_turn(server, client):
    sid = new_session(client)
    collected, started = [], threading.Event()

    def run():
        with httpx.Client(base_url=server.url, timeout=120) as c:
            with c.stream("POST", f"/v1/interpreter/sessions/{sid}/messages",
                          json={"content": LONG, "max_tokens": 1000}) as r:
                for name, data in iter_sse(r):
                    collected.append((name, json.loads(data)))
                    if name == "token":
                        started.set()

    t = threading.Thread(target=run)
    t.start()
    try:
        assert started.wait(60)
        r = client.post(f"/v1/interpreter/sessions/{sid}/messages", json={"content": "hi"})
        assert r.status_code == 409 and r.json()["error"]["code"] == "session_busy"
        assert client.get(f"/v1/interpreter/sessions/{sid}").json()["busy"] is True
        assert client.post(f"/v1/interpreter/sessions/{sid}/cancel").json()["cancelled"] is True
    finally:
        t.join(60)
    assert collected[-1][0] == "done" and collected[-1][1]["cancelled"] is True
    tokens = sum(1 for n, _ in collected if n == "token")
    assert tokens < 900
    wait_not_busy(client, sid)
    m = server.wait_idle()
    assert m["oci_kv_blocks_used"] == 0 and m["oci_num_requests_running"] == 0
    client.delete(f"/v1/interpreter/sessions/{sid}")


def test_client_leaving_mid_turn_cancels_it(server, client):
    sid = new_session(client)
    start = server.state.engine.stats().generation_tokens_total
    with httpx.Client(base_url=server.url, timeout=60) as c:
        with c.stream("POST", f"/v1/interpreter/sessions/{sid}/messages",
                      json={"content": LONG, "max_tokens": 1000}) as r:
            n = 0
            for line in r.iter_lines():
                n += line.startswith("event: token")
                if n >= 3:
                    break
    wait_not_busy(client, sid)
    m = server.wait_idle()
    assert m["oci_kv_blocks_used"] == 0 and m["oci_num_requests_running"] == 0
    produced = server.state.engine.stats().generation_tokens_total - start
    assert 3 <= produced < 1000, produced
    # the session still works, and the cut-short turn is in its transcript
    assert client.get(f"/v1/interpreter/sessions/{sid}").json()["messages"][0]["content"] == LONG
    client.delete(f"/v1/interpreter/sessions/{sid}")


def test_a_message_too_long_for_the_context_fails_in_band_and_the_session_goes_on(server, client):
    sid = new_session(client)
    events = send(client, sid, "word " * 2100, max_tokens=8)
    assert [n for n, _ in events] == ["round", "error"]
    assert events[-1][1]["code"] == "context_length_exceeded" and "2048" in events[-1][1]["message"]
    assert client.get(f"/v1/interpreter/sessions/{sid}").json()["messages"] == []
    # the failed message left no trace in the conversation: the next one is answered
    events = send(client, sid, "Say hi.", max_tokens=8)
    assert [n for n, _ in events][-1] == "done" and "error" not in [n for n, _ in events]
    assert [m["role"] for m in client.get(f"/v1/interpreter/sessions/{sid}").json()["messages"]][:2] == \
        ["user", "assistant"]
    client.delete(f"/v1/interpreter/sessions/{sid}")


def test_sandbox_metrics_move(server, client):
    m = server.metrics()
    assert m["oci_sandbox_executions_total"] >= 1
    assert m["oci_sandbox_execution_seconds_count"] == m["oci_sandbox_executions_total"]
    assert "oci_interpreter_sessions" in m


def _descendants(pid: int) -> set[int]:
    kids = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.add(k)
            todo.append(k)
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_graceful_shutdown_leaves_no_sandbox_processes(smollm2_gguf):
    s = LiveServer(str(smollm2_gguf), max_model_len=512, kv_cache_memory=0.05, sandbox_workers=1)
    try:
        r = httpx.post(s.url + "/v1/interpreter/sessions", json={})
        sid = r.json()["id"]
        # a live cell state in the session's own process, as a turn would leave it
        out = s.state.sessions.get(sid).interpreter.session.run("x = 41\nprint(x + 1)")
        assert out.stdout.strip() == "42"
        zygote = s.state.sandbox._zygote.proc.pid
        tree = {zygote} | _descendants(zygote)
        assert len(tree) >= 2, "the session should have its own process under the zygote"
        # a turn still streaming when the server is asked to stop
        sid2 = httpx.post(s.url + "/v1/interpreter/sessions", json={}).json()["id"]
        got_token = threading.Event()

        def stream_turn():
            try:
                with httpx.stream("POST", f"{s.url}/v1/interpreter/sessions/{sid2}/messages", timeout=60,
                                  json={"content": LONG, "max_tokens": 400}) as r:
                    for name, _ in iter_sse(r):
                        if name == "token":
                            got_token.set()
            except httpx.HTTPError:
                pass  # the server went away mid-stream: expected

        t = threading.Thread(target=stream_turn)
        t.start()
        assert got_token.wait(60)
    finally:
        began = time.monotonic()
        s.stop()
        stop_s = time.monotonic() - began
    t.join(30)
    assert stop_s < 20, f"shutdown took {stop_s:.1f} s"
    assert not s.thread.is_alive()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in tree) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in tree if _alive(p)]
