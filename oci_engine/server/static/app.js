// The interpreter page: one session per tab, replies streamed over SSE (fetch + ReadableStream, since
// EventSource cannot POST). Rendering is plain DOM; code is highlighted by highlight.js.
(function () {
  const $ = (id) => document.getElementById(id);
  const { highlightPython, escapeHtml } = window.ociHighlight;
  const state = { sessionId: null, controller: null, apiKey: localStorage.getItem("oci-api-key") || "" };

  function headers(extra) {
    const h = Object.assign({ "Content-Type": "application/json" }, extra || {});
    if (state.apiKey) h["Authorization"] = "Bearer " + state.apiKey;
    return h;
  }

  function setStatus(text) { $("status").textContent = text; }

  function scrollDown() { const t = $("transcript"); t.scrollTop = t.scrollHeight; }

  function addElement(cls, html) {
    const div = document.createElement("div");
    div.className = cls;
    if (html !== undefined) div.innerHTML = html;
    $("transcript").appendChild(div);
    scrollDown();
    return div;
  }

  // Markdown-lite: fenced blocks become highlighted <pre>, the rest stays text. An unterminated fence
  // (still streaming) renders as code too, so the cell grows in place.
  function renderReply(text) {
    const parts = text.split(/```/);
    let html = "";
    parts.forEach((part, i) => {
      if (i % 2 === 0) { html += '<span class="text">' + escapeHtml(part) + "</span>"; return; }
      const nl = part.indexOf("\n");
      const lang = nl >= 0 ? part.slice(0, nl).trim() : "";
      const body = nl >= 0 ? part.slice(nl + 1) : "";
      const code = /^(py|python|python3)?$/i.test(lang) ? highlightPython(body) : escapeHtml(body);
      html += '<pre class="code" data-lang="' + escapeHtml(lang || "text") + '">' + code + "</pre>";
    });
    return html;
  }

  function renderExecution(ev) {
    const failed = ev.error || ev.timed_out;
    const box = addElement("result" + (failed ? " failed" : ""));
    box.dataset.round = ev.round;
    let html = '<div class="label muted">execution result' +
      (ev.duration_s !== undefined ? " · " + (ev.duration_s * 1000).toFixed(1) + " ms" : "") + "</div>";
    if (ev.stdout) html += '<pre class="stdout">' + escapeHtml(ev.stdout) + "</pre>";
    if (ev.stderr) html += '<pre class="stderr">' + escapeHtml(ev.stderr) + "</pre>";
    if (ev.error) html += '<pre class="error">' + escapeHtml(ev.error) + "</pre>";
    if (ev.timed_out) html += '<pre class="error">Execution timed out.</pre>';
    if (!ev.stdout && !ev.stderr && !ev.error && !ev.timed_out && !(ev.images || []).length)
      html += '<pre class="muted">(no output)</pre>';
    box.innerHTML = html;
    (ev.images || []).forEach((b64) => {
      const img = document.createElement("img");
      img.alt = "figure";
      img.src = "data:image/png;base64," + b64;
      box.appendChild(img);
    });
    scrollDown();
  }

  async function createSession() {
    let r = await fetch("/v1/interpreter/sessions", { method: "POST", headers: headers(), body: "{}" });
    if (r.status === 401) {
      // The server was started with --api-key: ask once, remember it in this browser.
      const key = window.prompt("This server needs an API key:");
      if (key) {
        state.apiKey = key.trim();
        localStorage.setItem("oci-api-key", state.apiKey);
        r = await fetch("/v1/interpreter/sessions", { method: "POST", headers: headers(), body: "{}" });
      }
    }
    if (!r.ok) throw new Error("could not create a session: HTTP " + r.status);
    state.sessionId = (await r.json()).id;
    $("session-id").textContent = "session " + state.sessionId;
    $("transcript").innerHTML = "";
    setStatus("session " + state.sessionId + " ready");
  }

  async function newSession() {
    if (state.controller) state.controller.abort();
    if (state.sessionId) {
      fetch("/v1/interpreter/sessions/" + state.sessionId, { method: "DELETE", headers: headers() }).catch(() => {});
    }
    await createSession();
  }

  function busy(on) {
    $("send").disabled = on;
    $("stop").disabled = !on;
  }

  async function send(text) {
    if (!state.sessionId) await createSession();
    addElement("msg user", escapeHtml(text));
    busy(true);
    setStatus("generating…");
    state.controller = new AbortController();
    let reply = null, replyText = "";
    try {
      const r = await fetch("/v1/interpreter/sessions/" + state.sessionId + "/messages", {
        method: "POST", headers: headers(), signal: state.controller.signal,
        body: JSON.stringify({ content: text, max_rounds: parseInt($("max-rounds").value, 10) || 3 }),
      });
      if (!r.ok) {
        const body = await r.json().catch(() => ({}));
        throw new Error((body.error && body.error.message) || "HTTP " + r.status);
      }
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let sep;
        while ((sep = buffer.indexOf("\n\n")) >= 0) {
          const raw = buffer.slice(0, sep);
          buffer = buffer.slice(sep + 2);
          let event = "message", data = "";
          raw.split("\n").forEach((line) => {
            if (line.startsWith("event:")) event = line.slice(6).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trim();
          });
          if (!data) continue;
          const ev = JSON.parse(data);
          if (event === "round") {
            addElement("round", "round " + ev.round);
            reply = addElement("msg assistant");
            replyText = "";
          } else if (event === "token") {
            if (!reply) reply = addElement("msg assistant");
            replyText += ev.text;
            reply.innerHTML = renderReply(replyText);
            scrollDown();
          } else if (event === "code") {
            setStatus("running code…");
          } else if (event === "execution") {
            renderExecution(ev);
            setStatus("generating…");
          } else if (event === "error") {
            addElement("result failed", '<pre class="error">' + escapeHtml(ev.message) + "</pre>");
            setStatus("error");
          } else if (event === "done") {
            setStatus("done · " + ev.rounds + " round(s)" +
              (ev.cached_tokens !== undefined ? " · " + ev.cached_tokens + " cached prompt tokens" : ""));
          }
        }
      }
    } catch (e) {
      if (e.name === "AbortError") setStatus("stopped");
      else { addElement("result failed", '<pre class="error">' + escapeHtml(String(e.message || e)) + "</pre>"); setStatus("error"); }
    } finally {
      state.controller = null;
      busy(false);
    }
  }

  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("prompt").value.trim();
    if (!text || state.controller) return;
    $("prompt").value = "";
    send(text);
  });
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("composer").requestSubmit(); }
  });
  $("stop").addEventListener("click", () => {
    if (!state.controller) return;
    // Ask the server to stop as well: dropping the connection alone relies on a disconnect that a
    // proxy in between may hide.
    fetch("/v1/interpreter/sessions/" + state.sessionId + "/cancel", { method: "POST", headers: headers() })
      .catch(() => {});
    state.controller.abort();
  });
  $("new-session").addEventListener("click", () => { newSession().catch((e) => setStatus(String(e))); });

  // the session first: on a server with --api-key it asks for the key the model list needs too
  createSession().catch((e) => setStatus(String(e.message || e))).then(() =>
    fetch("/v1/models", { headers: headers() }).then((r) => r.json()).then((m) => {
      if (m.data && m.data.length) $("model-name").textContent = m.data[0].id;
    })).catch(() => {});
})();
