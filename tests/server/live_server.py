"""A live `oci-engine serve` (uvicorn in a background thread) and readers of what it sends (SSE
streams, Prometheus metrics). Test modules import these from here, not from conftest.py: `import
conftest` gets whichever conftest.py pytest loaded last, another directory's when several test
directories run in one call."""
from __future__ import annotations

import argparse
import json
import socket
import threading
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn serving our app on 127.0.0.1:<free port>, stopped the way Ctrl-C stops it."""

    def __init__(self, model: str, **flags):
        import uvicorn

        from oci_engine.commands import serve
        from oci_engine.server.app import create_app

        p = argparse.ArgumentParser()
        serve.add_arguments(p)
        argv = ["--model", model]
        for k, v in flags.items():
            argv += [f"--{k.replace('_', '-')}", str(v)]
        args = p.parse_args(argv)
        self.state = serve.build_state(args)
        self.app = create_app(self.state)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                timeout_graceful_shutdown=10)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)

    def metrics(self, headers=None) -> dict[str, float]:
        return parse_metrics(httpx.get(self.url + "/metrics", headers=headers, timeout=30).text)

    def wait_idle(self, headers=None, timeout: float = 30.0) -> dict[str, float]:
        """Metrics once no request runs and no KV block is held (or the last reading at the deadline)."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.metrics(headers)
            if (m["oci_num_requests_running"] == 0 and m["oci_num_requests_waiting"] == 0
                    and m["oci_kv_blocks_used"] == 0) or time.monotonic() > deadline:
                return m
            time.sleep(0.1)


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition -> {sample name with labels: value}; raises on a malformed line."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            assert line == "" or line.startswith(("# HELP ", "# TYPE ")), line
            continue
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out


def iter_sse(response):
    """(event name, data) of each server-sent event of a streamed httpx response, as it arrives."""
    name, data = None, []
    for line in response.iter_lines():
        if line == "":
            if data:
                yield name, "\n".join(data)
            name, data = None, []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
    if data:
        yield name, "\n".join(data)


def sse_events(response) -> list[tuple[str | None, str]]:
    return list(iter_sse(response))


def sse_json(response) -> list:
    """The JSON payloads of an OpenAI stream, checking it ends with exactly one [DONE]."""
    events = sse_events(response)
    assert events and events[-1][1] == "[DONE]", events[-3:]
    assert [d for _, d in events].count("[DONE]") == 1
    return [json.loads(d) for _, d in events[:-1]]
