"""Run the app with uvicorn: in the foreground (the ``serve`` command) or on a background thread."""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path
from types import TracebackType

from hubcompress.errors import ServingError
from hubcompress.serving.settings import DEFAULT_HOST, DEFAULT_PORT, ServerSettings

logger = logging.getLogger(__name__)


def serve(
    source: str | Path,
    settings: ServerSettings | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    log_level: str = "info",
) -> None:
    """Load ``source`` (an output folder or hub repo id) and serve it until interrupted.

    Example:
        >>> from hubcompress.serving import ServerSettings, serve
        >>> serve("out/demo", ServerSettings(int8=True), port=8080)  # doctest: +SKIP
    """
    import uvicorn

    from hubcompress.serving.app import create_app
    from hubcompress.serving.runtime import load_served_model

    model = load_served_model(source, settings)
    if host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("binding %s: the server has no authentication; anyone who can reach this port can use it", host)
    logger.info("serving %s on http://%s:%d (v2 API under /v2, simple API at /predict)", model.name, host, port)
    uvicorn.run(create_app(model), host=host, port=port, log_level=log_level, access_log=False)


class BackgroundServer:
    """Serve an app with uvicorn on a background thread, on a free loopback port; a context manager.

    Meant for tests, notebooks and benchmarks; the port is bound before the thread starts, so
    ``url`` is valid at once and the server is ready when ``__enter__`` returns.

    Example:
        >>> import httpx
        >>> from fastapi import FastAPI
        >>> app = FastAPI()
        >>> @app.get("/ping")
        ... async def ping():
        ...     return {"pong": True}
        >>> with BackgroundServer(app) as server:
        ...     httpx.get(f"{server.url}/ping").json()
        {'pong': True}
    """

    def __init__(self, app: object, *, host: str = DEFAULT_HOST, port: int = 0, startup_timeout_s: float = 30.0) -> None:
        import uvicorn

        self._socket = socket.create_server((host, port))
        self.host, self.port = self._socket.getsockname()[:2]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        name="hubcompress-server", daemon=True)
        self._startup_timeout_s = startup_timeout_s

    @property
    def url(self) -> str:
        """``http://host:port`` of the server."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> BackgroundServer:
        """Start the thread and wait until uvicorn has run the app's startup."""
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ServingError(f"the server on {self.url} did not start within {self._startup_timeout_s:.0f} s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Ask uvicorn to shut down (the app's shutdown runs) and wait for the thread."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self._socket.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
