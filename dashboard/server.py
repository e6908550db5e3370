"""The ASGI app ``driftwatch dashboard`` serves: Streamlit's ``App`` for ``app.py`` behind one
middleware that hides what Streamlit 1.67 has no setting for.

``streamlit run dashboard/server.py`` finds ``app`` below and serves it with uvicorn, with
the same ``--server.*``/``--client.*`` options as ``streamlit run dashboard/app.py``.
:class:`HideInternals`:

* answers 404 to ``/_stcore/metrics`` (sessions, per-query cache statistics; Streamlit
  registers the route unconditionally and has no login in front of it);
* blanks the server's script path and the Streamlit/Python versions and OS in the
  ``new_session`` message every websocket session gets before any login.

What it cannot hide: the Streamlit frontend's static files (their contents identify the
Streamlit release), ``/_stcore/health`` and ``/_stcore/host-config`` (the frontend needs
them; they carry no data). Tracebacks are kept off the wire by
``--client.showErrorDetails=none`` (:mod:`dashboard.launch`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from starlette.middleware import Middleware
from streamlit.starlette import App

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: HTTP paths (after the base URL) that answer 404
HIDDEN_PATHS = ("/_stcore/metrics",)


def scrub_new_session(data: bytes) -> bytes:
    """``data`` (a serialized ForwardMsg) with the script path and the environment blanked
    if it is a ``new_session`` message; any other message is returned unchanged."""
    from google.protobuf.message import DecodeError  # noqa: PLC0415
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg  # noqa: PLC0415

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
            await send({"type": "http.response.start", "status": 404,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
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


app = App(Path(__file__).with_name("app.py"), middleware=[Middleware(HideInternals)])
