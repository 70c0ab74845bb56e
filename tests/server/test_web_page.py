"""The web page end to end in headless Chromium (Debian's `chromium`, driven by playwright)."""
from __future__ import annotations

import os
import re

import httpx
import pytest

from model_replies import stdout_of

CHROMIUM = "/usr/bin/chromium"
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"no browser at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    ctx = browser.new_context()
    # offline: any request that leaves our server fails the test
    foreign = []
    ctx.route(re.compile(r"^(?!" + re.escape(server.url) + ").*"), lambda route: (foreign.append(route.request.url),
                                                                                 route.abort()))
    pg = ctx.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(server.url + "/")
    sync_api.expect(pg.locator("#status")).to_contain_text("ready", timeout=30_000)
    yield pg
    ctx.close()
    assert not errors, errors
    assert not foreign, foreign


def send(page, text, rounds):
    page.fill("#max-rounds", str(rounds))
    page.fill("#prompt", text)
    page.keyboard.press("Enter")


def session_id(page) -> str:
    return re.fullmatch(r"session (\w+)", page.inner_text("#session-id")).group(1)


def test_page_streams_a_reply_with_code_and_its_execution(page, server):
    sync_api.expect(page.locator("#model-name")).to_have_text("smollm2-135m")
    # count DOM updates of replies to see the text arrive in pieces, not at once
    page.evaluate("""() => { window.updates = 0; new MutationObserver(() => window.updates++)
        .observe(document.getElementById('transcript'), {childList: true, subtree: true, characterData: true}); }""")
    send(page, "Write Python code that prints the squares of 1 to 5.", rounds=2)
    sync_api.expect(page.locator("#stop")).to_be_enabled()
    sync_api.expect(page.locator("#status")).to_contain_text("done", timeout=90_000)
    assert page.evaluate("window.updates") > 20
    assert page.locator(".msg.user").inner_text() == "Write Python code that prints the squares of 1 to 5."
    assert page.locator(".round").all_inner_texts() == ["round 1", "round 2"]
    code = page.locator(".msg.assistant pre.code").first
    assert "def " in code.inner_text()
    assert code.locator("span.kw").count() >= 2 and code.locator("span.bi").count() >= 1  # highlighted
    result = page.locator(".result").first
    shown = result.locator("pre.stdout").inner_text().strip()
    assert shown and shown == stdout_of(code.inner_text()).strip()
    assert "failed" not in (result.get_attribute("class") or "")
    assert page.locator("#send").is_enabled() and page.locator("#stop").is_disabled()
    assert "cached prompt tokens" in page.inner_text("#status")


def test_page_shows_a_plot_inline(page):
    send(page, "Use matplotlib: plt.plot([1, 2, 3], [1, 4, 9]). Write only the code.", rounds=1)
    img = page.locator(".result img")
    sync_api.expect(img).to_have_count(1, timeout=90_000)
    assert img.get_attribute("src").startswith("data:image/png;base64,")
    assert page.evaluate("() => document.querySelector('.result img').naturalWidth") > 100


def test_stop_button_stops_the_reply_and_new_session_clears(page, server):
    send(page, "Write a long story about a dragon, at least 2000 words.", rounds=1)
    reply = page.locator(".msg.assistant").last
    sync_api.expect(reply).to_contain_text(re.compile(r"\w+ \w+ \w+"), timeout=60_000)
    page.click("#stop")
    sync_api.expect(page.locator("#status")).to_have_text("stopped")
    frozen = reply.inner_text()
    page.wait_for_timeout(1000)
    assert reply.inner_text() == frozen, "text kept arriving after Stop"
    assert page.locator("#send").is_enabled()
    m = server.wait_idle()
    assert m["oci_kv_blocks_used"] == 0 and m["oci_num_requests_running"] == 0

    old = session_id(page)
    page.click("#new-session")
    sync_api.expect(page.locator("#session-id")).not_to_contain_text(old)
    sync_api.expect(page.locator("#transcript > *")).to_have_count(0)
    new = session_id(page)
    assert new != old
    assert httpx.get(f"{server.url}/v1/interpreter/sessions/{old}").status_code == 404
    assert httpx.get(f"{server.url}/v1/interpreter/sessions/{new}").json()["messages"] == []


def test_page_asks_for_the_api_key_once(browser, smollm2_gguf):
    from live_server import LiveServer

    s = LiveServer(str(smollm2_gguf), max_model_len=512, kv_cache_memory=0.05, api_key="sekrit",
                   served_model_name="smollm2-135m", sandbox_workers=1)
    ctx = browser.new_context()
    try:
        pg = ctx.new_page()
        asked = []
        pg.on("dialog", lambda d: (asked.append(d.message), d.accept("sekrit")))
        pg.goto(s.url + "/")
        sync_api.expect(pg.locator("#status")).to_contain_text("ready", timeout=30_000)
        sync_api.expect(pg.locator("#model-name")).to_have_text("smollm2-135m")
        assert len(asked) == 1 and "API key" in asked[0]
        pg.reload()  # remembered in this browser
        sync_api.expect(pg.locator("#status")).to_contain_text("ready", timeout=30_000)
        assert len(asked) == 1
    finally:
        ctx.close()
        s.stop()
