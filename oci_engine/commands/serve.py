"""`oci-engine serve`: the OpenAI-compatible API, interpreter sessions and the web page."""
from __future__ import annotations

import logging
import sys

from oci_engine.commands.engine_flags import add_engine_arguments, engine_kwargs


def add_arguments(p) -> None:
    add_engine_arguments(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1/*")
    p.add_argument("--served-model-name", default=None, help="model id reported by /v1/models")
    p.add_argument("--max-sessions", type=int, default=64, help="live interpreter sessions at most")
    p.add_argument("--session-idle-timeout", type=float, default=1800.0, help="seconds before an idle session ends")
    p.add_argument("--cell-timeout", type=float, default=10.0, help="seconds per code cell")
    p.add_argument("--sandbox-workers", type=int, default=4, help="code cells run in parallel at most")
    p.add_argument("--log-level", default="info")


def build_state(args):
    import os

    from oci_engine.async_engine import AsyncLLMEngine
    from oci_engine.engine_args import EngineArgs, create_engine
    from oci_engine.sandbox import Sandbox
    from oci_engine.server.app import ServerState
    from oci_engine.server.sessions import SessionManager

    kw = engine_kwargs(args)
    engine = create_engine(EngineArgs(model=args.model, **kw))
    async_engine = AsyncLLMEngine(engine)
    sandbox = Sandbox(workers=args.sandbox_workers, max_sessions=args.max_sessions)
    sessions = SessionManager(async_engine, engine.tokenizer, sandbox, max_sessions=args.max_sessions,
                              idle_timeout=args.session_idle_timeout, cell_timeout=args.cell_timeout)
    name = args.served_model_name or (args.model if not os.path.exists(str(args.model))
                                      else os.path.basename(str(args.model).rstrip("/")))
    return ServerState(engine=async_engine, tokenizer=engine.tokenizer, model_name=str(name),
                       model_path=str(args.model), max_model_len=engine.max_seq_len, sessions=sessions,
                       sandbox=sandbox, api_key=args.api_key)


def run(args) -> int:
    import uvicorn

    from oci_engine.server.app import create_app

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    print(f"loading {args.model} …", file=sys.stderr)
    state = build_state(args)
    app = create_app(state)
    print(f"oci-engine serving {state.model_name} on http://{args.host}:{args.port}  (web page at /)",
          file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=10)
    return 0
