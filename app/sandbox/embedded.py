"""Serve a sandbox on loopback from inside a running event loop.

The task manager's embedded default calls the sandboxes over real HTTP, through
the same client code as production; this runs one as a second uvicorn server in
the caller's loop, on a port the OS picks unless told otherwise.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import uvicorn

from app.sandbox import Stage, create_sandbox_app


class _EmbeddedServer(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The host process owns SIGINT/SIGTERM; this server stops when its context exits.
        yield


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


@asynccontextmanager
async def serve_sandbox(stage: Stage, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve one stage's sandbox while the context is open; yields its base URL.

    Binding and the app's start-up happen here, so their errors are raised to the
    caller (uvicorn would call ``sys.exit`` instead). The transcribing model goes
    on loading after this yields: the service answers 503 until it is ready, and
    its ``GET /health`` says ``"models": {"english": "loaded"}`` once it is.
    """
    app = create_sandbox_app(stage)
    sock = _bind(host, port)
    try:
        async with app.router.lifespan_context(app):
            # log_config=None keeps uvicorn from reconfiguring the host's logging.
            config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False)
            server = _EmbeddedServer(config)
            serving = asyncio.create_task(server.serve(sockets=[sock]))
            while not server.started:
                if serving.done():
                    await serving
                    raise RuntimeError(f"The {stage} sandbox stopped during start-up.")
                await asyncio.sleep(0.01)
            bound = sock.getsockname()[1]
            shown = f"[{host}]" if ":" in host else host
            try:
                yield f"http://{shown}:{bound}"
            finally:
                server.should_exit = True
                await serving
    finally:
        sock.close()
