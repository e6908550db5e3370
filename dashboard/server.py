"""The ASGI app ``driftwatch dashboard`` serves: Streamlit's ``App`` for ``app.py`` behind one
middleware that hides what Streamlit 1.67 has no setting for.

``streamlit run dashboard/server.py`` finds ``app`` below and serves it with uvicorn, with
the same ``--server.*``/``--client.*`` options as ``streamlit run dashboard/app.py``.
:class:`HideInternals`:

* answers 404 to ``/_stcore/metrics`` (sessions, per-query cache statistics; Streamlit
  registers the route unconditionally and has no login in front of it);
* blanks the server's script path and the Streamlit/Python versions and OS in the
  ``new_session`` message every websocket session gets before any login.

Its ``lifespan`` imports what the pages need (:data:`PRELOAD`) after Streamlit's runtime has
started and before the server accepts a connection, so the first page view does not wait
for pandas, Altair and Arrow to load.

What it cannot hide: the Streamlit frontend's static files (their contents identify the
Streamlit release), ``/_stcore/health`` and ``/_stcore/host-config`` (the frontend needs
them; they carry no data). Tracebacks are kept off the wire by
``--client.showErrorDetails=none`` (:mod:`dashboard.launch`).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from starlette.middleware import Middleware
from streamlit.starlette import App

log = logging.getLogger("dashboard.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: HTTP paths (after the base URL) that answer 404
HIDDEN_PATHS = ("/_stcore/metrics",)


def scrub_new_session(data: bytes) -> bytes:
    """``data`` (a serialized ForwardMsg) with the script path and the environment blanked
    if it is a ``new_session`` message; any other message is returned unchanged."""
    from google.protobuf.message import DecodeError
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    msg = ForwardMsg()
    try:
        msg.ParseFromString(data)
    except DecodeError:  # not a ForwardMsg: not ours to judge, pass it on
        return data
    if msg.WhichOneof("type") != "new_session":
        return data
    ns = msg.new_session
    ns.main_script_path = ""
    env = ns.initialize.environment_info
    env.streamlit_version = ""
    env.python_version = ""
    env.server_os = ""
    return msg.SerializeToString()


class HideInternals:
    """ASGI middleware: 404 for :data:`HIDDEN_PATHS`, scrubbed ``new_session`` messages."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and str(scope.get("path", "")).rstrip("/").endswith(HIDDEN_PATHS):
            await send(
                {
                    "type": "http.response.start",
                    "status": 404,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                }
            )
            await send({"type": "http.response.body", "body": b"Not Found"})
            return
        if scope["type"] == "websocket":

            async def scrubbing_send(message: Message) -> None:
                if message.get("type") == "websocket.send" and message.get("bytes"):
                    message = {**message, "bytes": scrub_new_session(message["bytes"])}
                await send(message)

            await self.app(scope, receive, scrubbing_send)
            return
        await self.app(scope, receive, send)


#: what the pages import (pandas, numpy, altair, pyarrow, pydantic, httpx, yaml … ~1-2 s on the
#: 2-core machine, more when it is busy): imported while the server starts, before it accepts a
#: connection, instead of in the first viewer's page view (``bench dashboard``'s first visit)
PRELOAD = (
    "dashboard.ui",
    "dashboard.charts",
    "dashboard.privacy",
    "dashboard.budget",
    "dashboard.data",
    "pyarrow",
    "pyarrow.ipc",  # Streamlit serializes every chart's and table's data with Arrow
    "streamlit.material_icon_names",  # the pages' icons
)


def preload(names: tuple[str, ...] = PRELOAD) -> float:
    """Import ``names`` and read the settings and monitor config once; the seconds it took.

    A module or config that fails here is left for the page to report as it always did
    (the server must start, and the page shows the error in context).
    """
    t = time.perf_counter()
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # the page view that needs it says why
            log.debug("dashboard: preloading %s failed", name, exc_info=True)
    try:
        from dashboard.config import load_settings

        load_settings()
    except Exception:  # a bad config is shown by the page, with its field
        log.debug("dashboard: reading the settings at start failed", exc_info=True)
    return time.perf_counter() - t


@contextlib.asynccontextmanager
async def lifespan(_app: App) -> AsyncIterator[None]:
    """Runs after Streamlit's runtime started (so the pages' caches bind to it) and before
    the server accepts connections."""
    log.info("dashboard: page modules loaded in %.2f s", preload())
    yield


app = App(Path(__file__).with_name("app.py"), middleware=[Middleware(HideInternals)], lifespan=lifespan)
