"""``driftwatch reference``: set, show or reset the reference of a model (version).

The references live in the shared store of :mod:`streams.worker.references` (a
compacted Kafka topic), so a change reaches every worker: running workers
follow the topic and apply it from their next closing window (within about a
second); a worker started later reads it at start-up.

* ``set MODEL [--version V] --file PATH`` — build the reference from a CSV,
  Parquet or NPZ file of rows, checked against the model's features in the
  monitor config (``--monitors``, default ``DRIFTWATCH_MONITORS``): every
  feature must be a column of the right type (an error names the file and the
  problem); values outside the configured expectations (range, allowed
  categories, nulls) are reported as warnings (``--strict``: errors). Without
  ``--version`` it applies to every version of the model that has no
  reference set of its own. It overrides the configured source.
* ``show MODEL [--version V] [--json]`` — what is stored: origin, source,
  rows, creation time, size, and a per-feature summary (n, missing, mean, std,
  quantiles; categories with their shares). No rows are printed, and sensitive
  features show counts only.
* ``reset MODEL [--version V]`` — drop the stored reference(s) (without
  ``--version``: every version's and the all-versions one); workers go back to
  the configured source: the file, the next ``first_n`` events, or the rolling
  previous window.

Exit codes: 0 done, 1 the broker failed, 2 bad input (config, model, file).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from detectors.errors import DriftwatchError
from detectors.values import not_none

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
TOP_CATEGORIES = 5


class CliError(DriftwatchError):
    """A user-facing failure: the message is printed, ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("model", metavar="MODEL", help="model id (as in the monitor config)")
        p.add_argument(
            "--version", default=None, help="model version (default: set/reset every version; show all stored)"
        )
        p.add_argument(
            "--monitors",
            type=Path,
            default=None,
            help="monitor config (YAML); default: DRIFTWATCH_MONITORS / the demo's",
        )
        p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the broker (default 30)")

    p = sub.add_parser("set", help="store a reference built from a file of rows (CSV, Parquet, NPZ)")
    common(p)
    p.add_argument("--file", type=Path, required=True, help="reference rows: one column per feature")
    p.add_argument(
        "--strict",
        action="store_true",
        help="values outside the configured expectations (range, allowed, nulls) are errors",
    )
    p = sub.add_parser("show", help="show the stored reference(s): source, rows, per-feature summary")
    common(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p = sub.add_parser("reset", help="drop the stored reference: workers rebuild it from the configured source")
    common(p)


# ----------------------------------------------------------------------------- pure helpers


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(float(x)) else None


def feature_summary(reference, features=None) -> list[dict[str, Any]]:
    """Per-feature summary of a :class:`~detectors.reference.Reference` (aggregates only, no rows).

    Numeric: n, missing, mean, std, min, max and the :data:`QUANTILES`;
    categorical: n, missing, number of categories and the top ones with shares.
    Features marked ``sensitive`` (in ``features``, else in the reference) get counts only.

    >>> import numpy as np
    >>> from detectors.frame import Frame
    >>> from detectors.reference import Reference
    >>> from detectors.spec import FeatureSpec
    >>> f = Frame.from_columns(event_id=np.arange(4).astype(str), event_time=np.zeros(4),
    ...     numeric={"x": np.array([1.0, 2.0, 3.0, np.nan])},
    ...     categorical={"c": np.array(["a", "a", "b", None], dtype=object)})
    >>> ref = Reference.from_frame(f, [FeatureSpec(name="x", kind="numeric"), FeatureSpec(name="c", kind="categorical")])
    >>> s = feature_summary(ref)
    >>> s[0]["n"], s[0]["missing"], s[0]["mean"], s[1]["top"][0]
    (3, 1, 2.0, {'value': 'a', 'count': 2, 'share': 0.6667})
    """
    sensitive = {f.name for f in (features or reference.features) if f.sensitive}
    out: list[dict[str, Any]] = []
    for spec in reference.features:
        name = spec.name
        if spec.kind == "numeric" and name in reference.numeric:
            r = reference.numeric[name]
            item: dict[str, Any] = {"name": name, "kind": "numeric", "n": r.n, "missing": int(r.n_missing)}
            if name in sensitive:
                item["withheld"] = "sensitive feature"
            elif r.n:
                v = r.values
                item.update(
                    mean=_num(v.mean()),
                    std=_num(v.std(ddof=1)) if r.n > 1 else None,
                    min=_num(v[0]),
                    max=_num(v[-1]),
                    quantiles={f"{q:g}": _num(x) for q, x in zip(QUANTILES, np.quantile(v, QUANTILES))},
                )
            out.append(item)
        elif spec.kind == "categorical" and name in reference.categorical:
            r = reference.categorical[name]
            n = r.n
            item = {
                "name": name,
                "kind": "categorical",
                "n": n,
                "missing": int(r.n_missing),
                "categories": int(r.categories.shape[0]),
            }
            if name in sensitive:
                item["withheld"] = "sensitive feature"
            else:
                order = np.lexsort((r.categories, -r.counts))[:TOP_CATEGORIES]
                item["top"] = [
                    {
                        "value": str(r.categories[i]),
                        "count": int(r.counts[i]),
                        "share": round(int(r.counts[i]) / n, 4) if n else None,
                    }
                    for i in order
                ]
            out.append(item)
    return out


def expectation_problems(frame, features) -> list[str]:
    """Values of a file of rows outside the features' expectations (range, allowed categories, nulls)."""
    problems = []
    n = len(frame)
    for f in features:
        if f.kind == "numeric":
            col = frame.numeric.get(f.name)
            if col is None:
                continue
            missing = ~np.isfinite(col)
            lo = -np.inf if f.min is None else f.min
            hi = np.inf if f.max is None else f.max
            out = int(((col < lo) | (col > hi)).sum())
            if out:
                problems.append(f"{f.name}: {out} of {n} values ({out / n:.1%}) outside [{f.min}, {f.max}]")
        else:
            col = frame.categorical.get(f.name)
            if col is None:
                continue
            missing = ~not_none(col)
            if f.allowed is not None:
                present = col[~missing].astype(str)
                bad = ~np.isin(present, np.asarray(f.allowed, dtype=str))
                if bad.any():
                    vals = sorted(set(present[bad].tolist()))
                    shown = ", ".join(repr(v) for v in vals[:5]) + (" ..." if len(vals) > 5 else "")
                    kind = "values" if f.sensitive else f"values ({shown})"
                    problems.append(f"{f.name}: {int(bad.sum())} of {n} {kind} not in the allowed categories")
        k = int(missing.sum())
        if k and not f.nullable:
            problems.append(f"{f.name}: {k} of {n} values missing, but the feature is not nullable")
    return problems


def _iso(ts: float) -> str | None:
    if not ts:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _configured(model) -> str:
    if model is None:
        return "not in the monitor config"
    cfg = model.reference
    if cfg.file is not None:
        return f"file {cfg.file}"
    if cfg.first_n is not None:
        return f"the first {cfg.first_n} events of each version"
    return "the previous window (rolling)"


# ----------------------------------------------------------------------------- actions


def _load_config(args: argparse.Namespace, settings, required: bool):
    from streams.worker.monitors import ConfigError, load_monitors

    path = args.monitors or settings.monitors
    try:
        cfg = load_monitors(path)
    except ConfigError as e:
        if required:
            raise CliError(str(e)) from None
        print(f"warning: {e}", file=sys.stderr)
        return None, None
    model = cfg.model(args.model)
    if model is None:
        known = ", ".join(m.model_id for m in cfg.models)
        msg = f"model {args.model!r} is not in the monitor config {path} (models: {known})"
        if required:
            raise CliError(msg)
        print(f"warning: {msg}", file=sys.stderr)
    return cfg, model


def _build(args: argparse.Namespace, model):
    from detectors.outputs import read_reference_rows
    from detectors.reference import Reference, ReferenceDataError

    path: Path = args.file
    try:  # with the output/label columns the model's config declares
        rows = read_reference_rows(path, model.features, model.reference.outputs(), model.task)
        ref = Reference.from_frame(
            rows, model.features, bins=model.drift.histogram_bins, segments=model.segments, source=str(path.resolve())
        )
    except ReferenceDataError as e:
        raise CliError(
            f"{e} (model {model.model_id}: features {', '.join(f'{f.name} ({f.kind})' for f in model.features)})"
        ) from None
    problems = expectation_problems(rows, model.features)
    if problems and args.strict:
        raise CliError(
            f"{path}: values outside the expectations of model {model.model_id}:\n  " + "\n  ".join(problems)
        )
    for p in problems:
        print(f"warning: {path}: {p}", file=sys.stderr)
    from streams.worker.references import encode_rows

    args.rows_blob = encode_rows(rows, model.features)  # stored with it: workers attach the rows after a restart
    return ref


async def _set(args, settings, store, model) -> int:
    from streams.worker.references import ALL_VERSIONS, ORIGIN_SET, StoredReference

    ref = args.built  # built and checked before the broker was contacted
    version = args.version or ALL_VERSIONS
    blob = ref.to_bytes()
    rows = getattr(args, "rows_blob", b"")
    stored = StoredReference(
        model.model_id,
        version,
        blob,
        "",
        -1,
        (-1, -1),
        ref.n_rows,
        time.time(),
        origin=ORIGIN_SET,
        source=str(args.file.resolve()),
        rows_blob=rows,
    )
    await store.save(stored)
    chunks = math.ceil(len(blob) / store.chunk_bytes) if len(blob) > store.chunk_bytes else 1
    if rows:
        chunks += math.ceil(len(rows) / store.chunk_bytes)
    which = f"v{version}" if version != ALL_VERSIONS else "every version (without a reference set of its own)"
    print(
        f"reference of {model.model_id} {which} set from {args.file}: {ref.n_rows} rows, "
        f"{len(blob) / 1e6:.2f} MB in {chunks} record(s) on {store.topic}"
    )
    print(
        "running workers use it from their next window; `driftwatch reference reset` goes back to "
        f"the configured source ({_configured(model)})"
    )
    return 0


def _describe(stored, model, store) -> dict[str, Any]:
    from detectors.reference import ReferenceDataError
    from streams.worker.references import ALL_VERSIONS, ORIGIN_SET

    size = len(stored.blob)
    item: dict[str, Any] = {
        "model": stored.model_id,
        "version": stored.version,
        "applies_to": "every version without its own set reference"
        if stored.version == ALL_VERSIONS
        else f"version {stored.version}",
        "origin": stored.origin,
        "origin_text": "set by an operator (`driftwatch reference set`)"
        if stored.origin == ORIGIN_SET
        else "built by a worker from the first events",
        "source": stored.source or None,
        "rows": stored.rows,
        "created": stored.created or None,
        "created_utc": _iso(stored.created),
        "bytes": size,
        "records": math.ceil(size / store.chunk_bytes) if size > store.chunk_bytes else 1,
        "sha256": stored.sha256,
    }
    if stored.origin != ORIGIN_SET:
        item["ends_at"] = {
            "topic": stored.topic,
            "partition": stored.partition,
            "offset": stored.end_pos[0],
            "row": stored.end_pos[1],
        }
    if stored.rows_blob:
        from streams.worker.references import rows_info

        try:
            info = rows_info(stored.rows_blob)
            item["stored_rows"] = {"n": info["n"], "bytes": len(stored.rows_blob), "withheld": info["withheld"]}
        except ValueError as e:
            item["stored_rows"] = {"error": str(e)}
    else:
        item["stored_rows"] = None
    try:
        ref = stored.reference(rows=False)
    except ReferenceDataError as e:
        item["error"] = str(e)
        return item
    item["source"] = item["source"] or ref.source
    item["rows"] = ref.n_rows
    item["bins"] = ref.bins
    item["features"] = feature_summary(ref, model.features if model is not None else None)
    if ref.segments:
        item["segments"] = sorted(ref.segments)
    return item


def _describe_file(model) -> dict[str, Any]:
    """The configured file reference as a worker builds it, with its per-feature summary."""
    from detectors.reference import ReferenceDataError
    from streams.worker.monitors import file_reference

    item: dict[str, Any] = {"source": str(model.reference.file), "rows": None}
    try:
        ref = file_reference(model)
    except (ReferenceDataError, ValueError, OSError) as e:
        item["error"] = str(e)
        return item
    item.update(rows=ref.n_rows, bins=ref.bins, features=feature_summary(ref, model.features))
    return item


def _print_text(doc: dict[str, Any]) -> None:
    head = f"model {doc['model']}" + (f" v{doc['version']}" if doc["version"] else "")
    print(f"{head} — configured source: {doc['configured_source']}")
    if doc.get("in_use"):
        print(f"  in use: {doc['in_use']}")
    if not doc["references"]:
        print(f"  nothing stored: {doc['nothing_stored']}")
    if doc.get("configured"):
        c = doc["configured"]
        print()
        print(f"configured reference (what workers build from the file): {c['rows']} rows")
        if "error" in c:
            print(f"  ERROR    {c['error']}")
        else:
            _print_features(c)
    for k, p in doc.get("problems", {}).items():
        print(f"  unusable record {k}: {p}")
    for r in doc["references"]:
        print()
        print(f"reference {r['model']}/{r['version']} ({r['applies_to']}): {r['origin_text']}")
        print(f"  source   {r.get('source')}")
        print(f"  rows     {r['rows']}")
        print(f"  created  {r['created_utc']}")
        print(f"  stored   {r['bytes'] / 1e6:.2f} MB in {r['records']} record(s), sha256 {r['sha256'][:16]}…")
        if "ends_at" in r:
            e = r["ends_at"]
            print(f"  ends at  {e['topic']}[{e['partition']}] offset {e['offset']} row {e['row']}")
        sr = r.get("stored_rows")
        if sr is None:
            print("  row data none stored (summary only: the row-based evaluators stay silent with it)")
        elif "error" in sr:
            print(f"  row data UNUSABLE: {sr['error']}")
        else:
            withheld = f"; sensitive features left out: {', '.join(sr['withheld'])}" if sr["withheld"] else ""
            print(f"  row data {sr['n']} rows, {sr['bytes'] / 1e6:.2f} MB{withheld}")
        if "error" in r:
            print(f"  ERROR    {r['error']}")
            continue
        if r.get("segments"):
            print(f"  segments {', '.join(r['segments'])}")
        _print_features(r)


def _print_features(r: dict[str, Any]) -> None:
    """The per-feature summary of a described reference (numeric quantiles, top categories)."""
    feats = r.get("features", [])
    num = [f for f in feats if f["kind"] == "numeric"]
    cat = [f for f in feats if f["kind"] == "categorical"]
    w = max([len(f["name"]) for f in feats] + [7])
    if num:
        qs = "".join(f"{'q' + k:>11}" for k in (f"{q:g}" for q in QUANTILES))
        print(f"  {'numeric':<{w}} {'n':>7} {'missing':>7} {'mean':>11} {'std':>11} {'min':>11}{qs} {'max':>11}")

        def g(x):
            return f"{x:>11.4g}" if isinstance(x, float) else f"{'-':>11}"

        for f in num:
            if "withheld" in f:
                print(f"  {f['name']:<{w}} {f['n']:>7} {f['missing']:>7}  ({f['withheld']}: values withheld)")
                continue
            q = f.get("quantiles", {})
            print(
                f"  {f['name']:<{w}} {f['n']:>7} {f['missing']:>7} {g(f.get('mean'))} {g(f.get('std'))} "
                f"{g(f.get('min'))}" + "".join(g(q.get(f"{x:g}")) for x in QUANTILES) + f" {g(f.get('max'))}"
            )
    if cat:
        print(f"  {'categorical':<{w}} {'n':>7} {'missing':>7} {'levels':>7}  top categories (share)")
        for f in cat:
            top = (f.get("withheld") and f"({f['withheld']}: values withheld)") or ", ".join(
                f"{t['value']} {t['share']:.1%}" for t in f.get("top", []) if t["share"] is not None
            )
            print(f"  {f['name']:<{w}} {f['n']:>7} {f['missing']:>7} {f['categories']:>7}  {top}")


async def _show(args, settings, store, model) -> int:
    from streams.worker.references import applicable

    refs = await store.load()
    mine = {k: v for k, v in refs.items() if k[0] == args.model}
    doc: dict[str, Any] = {
        "model": args.model,
        "version": args.version,
        "configured_source": _configured(model),
        "topic": store.topic,
    }
    if args.version is not None:
        use = applicable(mine, args.model, args.version)
        shown = [use] if use is not None else []
        doc["in_use"] = (
            f"stored {use.model_id}/{use.version} ({use.origin})" if use is not None else "the configured source"
        )
    else:
        shown = [mine[k] for k in sorted(mine)]
    doc["references"] = [_describe(s, model, store) for s in shown]
    if model is None:
        doc["nothing_stored"] = (
            "no worker monitors this model: declare it in the monitor config (its events are "
            "dead-lettered as unknown_model until then)"
        )
        doc.pop("in_use", None)
    elif model.reference.file is not None:
        doc["nothing_stored"] = "workers use the configured file (below)"
    elif model.reference.first_n is not None:
        doc["nothing_stored"] = f"workers build it from the first {model.reference.first_n} events of each version"
    else:
        doc["nothing_stored"] = "workers compare each window with the previous one (rolling)"
    if not shown and model is not None and model.reference.file is not None:
        doc["configured"] = _describe_file(model)
    doc["problems"] = {f"{k[0]}/{k[1]}": p for k, p in store.problems.items() if k[0] == args.model}
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        _print_text(doc)
    return 0


async def _reset(args, settings, store, model) -> int:
    refs = await store.load()
    keys = [k for k in refs if k[0] == args.model and (args.version is None or k[1] == args.version)]
    keys += [
        k
        for k in store.problems
        if k[0] == args.model and k not in keys and (args.version is None or k[1] == args.version)
    ]
    if not keys:
        what = f"{args.model}" + (f" v{args.version}" if args.version else "")
        print(f"nothing stored for {what}: workers already use the configured source ({_configured(model)})")
        return 0
    for k in sorted(keys):
        await store.reset(*k)
        print(f"reset {k[0]}/{k[1]}")
    print(f"workers go back to the configured source: {_configured(model)}")
    return 0


ACTIONS = {"set": _set, "show": _show, "reset": _reset}


def run(args: argparse.Namespace) -> int:
    from streams.broker.admin import TopicError
    from streams.settings import Settings
    from streams.worker.references import ReferenceStore, ReferenceStoreError, ensure_references_topic

    settings = Settings()
    try:
        _cfg, model = _load_config(args, settings, required=args.action == "set")
        args.built = _build(args, model) if args.action == "set" else None  # a bad file fails before any I/O
        try:
            ensure_references_topic(settings)
        except TopicError as e:
            raise CliError(str(e), 1) from None
        except Exception as e:  # kafka-python errors: name them, do not trace
            raise CliError(
                f"cannot reach the references topic on {settings.kafka_bootstrap}: {type(e).__name__}: {e}", 1
            ) from None

        async def main() -> int:
            store = ReferenceStore(settings, timeout=args.timeout)
            try:
                return await ACTIONS[args.action](args, settings, store, model)
            finally:
                await store.close()

        try:
            return asyncio.run(main())
        except ReferenceStoreError as e:
            raise CliError(str(e), 1) from None
        except CliError:
            raise
        except Exception as e:  # aiokafka connection errors and the like
            if type(e).__module__.startswith(("aiokafka", "kafka")):
                raise CliError(f"broker {settings.kafka_bootstrap}: {type(e).__name__}: {e}", 1) from None
            raise
    except CliError as e:
        print(f"driftwatch reference {args.action}: {e}", file=sys.stderr)
        return e.code
