"""``driftwatch dashboard``: serve the Streamlit dashboard.

Runs ``streamlit run dashboard/server.py`` (the ASGI app around ``dashboard/app.py``, see
:mod:`dashboard.server`) headless (no browser is opened, no usage
statistics are sent), on ``Settings.dashboard_address`` (127.0.0.1 by default:
set ``DRIFTWATCH_DASHBOARD_ADDRESS=0.0.0.0`` in a container) and
``Settings.dashboard_port`` (8501). The process is replaced by Streamlit's, so
signals reach it directly. Arguments after ``--`` go to ``streamlit run``.

>>> cmd = streamlit_command(port=8600, address="127.0.0.1")
>>> cmd[1:4], "--server.headless=true" in cmd, "--browser.gatherUsageStats=false" in cmd
(['-m', 'streamlit', 'run'], True, True)
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

APP = Path(__file__).with_name("app.py")
#: what ``streamlit run`` serves: :mod:`dashboard.server`'s ASGI app, which runs ``APP``
SERVER = Path(__file__).with_name("server.py")


def streamlit_command(*, port: int, address: str, extra: list[str] | None = None, log_level: str = "INFO") -> list[str]:
    """The ``python -m streamlit run`` command line for the dashboard (Streamlit's own log
    lines at ``log_level``, ``DRIFTWATCH_LOG_LEVEL``, like the dashboard's)."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(SERVER),
        f"--server.port={port}",
        f"--server.address={address}",
        "--server.headless=true",
        "--server.runOnSave=false",
        "--server.fileWatcherType=none",
        "--browser.gatherUsageStats=false",
        f"--browser.serverAddress={address if address not in ('0.0.0.0', '::') else 'localhost'}",
        f"--browser.serverPort={port}",
        "--global.developmentMode=false",
        # the pages use no "magic" (bare expressions written to the page): skip its AST rewrite,
        # which Streamlit redoes whenever its script cache is emptied (every time the last
        # browser tab closes or reloads)
        "--runner.magicEnabled=false",
        "--client.toolbarMode=viewer",
        # no traceback, exception type, source line or server path reaches a browser (the log has them)
        "--client.showErrorDetails=none",
        "--client.showErrorLinks=false",
        "--theme.base=light",
        f"--logger.level={log_level.lower()}",
        *(extra or []),
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=None, help="port (default: DRIFTWATCH_DASHBOARD_PORT, 8501)")
    parser.add_argument(
        "--address", default=None, help="interface to bind (default: DRIFTWATCH_DASHBOARD_ADDRESS, 127.0.0.1)"
    )
    parser.add_argument("--print-command", action="store_true", help="print the streamlit command and exit")
    parser.add_argument("streamlit_args", nargs=argparse.REMAINDER, help="after --: extra options for `streamlit run`")


def run(args: argparse.Namespace) -> int:
    from dashboard.config import load_settings

    s = load_settings()
    extra = [a for a in (args.streamlit_args or []) if a != "--"]
    cmd = streamlit_command(
        port=args.port or s.dashboard_port,
        address=args.address or s.dashboard_address,
        extra=extra,
        log_level=s.log_level,
    )
    if args.print_command:
        print(shlex.join(cmd))
        return 0
    host = args.address or s.dashboard_address
    if s.dashboard_auth == "oidc":
        from dashboard.auth import authlib_problem, oidc_install_hint

        if problem := authlib_problem():  # the login page says so too, and lets nobody in
            print(f"driftwatch dashboard: {oidc_install_hint(problem)}", file=sys.stderr, flush=True)
    print(
        f"driftwatch dashboard on http://{host}:{args.port or s.dashboard_port} "
        f"(InfluxDB {s.influx_url}, database {s.influx_db})",
        flush=True,
    )
    os.execv(sys.executable, cmd)
    return 0  # pragma: no cover - execv does not return
