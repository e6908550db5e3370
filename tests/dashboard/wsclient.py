"""A raw Streamlit websocket client, as an attacker would write one (tests only).

It speaks the same protobuf protocol as the browser (``BackMsg`` up, ``ForwardMsg``
down, on ``/_stcore/stream``) but sends whatever it likes: widget values for any
widget id, a ``rerun_script`` for a fragment id it saw earlier, after logging out.
The security tests use it to check what reaches a client, message by message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

#: element types that carry monitoring results (charts, tables, metrics)
DATA_ELEMENTS = frozenset(
    {
        "arrow_data_frame",
        "arrow_table",
        "arrow_vega_lite_chart",
        "vega_lite_chart",
        "metric",
        "plotly_chart",
        "deck_gl_json_chart",
        "json",
        "table",
        "data_frame",
    }
)


@dataclass
class Run:
    """What the server sent for one rerun request, until ``script_finished``."""

    msgs: list[ForwardMsg] = field(default_factory=list)

    def elements(self) -> list[tuple[str, Any]]:
        out = []
        for m in self.msgs:
            if m.WhichOneof("type") == "delta" and m.delta.WhichOneof("type") == "new_element":
                el = m.delta.new_element
                out.append((el.WhichOneof("type"), el))
        return out

    def data_elements(self) -> list[str]:
        """Types of the chart/table/metric elements in this run."""
        return [t for t, _ in self.elements() if t in DATA_ELEMENTS]

    def text(self) -> str:
        """Every element rendered as protobuf text (to search for names and values)."""
        return "\n".join(str(el) for _, el in self.elements())

    def data_text(self) -> str:
        """The chart/table/metric elements and the select boxes' options, as protobuf text (what
        the page shows of the data; a message may echo a model name the URL asked for)."""
        return "\n".join(str(el) for t, el in self.elements() if t in DATA_ELEMENTS or t == "selectbox")

    def raw(self, *, new_session: bool = False) -> bytes:
        """The serialized messages (``new_session``, which names the script, only if asked)."""
        return b"".join(
            m.SerializeToString() for m in self.msgs if new_session or m.WhichOneof("type") != "new_session"
        )

    def fragment_ids(self) -> set[str]:
        """Fragment ids the server registered in this run (the browser reruns them)."""
        return {m.delta.fragment_id for m in self.msgs if m.WhichOneof("type") == "delta" and m.delta.fragment_id}

    def exceptions(self) -> list[Any]:
        return [el.exception for t, el in self.elements() if t == "exception"]

    def widget_ids(self) -> dict[str, str]:
        """``{label: widget id}`` of the text inputs, buttons and form buttons."""
        out = {}
        for t, el in self.elements():
            w = getattr(el, t)
            if hasattr(w, "id") and hasattr(w, "label") and w.id:
                out[w.label] = w.id
        return out

    def finished(self) -> bool:
        return any(m.WhichOneof("type") == "script_finished" for m in self.msgs)


class StreamlitClient:
    """One websocket session with a Streamlit server."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.url = base_url.replace("http://", "ws://").rstrip("/") + "/_stcore/stream"
        self.timeout = timeout
        self._conn = connect(self.url, subprotocols=["streamlit"], max_size=None, open_timeout=timeout)
        self.ws = self._conn.__enter__()
        self.page_hash = ""
        self.all: list[ForwardMsg] = []

    def close(self) -> None:
        self._conn.__exit__(None, None, None)

    def __enter__(self) -> StreamlitClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, msg: BackMsg) -> None:
        self.ws.send(msg.SerializeToString())

    def rerun(
        self,
        *,
        query: str = "",
        widgets: list[Any] | None = None,
        fragment_id: str = "",
        page_hash: str | None = None,
        wait: bool = True,
    ) -> Run:
        """Send ``rerun_script`` (widget states as ``WidgetState`` messages); collect the answer."""
        msg = BackMsg()
        cs = msg.rerun_script
        cs.query_string = query
        cs.page_script_hash = self.page_hash if page_hash is None else page_hash
        if fragment_id:
            cs.fragment_id = fragment_id
        for w in widgets or []:
            cs.widget_states.widgets.append(w)
        self.send(msg)
        return self.collect() if wait else Run()

    def collect(self, timeout: float | None = None) -> Run:
        """ForwardMsgs until ``script_finished`` (or the timeout, or the socket closing)."""
        run = Run()
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            try:
                data = self.ws.recv(timeout=max(0.05, deadline - time.monotonic()))
            except TimeoutError:
                break
            except ConnectionClosed:
                break
            m = ForwardMsg()
            m.ParseFromString(data)
            self.all.append(m)
            run.msgs.append(m)
            kind = m.WhichOneof("type")
            if kind == "new_session":
                self.page_hash = m.new_session.page_script_hash or self.page_hash
            if kind == "script_finished":
                break
        return run


def widget(wid: str, **value: Any) -> Any:
    """A ``WidgetState`` for widget id ``wid``: ``widget("x", string_value="a")``, ``trigger_value=True``."""
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    w = WidgetState(id=wid)
    for k, v in value.items():
        setattr(w, k, v)
    return w


def until(client: StreamlitClient, done: Any, timeout: float = 20.0) -> Run:
    """Collect runs until ``done(run_so_far)`` is true (a login reruns the script twice)."""
    total = Run()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done(total):
            return total
        total.msgs.extend(client.collect(timeout=max(0.1, deadline - time.monotonic())).msgs)
    return total


def drain(client: StreamlitClient, seconds: float) -> Run:
    """Everything the server sends within ``seconds``."""
    total = Run()
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        total.msgs.extend(client.collect(timeout=left).msgs)
    return total


def login(client: StreamlitClient, user: str, password: str, query: str = "") -> Run:
    """Fill the login form and submit it; return what came back until data arrived (or 20 s)."""
    form = client.rerun(query=query).widget_ids()
    widgets = [widget(form["Password"], string_value=password), widget(form["Log in"], trigger_value=True)]
    if "User" in form:
        widgets.append(widget(form["User"], string_value=user))
    client.rerun(query=query, widgets=widgets, wait=False)
    return until(client, lambda r: bool(r.data_elements()) or "Wrong user" in r.text())
