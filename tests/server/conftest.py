"""A live `oci-engine serve` (uvicorn in a background thread, real default model) per test module."""
from __future__ import annotations

import httpx
import pytest
from live_server import LiveServer


@pytest.fixture(scope="module")
def server(smollm2_gguf):
    s = LiveServer(str(smollm2_gguf), max_model_len=2048, served_model_name="smollm2-135m", max_sessions=4,
                   cell_timeout=10, sandbox_workers=2)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c
