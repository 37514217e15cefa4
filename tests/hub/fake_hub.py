"""A Hub-API-compatible server on 127.0.0.1 for tests that use the real huggingface_hub client.

It answers the endpoints listed in ``shared/reference/hub-api.md`` (repo creation, README metadata
validation, preupload, ndjson commits and pull requests, the git-LFS batch API, model info, tree
listings, paths-info, refs, commits, resolve with the ETag / X-Repo-Commit headers, LFS files
redirected to a CDN on a second port) from a temp folder, in background threads of this process:
no subprocess, no network. That is every request transformers, sentence-transformers and
huggingface_hub make to load a repo by id (tests/hub/test_consumers_by_repo_id.py); `unanswered()`
lists any request that hit no route or a server error, so a test can prove none did.

Pointing the client at it: huggingface_hub reads HF_ENDPOINT (and HF_HUB_CACHE, HF_HUB_OFFLINE,
HF_HUB_DISABLE_XET...) into `huggingface_hub.constants` once, when it is first imported, and in a
test run something imports it long before a fixture can set the environment. So `use_fake_hub`
patches the constants the client reads at call time, the module-level `HfApi` instance behind
`huggingface_hub.model_info` & co., and transformers' shared `HfApi`, and also sets the environment
variables for subprocesses (`hub_environment`). Verified with huggingface_hub 2.4, transformers 5.24
and sentence-transformers 6.2.

Example:
    >>> from fake_hub import FakeHub
    >>> with FakeHub() as hub:  # doctest: +SKIP
    ...     hub.endpoint
    'http://127.0.0.1:54321'
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import tempfile
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from fake_hub_handlers import HandlersMixin
from fake_hub_reads import ReadsMixin
from fake_hub_store import Store, StoreError

logger = logging.getLogger(__name__)

FAKE_TOKEN = "hf_fake_test_token"  # any string works against the fake hub; never a real token

_TYPES = r"(?P<type>model|dataset|space)s"
_REPO = r"(?P<repo>[^/]+(?:/[^/]+)?)"
_PREFIX = r"/(?:(?P<prefix>dataset|space)s/)?"
ROUTES: list[tuple[tuple[str, ...], re.Pattern[str], str]] = [
    (("POST",), re.compile(r"/api/repos/create"), "create"),
    (("POST",), re.compile(r"/api/validate-yaml"), "validate_yaml"),
    (("GET",), re.compile(r"/api/whoami-v2"), "whoami"),
    (("POST",), re.compile(rf"/api/{_TYPES}/{_REPO}/preupload/(?P<rev>[^/]+)"), "preupload"),
    (("POST",), re.compile(rf"/api/{_TYPES}/{_REPO}/commit/(?P<rev>[^/]+)"), "commit"),
    (("POST",), re.compile(rf"/api/{_TYPES}/{_REPO}/discussions"), "discussion_create"),
    (("GET",), re.compile(rf"/api/{_TYPES}/{_REPO}/discussions/(?P<num>\d+)"), "discussion"),
    (("GET",), re.compile(rf"/api/{_TYPES}/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?"), "tree"),
    (("POST",), re.compile(rf"/api/{_TYPES}/{_REPO}/paths-info/(?P<rev>[^/]+)"), "paths_info"),
    (("GET",), re.compile(rf"/api/{_TYPES}/{_REPO}/refs"), "refs"),
    (("GET",), re.compile(rf"/api/{_TYPES}/{_REPO}/commits/(?P<rev>[^/]+)"), "commits"),
    (("GET",), re.compile(rf"/api/{_TYPES}/{_REPO}(?:/revision/(?P<rev>[^/]+))?"), "info"),
    (("POST",), re.compile(rf"{_PREFIX}{_REPO}\.git/info/lfs/objects/batch"), "lfs_batch"),
    (("PUT",), re.compile(r"/__lfs__/(?P<oid>[0-9a-f]{64})"), "lfs_put"),
    (("GET", "HEAD"), re.compile(rf"{_PREFIX}{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"), "resolve"),
    (("GET", "HEAD"), re.compile(r"/__lfs__/(?P<oid>[0-9a-f]{64})"), "cdn"),
]
# The CDN (a second port: another origin, as the real one is) serves LFS bytes and nothing else.
CDN_ROUTES = {"cdn"}


class FakeHub:
    """The server: start it, point the client at `endpoint`, inspect `requests`, stop it.

    Args:
        root: folder for its storage (a fresh temp folder when None).
        user: the namespace of repos created without an organization.
        tokens: the only tokens accepted; None accepts any token (writes still need one).
        lfs_threshold: files at least this big are answered "lfs" in preupload; None: all "regular".
    """

    def __init__(self, root: Path | None = None, *, user: str = "tester",
                 tokens: Iterable[str] | None = None, lfs_threshold: int | None = None):
        self._tmp = None if root is not None else tempfile.TemporaryDirectory(prefix="fake-hub-")
        self.store = Store(Path(root) if root is not None else Path(self._tmp.name))
        self.user = user
        self.tokens = None if tokens is None else set(tokens)
        self.lfs_threshold = lfs_threshold
        self.requests: list[dict[str, Any]] = []
        self._failures: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._cdn: ThreadingHTTPServer | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> FakeHub:
        handler = type("BoundHandler", (_Handler,), {"hub": self})
        self._server, self._cdn = (self._serve(handler, name) for name in ("fake-hub", "fake-hub-cdn"))
        logger.debug("fake hub listening on %s (CDN %s)", self.endpoint, self.cdn_endpoint)
        return self

    @staticmethod
    def _serve(handler: type[BaseHTTPRequestHandler], name: str) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)  # port 0: a free port
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True).start()
        return server

    def stop(self) -> None:
        for server in (self._server, self._cdn):
            if server is not None:
                server.shutdown()
                server.server_close()
        self._server = self._cdn = None
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "start() the fake hub first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def cdn_endpoint(self) -> str:
        """Where LFS files are served from: another origin, so the client sends no token there."""
        assert self._cdn is not None, "start() the fake hub first"
        host, port = self._cdn.server_address[:2]
        return f"http://{host}:{port}"

    def repo_url(self, repo_type: str, repo_id: str) -> str:
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        return f"{self.endpoint}/{prefix}{repo_id}"

    # -- test controls -----------------------------------------------------------------------
    def fail_next(self, route: str, *, status: int = 500, times: int = 1) -> None:
        """Answer the next `times` calls of `route` (e.g. "commit", "preupload") with `status`."""
        with self._lock:
            self._failures.setdefault(route, []).extend([status] * times)

    def take_failure(self, route: str) -> int | None:
        with self._lock:
            pending = self._failures.get(route)
            return pending.pop(0) if pending else None

    def calls(self, route: str) -> list[dict[str, Any]]:
        """The recorded requests of one route, oldest first."""
        return [r for r in self.requests if r["route"] == route]

    def unanswered(self) -> list[dict[str, Any]]:
        """The requests no route matched (the fake lacks an endpoint), that got a 5xx, or no answer at all.

        A 4xx is an answer: transformers probes optional files and expects EntryNotFound for them.
        Call it once the client is done: a request still being answered has no status yet.
        """
        return [r for r in list(self.requests)
                if r["route"] is None or r.get("status") is None or r["status"] >= 500]

    def token_ok(self, token: str) -> bool:
        return self.tokens is None or token in self.tokens


class _Handler(HandlersMixin, ReadsMixin, BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client expects; every answer has a length
    hub: FakeHub
    _record: dict[str, Any] | None = None

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and
        # the client's delayed ACK add 40 ms to every answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("fake hub: " + format, *args)

    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        body = self._read_body()  # always drained, so the kept-alive connection stays in sync
        split = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(split.query).items()}
        on_cdn = self.server is self.hub._cdn
        found = next(((route, match) for methods, pattern, route in ROUTES
                      if self.command in methods and (route in CDN_ROUTES) == on_cdn
                      and (match := pattern.fullmatch(split.path))), None)
        # Recorded before answering; `send` adds the status, so `unanswered()` sees what went wrong.
        self._record = {"route": found[0] if found else None, "method": self.command, "path": unquote(split.path),
                        "query": query, "authorized": "Authorization" in self.headers, "json": None}
        self.hub.requests.append(self._record)
        if found is None:
            self._error(404, f"no route for {self.command} {split.path}")
            return
        route, match = found
        params = {key: unquote(value) for key, value in match.groupdict().items() if value is not None}
        if self.headers.get("Content-Type", "").startswith("application/json") and body:
            try:
                self._record["json"] = json.loads(body)
            except ValueError:
                self._error(400, "the body is not valid JSON")
                return
        status = self.hub.take_failure(route)
        if status is not None:
            self._error(status, f"injected failure ({status}) on {route}")
            return
        try:
            getattr(self, f"route_{route}")(params, query, body)
        except StoreError as error:
            self._error(error.status, str(error), error.code, error.headers)
        except Exception as error:  # a bug of the fake: a 500 the test sees in `unanswered()`, not a dropped connection
            logger.exception("fake hub: %s %s failed", self.command, split.path)
            self._error(500, f"fake hub bug: {type(error).__name__}: {error}")

    # -- responses ---------------------------------------------------------------------------
    def send(self, status: int, body: bytes = b"", *, content_type: str = "application/json",
             headers: dict[str, str] | None = None, length: int | None = None) -> None:
        if self._record is not None:
            self._record["status"] = status
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self.send(status, json.dumps(payload).encode(), headers=headers)

    def _error(self, status: int, message: str, code: str | None = None,
               extra: dict[str, str] | None = None) -> None:
        headers = {"X-Error-Message": message, **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        self.send_json(status, {"error": message}, headers)


# Variables that would send a subprocess's hub traffic or caches elsewhere, or turn it offline:
# inherited from the developer's shell, they must not leak into a test that talks to the fake hub.
_FOREIGN_VARIABLES = ("HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_HUB_CACHE", "HUGGINGFACE_ASSETS_CACHE",
                      "TRANSFORMERS_CACHE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "SENTENCE_TRANSFORMERS_HOME",
                      "HF_HUB_ETAG_TIMEOUT", "HF_HUB_DISABLE_IMPLICIT_TOKEN", "HF_XET_CACHE", "HF_ASSETS_CACHE")


def hub_environment(hub: FakeHub, home: Path, *, token: str | None = FAKE_TOKEN) -> dict[str, str | None]:
    """The environment variables that point a process at `hub`, with every cache under `home`.

    A None value means "unset it". `token` goes into HF_TOKEN (None: an anonymous client).
    """
    environ: dict[str, str | None] = dict.fromkeys(_FOREIGN_VARIABLES)
    inherited = os.environ.get("NO_PROXY") or os.environ.get("no_proxy")
    no_proxy = ",".join(filter(None, [inherited, "127.0.0.1", "localhost"]))
    environ.update({
        "HF_ENDPOINT": hub.endpoint,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_MODULES_CACHE": str(home / "modules"),  # where transformers copies remote code to import it
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_XET": "1",  # HTTP downloads: the Xet protocol is not faked
        "HF_HUB_DISABLE_TELEMETRY": "1",
        # httpx honours HTTP(S)_PROXY from the environment: the fake hub must never go through one.
        "NO_PROXY": no_proxy,
        "no_proxy": no_proxy,
        "HF_TOKEN": token,
    })
    return environ


def use_fake_hub(monkeypatch: Any, hub: FakeHub, home: Path, *, token: str | None = FAKE_TOKEN) -> None:
    """Point huggingface_hub (and transformers) at `hub`, with caches under `home`, for one test.

    `monkeypatch` undoes every change after the test. `token` goes into HF_TOKEN (None: no token).
    """
    import huggingface_hub.hf_api  # the submodule itself: `huggingface_hub` loads it lazily
    from huggingface_hub import constants

    cache = home / "hub"
    settings = {
        "ENDPOINT": hub.endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(cache),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_XET": True,  # regular uploads / HTTP downloads: the Xet protocol is not faked
        "HF_HUB_DISABLE_TELEMETRY": True,
    }
    for name, value in settings.items():
        monkeypatch.setattr(constants, name, value, raising=False)
    monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", hub.endpoint)
    for name, value in hub_environment(hub, home, token=token).items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    try:
        import transformers.utils.hub as transformers_hub
    except ImportError:
        return
    # transformers keeps one lazily built HfApi; a stale one would still talk to the old endpoint.
    monkeypatch.setattr(transformers_hub, "_hf_api", None, raising=False)
