"""The FastAPI application: OpenAI-compatible API, interpreter sessions, metrics, the web page."""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import time
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles

from oci_engine.server import interpreter_api, openai_api
from oci_engine.server.errors import error_body, install_handlers
from oci_engine.server.prometheus import ServerMetrics

STATIC = os.path.join(os.path.dirname(__file__), "static")
OPEN_PATHS = ("/", "/health", "/static/")


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

    @app.middleware("http")
    async def auth(request: Request, call_next):
        path = request.url.path
        if state.api_key and not (path == "/" or path == "/health" or path.startswith("/static/")):
            given = request.headers.get("authorization", "")
            expected = f"Bearer {state.api_key}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                return JSONResponse(error_body("missing or wrong API key; send 'Authorization: Bearer <key>'",
                                               "invalid_request_error", code="invalid_api_key"), status_code=401)
        return await call_next(request)

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
