"""``driftwatch check-config FILE``: validate a monitor config and say what is wrong.

Beyond the schema, it checks what only shows when a worker starts: it opens every
reference file and builds the reference exactly as the worker does
(:func:`streams.worker.monitors.file_reference`: readable format, every feature's column
present, values of the declared kind), resolves each webhook's URL and signing secret
(environment variables set, secret files readable) and looks for the squeeze model
files of the adversarial scores. Each problem is reported with its field path
(``models[0].reference.file``), so a config that passes here is one the worker uses
as written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streams.worker.monitors import ConfigError, MonitorsConfig, file_reference, load_monitors


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="monitor config (YAML)")


def problems(cfg: MonitorsConfig) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """``([(field path, problem)], {model id: reference summary})`` of what a worker would reject.

    Reads every reference file (as large as the worker would); touches no broker or database.
    """
    from detectors.reference import ReferenceDataError
    from streams.alerts.rules import RuleError

    found: list[tuple[str, str]] = []
    summaries: dict[str, str] = {}
    for i, m in enumerate(cfg.models):
        if m.reference.file is not None:
            try:
                ref = file_reference(m)
            except (ReferenceDataError, ValueError, OSError) as e:
                found.append((f"models[{i}].reference.file", str(e)))
            else:
                summaries[m.model_id] = f"reference {m.reference.file.name}: {ref.n_rows} rows"
        sq = m.adversarial.squeeze.model
        if sq is not None and not Path(sq).is_file():
            found.append((f"models[{i}].adversarial.squeeze.model", f"{sq}: file not found"))
    for j, w in enumerate(cfg.webhooks):
        for what, resolve in (
            ("url_env", w.resolve_url),
            ("secret_env" if w.secret_env else "secret_file", w.resolve_secret),
        ):
            if what == "url_env" and w.url_env is None:
                continue
            try:
                resolve()
            except RuleError as e:
                found.append((f"webhooks[{j}].{what}", str(e)))
    return found, summaries


def run(args: argparse.Namespace) -> int:
    try:
        cfg = load_monitors(args.file)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 1
    found, summaries = problems(cfg)
    if found:
        print(f"the worker would reject {args.file}:", file=sys.stderr)
        for path, problem in found:
            print(f"  {args.file}: {path}: {problem}", file=sys.stderr)
        return 1
    from detectors.quality import describe_quality  # scipy, only once the file is valid
    from detectors.thresholds import describe  # scipy, only once the file is valid

    for m in cfg.models:
        win = m.window
        size = f"{win.size_events} events" if win.size_events else f"{win.size_seconds}s (+{win.grace_seconds}s grace)"
        ref = summaries.get(m.model_id) or "reference " + ", ".join(
            f"{k}={v}" for k, v in m.reference.model_dump(exclude_none=True, exclude_defaults=True).items()
        )
        print(f"ok  {m.model_id}: {len(m.features)} features, {m.task}, window {size}, {ref}")
        hist = m.reference.rolling_history if m.reference.rolling else None
        print(f"    drift ({m.drift.threshold.method}): {describe(m.drift, len(m.features), rolling_history=hist)}")
        print(f"    quality: {describe_quality(m.drift, m.features)}")
        if m.observes_rate:
            print(
                "    (under the alarm budget the level follows the observed event rate: "
                f"{m.drift.p_val:g} until the first window)"
            )
    plan = cfg.budget_plan()
    b = cfg.alarm_budget
    if plan is not None and b is not None:  # a plan exists exactly when a budget is declared
        print(
            f"alarm budget: {b.false_alarms:g} false alarm(s) per {b.per} across all models, features and "
            f"segments ({b.per_day:.3g}/day); the online detectors' expected false alarms (features x "
            f"events/day / ert) come off it first, the rest is shared by every alarming verdict family "
            f"(per window: drift and quality, each also per segment; prediction drift; multivariate when on; "
            f"CBPE's estimate band):"
        )
        for line in plan:
            wpd = (
                "? (the observed event rate sets it)"
                if line.windows_per_day is None
                else f"{line.windows_per_day:.4g} ({line.rate_source})"
            )
            lvl = (
                "from the observed rate"
                if line.window_level is None
                else f"{line.window_level:.3g} per window, {line.test_level:.3g} per test"
            )
            online = (
                "unknown until the event rate is observed"
                if line.fixed_per_day is None
                else f"{line.fixed_per_day:.3g}/day"
            )
            print(
                f"    {line.model_id}: {line.share_per_day:.3g} alarm(s)/day over {line.families} family(ies) "
                f"({line.kinds}) x {line.tests} test(s); windows/day {wpd}; level {lvl}; online detectors "
                f"{online}"
            )
    return 0
