"""Bad requests get OpenAI-shaped 4xx errors and leave the server healthy; clients that leave free
their KV blocks."""
from __future__ import annotations

import time

import httpx
import pytest

from live_server import LiveServer

MSG = [{"role": "user", "content": "Hello"}]


def assert_error(r, status: int, code=None, param=None):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"] and isinstance(err["message"], str)
    assert err["type"] == ("invalid_request_error" if status < 500 else "server_error")
    if code is not None:
        assert err["code"] == code
    if param is not None:
        assert err["param"] == param
    return err


def assert_healthy(server, client):
    r = client.post("/v1/chat/completions", json={"messages": MSG, "max_tokens": 4, "temperature": 0})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
    m = server.wait_idle()
    assert m["oci_kv_blocks_used"] == 0 and m["oci_num_requests_running"] == 0


BAD = [
    ("/v1/chat/completions", b'{"messages": [', None),  # malformed JSON
    ("/v1/chat/completions", b"[1, 2]", None),  # JSON, not an object
    ("/v1/chat/completions", {}, "messages"),
    ("/v1/chat/completions", {"messages": []}, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "hi"}]}, None),
    ("/v1/chat/completions", {"messages": MSG, "temperature": 3}, "temperature"),
    ("/v1/chat/completions", {"messages": MSG, "top_p": 0}, "top_p"),
    ("/v1/chat/completions", {"messages": MSG, "max_tokens": 0}, "max_tokens"),
    ("/v1/chat/completions", {"messages": MSG, "n": 0}, "n"),
    ("/v1/chat/completions", {"messages": MSG, "top_logprobs": 50, "logprobs": True}, "top_logprobs"),
    ("/v1/chat/completions", {"messages": MSG, "stop": [""]}, "stop"),
    ("/v1/completions", {}, "prompt"),
    ("/v1/completions", {"prompt": []}, "prompt"),
    ("/v1/completions", {"prompt": [1, 2, 99999999]}, None),
    ("/v1/completions", {"prompt": "x", "logprobs": 99}, "logprobs"),
    ("/v1/interpreter/sessions", {"max_rounds": 0}, "max_rounds"),
]


@pytest.mark.parametrize("path,body,param", BAD, ids=[f"{p.split('/')[-1]}-{i}" for i, (p, _, _) in enumerate(BAD)])
def test_bad_request_is_400_in_openai_shape(server, client, path, body, param):
    if isinstance(body, bytes):
        r = client.post(path, content=body, headers={"content-type": "application/json"})
    else:
        r = client.post(path, json=body)
    assert_error(r, 400, param=param)


def test_server_is_healthy_after_the_bad_requests(server, client):
    assert_healthy(server, client)


def test_unknown_model_is_404(server, client):
    r = client.post("/v1/chat/completions", json={"model": "gpt-17", "messages": MSG})
    err = assert_error(r, 404, code="model_not_found", param="model")
    assert "smollm2-135m" in err["message"]
    assert_error(client.post("/v1/completions", json={"model": "nope", "prompt": "x"}), 404, code="model_not_found")
    assert_error(client.get("/v1/no-such-endpoint"), 404)


def test_prompt_longer_than_the_context_is_400(server, client):
    long = "word " * 2100  # > 2048 tokens
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": long}]})
    assert_error(r, 400, code="context_length_exceeded")
    r = client.post("/v1/completions", json={"prompt": long, "stream": True})
    assert_error(r, 400, code="context_length_exceeded")
    r = client.post("/v1/chat/completions", json={"messages": MSG, "max_tokens": 5000})
    err = assert_error(r, 400, code="context_length_exceeded", param="max_tokens")
    assert "at most" in err["message"]
    assert_healthy(server, client)


def generation_tokens(server) -> int:
    return server.state.engine.stats().generation_tokens_total


LONG = {"messages": [{"role": "user", "content": "Count from 1 to 1000, one number per line."}],
        "max_tokens": 1500, "ignore_eos": True, "temperature": 0}


def test_streaming_client_that_disconnects_frees_its_blocks(server):
    start = generation_tokens(server)
    with httpx.Client(base_url=server.url, timeout=60) as c:
        with c.stream("POST", "/v1/chat/completions", json={**LONG, "stream": True}) as r:
            seen = 0
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    seen += 1
                if seen >= 5:
                    break
        # leaving both blocks closes the connection mid-stream
    m = server.wait_idle(timeout=20)
    assert m["oci_kv_blocks_used"] == 0 and m["oci_num_requests_running"] == 0
    produced = generation_tokens(server) - start
    assert 5 <= produced < 1500, produced
    time.sleep(1.0)
    assert generation_tokens(server) - start == produced, "the request kept generating after the client left"


def test_non_streaming_client_that_disconnects_frees_its_blocks(server):
    start = generation_tokens(server)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/chat/completions", json=LONG, timeout=httpx.Timeout(60, read=1.5))
    m = server.wait_idle(timeout=20)
    assert m["oci_kv_blocks_used"] == 0 and m["oci_num_requests_running"] == 0
    produced = generation_tokens(server) - start
    assert 1 <= produced < 1500, produced


@pytest.fixture(scope="module")
def keyed_server(smollm2_gguf):
    s = LiveServer(str(smollm2_gguf), max_model_len=512, kv_cache_memory=0.05, api_key="sekrit",
                   served_model_name="smollm2-135m", sandbox_workers=1)
    yield s
    s.stop()


def test_api_key_is_required_on_the_api_only(keyed_server):
    url = keyed_server.url
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "sekrit"}):
        r = httpx.get(url + "/v1/models", headers=headers)
        assert_error(r, 401, code="invalid_api_key")
        r = httpx.post(url + "/v1/chat/completions", headers=headers, json={"messages": MSG, "max_tokens": 2})
        assert_error(r, 401)
        assert_error(httpx.post(url + "/v1/interpreter/sessions", headers=headers, json={}), 401)
    assert httpx.get(url + "/health").status_code == 200
    assert httpx.get(url + "/").status_code == 200
    good = {"Authorization": "Bearer sekrit"}
    assert httpx.get(url + "/v1/models", headers=good).json()["data"][0]["id"] == "smollm2-135m"
    r = httpx.post(url + "/v1/chat/completions", headers=good, json={"messages": MSG, "max_tokens": 3}, timeout=60)
    assert r.status_code == 200
    m = keyed_server.wait_idle(headers=good)
    assert m["oci_kv_blocks_used"] == 0


def test_openai_client_sees_typed_errors(server):
    openai = pytest.importorskip("openai")
    oc = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        oc.chat.completions.create(model="gpt-17", messages=MSG)
    with pytest.raises(openai.BadRequestError) as e:
        oc.chat.completions.create(model="smollm2-135m", messages=MSG, temperature=5)
    assert e.value.status_code == 400
