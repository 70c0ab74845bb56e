"""The FastAPI application: OpenAI-compatible API, interpreter sessions, metrics, the web page."""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import time
from dataclasses import dataclass, field

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles

from oci_engine.server import interpreter_api, openai_api
from oci_engine.server.errors import error_body, install_handlers
from oci_engine.server.prometheus import ServerMetrics

STATIC = os.path.join(os.path.dirname(__file__), "static")


@dataclass
class ServerState:
    engine: object  # AsyncLLMEngine
    tokenizer: object
    model_name: str
    model_path: str
    max_model_len: int
    sessions: object  # SessionManager
    sandbox: object
    api_key: str | None = None
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    started: int = field(default_factory=lambda: int(time.time()))


class BearerAuth:
    """Plain ASGI middleware, not @app.middleware("http"): Starlette's BaseHTTPMiddleware wraps
    `receive`, which hides a client's disconnect from the endpoints that cancel on it."""

    def __init__(self, app, api_key: str):
        self.app, self.expected = app, f"Bearer {api_key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not _open_path(scope["path"]):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                body = error_body("missing or wrong API key; send 'Authorization: Bearer <key>'",
                                  "invalid_request_error", code="invalid_api_key")
                await JSONResponse(body, status_code=401)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _open_path(path: str) -> bool:
    return path in ("/", "/health") or path.startswith("/static/")


def create_app(state: ServerState) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        reaper = asyncio.create_task(_reap_idle(state))
        try:
            yield
        finally:
            # Graceful shutdown: stop turns, free KV blocks, end sandbox sessions, stop the engine loop.
            reaper.cancel()
            await asyncio.to_thread(state.sessions.close_all)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(state.sandbox.close)
            shutdown = getattr(state.engine, "shutdown", None)
            if shutdown is not None:
                res = shutdown()
                if asyncio.iscoroutine(res):
                    await res

    app = FastAPI(title="oci-engine", version="0.1.0", lifespan=lifespan)
    app.state.oci = state
    install_handlers(app)

    if state.api_key:
        app.add_middleware(BearerAuth, api_key=state.api_key)
    app.include_router(openai_api.router)
    app.include_router(interpreter_api.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(os.path.join(STATIC, "index.html"))

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": state.model_name}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics():
        gauges = state.engine.stats().as_gauges()
        gauges["oci_interpreter_sessions"] = len(state.sessions.sessions)
        return PlainTextResponse(state.metrics.render(gauges), media_type="text/plain; version=0.0.4")

    return app


async def _reap_idle(state: ServerState) -> None:
    while True:
        await asyncio.sleep(60)
        await asyncio.to_thread(state.sessions.expire_idle)
