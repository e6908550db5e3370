"""Reference management: ``driftwatch reference set/show/reset``, the chunked shared store, and the
worker's use of references (rows attached for the row-based evaluators, live set/reset).

Pure helpers are unit-tested against numpy; everything that touches the store runs on the real
broker (and, end to end, a real ``driftwatch worker`` writing to the real InfluxDB).
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
import yaml

from detectors import records as R
from detectors.frame import Frame
from detectors.reference import Reference
from detectors.spec import FeatureSpec
from streams.cli import main as cli
from streams.cli.reference import expectation_problems, feature_summary
from streams.worker.references import (
    ALL_VERSIONS,
    CHUNK_PREFIX,
    ORIGIN_FIRST_N,
    ORIGIN_SET,
    PRODUCER_MAX_REQUEST,
    ReferenceStore,
    StoredReference,
    _Fold,
    applicable,
    chunk_key,
    ensure_references_topic,
    references_topic,
)
from tests.sinks import CollectSink

NUMERIC = ["x0", "x1", "x2", "x3"]
C0_P = [0.4, 0.3, 0.2, 0.1]
LEVELS = ["a", "b", "c", "d"]


def features_cfg() -> list[dict]:
    return [{"name": n, "kind": "numeric", "min": -20, "max": 20} for n in NUMERIC] + [
        {"name": "c0", "kind": "categorical", "allowed": LEVELS, "nullable": False}
    ]


def write_monitors(path: Path, reference: dict, **extra) -> Path:
    model = {
        "model_id": "m",
        "features": features_cfg(),
        "window": {"size_events": 500, "idle_close_seconds": 600},
        "reference": reference,
        "drift": {"p_val": 0.001, "correction": "bonferroni"},
        "adversarial": {"extraction": {"simulations": 60, "horizon": 200}},
        **extra,
    }
    path.write_text(yaml.safe_dump({"models": [model]}))
    return path


def write_rows(path: Path, n: int, seed: int, shift: float = 0.0) -> dict[str, np.ndarray]:
    """A CSV of reference rows like the traffic below (x0 shifted by ``shift``)."""
    rng = np.random.default_rng(seed)
    cols = {k: rng.normal(size=n) for k in NUMERIC}
    cols["x0"] = cols["x0"] + shift
    cols["c0"] = np.array(LEVELS, dtype=object)[rng.choice(4, size=n, p=C0_P)]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(list(cols))
        for i in range(n):
            w.writerow([cols[k][i] if k == "c0" else repr(float(cols[k][i])) for k in cols])
    return cols


def batch(start: int, n: int, rng: np.random.Generator, t0: float, version: str = "1") -> bytes:
    """A column batch of ``n`` stationary events of model m, with probabilities and sources."""
    x = rng.normal(size=(len(NUMERIC), n))
    p1 = 1.0 / (1.0 + np.exp(-2 * x[1]))
    return orjson.dumps(
        {
            "schema_version": 1,
            "type": "inference_batch",
            "model_id": "m",
            "model_version": version,
            "event_id": [f"m-{i}" for i in range(start, start + n)],
            "event_time": (t0 + np.arange(start, start + n) * 0.01).tolist(),
            "source_id": [f"client-{i % 7}" for i in range(start, start + n)],
            "features": {
                **{k: x[i].tolist() for i, k in enumerate(NUMERIC)},
                "c0": np.array(LEVELS)[rng.choice(4, size=n, p=C0_P)].tolist(),
            },
            "prediction": {
                "label": np.where(p1 > 0.5, "yes", "no").tolist(),
                "probabilities": {"no": (1 - p1).tolist(), "yes": p1.tolist()},
            },
        }
    )


def small_ref(seed: int = 0, n: int = 300) -> Reference:
    rng = np.random.default_rng(seed)
    f = Frame.from_columns(
        event_id=np.arange(n).astype(str).astype(object),
        event_time=np.zeros(n),
        numeric={"x": rng.normal(size=n)},
        categorical={"c": rng.choice(np.array(["a", "b"], dtype=object), n)},
    )
    return Reference.from_frame(f, [FeatureSpec(name="x", kind="numeric"), FeatureSpec(name="c", kind="categorical")])


def big_ref(n: int = 5000, seed: int = 1) -> Reference:
    """5000 rows x 19 numeric + 1 segment feature: ~1.6 MB serialised (over Kafka's 1 MB default)."""
    rng = np.random.default_rng(seed)
    num = {f"x{i}": rng.normal(size=n) for i in range(19)}
    seg = rng.choice(np.array([f"s{i}" for i in range(8)], dtype=object), n)
    specs = [FeatureSpec(name=k, kind="numeric") for k in num] + [FeatureSpec(name="seg", kind="categorical")]
    f = Frame.from_columns(
        event_id=np.arange(n).astype(str).astype(object), event_time=np.zeros(n), numeric=num, categorical={"seg": seg}
    )
    return Reference.from_frame(f, specs, segments=["seg"])


# ----------------------------------------------------------------------------- pure helpers


def test_feature_summary_matches_numpy():
    rng = np.random.default_rng(3)
    n = 2000
    x = rng.gamma(2.0, size=n)
    x[:17] = np.nan
    c = np.array(["u", "v", "w"], dtype=object)[rng.choice(3, size=n, p=[0.6, 0.3, 0.1])]
    c[:5] = None
    specs = [
        FeatureSpec(name="x", kind="numeric"),
        FeatureSpec(name="c", kind="categorical"),
        FeatureSpec(name="s", kind="numeric", sensitive=True),
    ]
    f = Frame.from_columns(
        event_id=np.arange(n).astype(str).astype(object),
        event_time=np.zeros(n),
        numeric={"x": x, "s": rng.normal(size=n)},
        categorical={"c": c},
    )
    s = {d["name"]: d for d in feature_summary(Reference.from_frame(f, specs), specs)}
    ok = x[~np.isnan(x)]
    assert s["x"]["n"] == n - 17 and s["x"]["missing"] == 17
    assert s["x"]["mean"] == pytest.approx(np.nanmean(x)) and s["x"]["std"] == pytest.approx(np.nanstd(x, ddof=1))
    assert s["x"]["min"] == ok.min() and s["x"]["max"] == ok.max()
    for q, v in s["x"]["quantiles"].items():
        assert v == pytest.approx(np.nanpercentile(x, 100 * float(q)))
    vals, counts = np.unique(c[c != None].astype(str), return_counts=True)  # noqa: E711 - elementwise over an object array, independent of not_none()
    assert s["c"]["missing"] == 5 and s["c"]["categories"] == 3
    assert [t["value"] for t in s["c"]["top"]] == list(vals[np.argsort(-counts)])
    assert s["c"]["top"][0]["share"] == pytest.approx(counts.max() / (n - 5), abs=1e-4)
    assert s["s"]["withheld"] and "mean" not in s["s"] and "quantiles" not in s["s"]  # sensitive: counts only


def test_expectation_problems():
    specs = [
        FeatureSpec(name="x", kind="numeric", min=0, max=1, nullable=False),
        FeatureSpec(name="c", kind="categorical", allowed=["a", "b"]),
    ]
    f = Frame.from_columns(
        event_id=np.arange(5).astype(str).astype(object),
        event_time=np.zeros(5),
        numeric={"x": np.array([0.5, 2.0, -1.0, np.nan, 1.0])},
        categorical={"c": np.array(["a", "z", None, "b", "a"], dtype=object)},
    )
    got = expectation_problems(f, specs)
    assert got == [
        "x: 2 of 5 values (40.0%) outside [0.0, 1.0]",
        "x: 1 of 5 values missing, but the feature is not nullable",
        "c: 1 of 5 values ('z') not in the allowed categories",
    ]


def test_applicable_precedence():
    built = StoredReference("m", "1", b"b", "t", 0, (5, 0), 10, 1.0)
    every = StoredReference("m", ALL_VERSIONS, b"e", "", -1, (-1, -1), 10, 2.0, origin=ORIGIN_SET)
    mine = StoredReference("m", "1", b"s", "", -1, (-1, -1), 10, 3.0, origin=ORIGIN_SET)
    assert applicable({("m", "1"): built}, "m", "1") is built
    assert applicable({("m", "1"): built, ("m", "*"): every}, "m", "1") is every  # operator beats worker
    assert applicable({("m", "*"): every}, "m", "2") is every
    assert applicable({("m", "1"): mine, ("m", "*"): every}, "m", "1") is mine  # the version's own wins
    assert applicable({("m", "*"): every}, "k", "1") is None


class Rec:
    def __init__(self, key, value, offset=0, headers=()):
        self.key = key.encode() if isinstance(key, str) else key
        self.value, self.offset, self.headers = value, offset, list(headers)


def test_fold_assembles_chunks_and_rejects_incomplete_ones():
    blob = bytes(range(256)) * 40
    sha = hashlib.sha256(blob).hexdigest()
    parts = [blob[i : i + 4000] for i in range(0, len(blob), 4000)]
    manifest = json.dumps(
        {
            "format": "driftwatch-reference-manifest",
            "version": 1,
            "chunks": len(parts),
            "sha256": sha,
            "size": len(blob),
        }
    ).encode()
    h = [("dw-chunks", str(len(parts)).encode()), ("dw-origin", b"set"), ("dw-rows", b"7")]
    fold = _Fold()
    for i, p in enumerate(parts):
        fold.add(Rec(chunk_key("a/b", "1", sha, i), p))
    assert fold.add(Rec("a/b/1", manifest, headers=h)) == ("a/b", "1")  # model ids may contain "/"
    got = fold.get(("a/b", "1"))
    assert got.blob == blob and got.origin == ORIGIN_SET and got.rows == 7
    assert fold.chunk_keys(("a/b", "1")) == {chunk_key("a/b", "1", sha, i) for i in range(len(parts))}
    fold.add(Rec(chunk_key("a/b", "1", sha, 1), None))  # a chunk lost: the manifest is unusable, not half-used
    assert fold.get(("a/b", "1")) is None and "chunk 1 of 3 is missing" in fold.problems[("a/b", "1")]
    fold.add(Rec(chunk_key("a/b", "1", sha, 1), b"x" * len(parts[1])))  # corrupt
    assert fold.get(("a/b", "1")) is None and "SHA-256" in fold.problems[("a/b", "1")]


def test_cli_rejects_a_bad_file_before_touching_the_broker(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DRIFTWATCH_KAFKA_BOOTSTRAP", "127.0.0.1:9")  # nothing listens: must not be reached
    mon = write_monitors(tmp_path / "m.yaml", {"first_n": 1000})
    bad = tmp_path / "ref.csv"
    bad.write_text("x0,x1,x2,c0\n1,2,3,a\n")  # x3 missing
    assert cli(["reference", "set", "m", "--file", str(bad), "--monitors", str(mon)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "missing column(s) 'x3' (numeric)" in err
    bad.write_text("x0,x1,x2,x3,c0\n1,2,oops,4,a\n")
    assert cli(["reference", "set", "m", "--file", str(bad), "--monitors", str(mon)]) == 2
    assert "'x2' is numeric but row 1 holds the non-numeric value 'oops'" in capsys.readouterr().err
    assert cli(["reference", "set", "m", "--file", str(tmp_path / "nope.parquet"), "--monitors", str(mon)]) == 2
    assert "reference file not found" in capsys.readouterr().err
    assert cli(["reference", "set", "zz", "--file", str(bad), "--monitors", str(mon)]) == 2
    assert "model 'zz' is not in the monitor config" in capsys.readouterr().err
    bad.write_text("x0,x1,x2,x3,c0\n1,2,3,4,a\n99,2,3,4,q\n")
    assert cli(["reference", "set", "m", "--file", str(bad), "--monitors", str(mon), "--strict"]) == 2
    err = capsys.readouterr().err
    assert "x0: 1 of 2 values (50.0%) outside [-20.0, 20.0]" in err and "('q') not in the allowed" in err


# ----------------------------------------------------------------------------- the worker wires reference rows


@pytest.mark.parametrize("source", ["file", "first_n", "rolling"])
def test_every_reference_source_attaches_its_rows(source, tmp_path):
    """With the reference's rows attached, a model gets adversarial scores without ``warmup_events``."""
    from detectors.reference import reference_frame
    from streams.settings import Settings
    from streams.worker.deadletter import DeadLetterPublisher
    from streams.worker.decode import RawMessage
    from streams.worker.monitors import load_monitors
    from streams.worker.pipeline import Pipeline

    write_rows(tmp_path / "ref.csv", 1500, seed=2)
    ref_cfg = (
        {"file": "ref.csv"} if source == "file" else {"first_n": 1000} if source == "first_n" else {"rolling": True}
    )
    cfg = load_monitors(write_monitors(tmp_path / "m.yaml", ref_cfg))
    assert cfg.models[0].adversarial.warmup_events is None
    rng = np.random.default_rng(5)
    # a version per case: the adversarial evaluator keeps its fitted detectors per model version, process-wide
    version = f"{source}-{time.monotonic_ns()}"
    msgs = [RawMessage(batch(500 * i, 500, rng, 1.7e9, version), b"m", "t", 0, i, None) for i in range(5)]

    async def no_dead_letters(key, value, headers):
        raise AssertionError("no dead letters here")

    sink = CollectSink()
    p = Pipeline(Settings(), cfg, sink=sink, deadletters=DeadLetterPublisher(no_dead_letters))

    async def run():
        await p.process(msgs)
        await p.drain(timeout=120)

    asyncio.run(run())
    state = next(iter(p._tps[("t", 0)].streams.values()))
    adv = [r for r in sink.records if r.measurement == R.ADVERSARIAL]
    windows = [r for r in sink.records if r.measurement == R.WINDOW and "seq" in r.fields]  # the worker's
    assert len(windows) == 5
    evaluated = [w for w in windows if w.fields["drift_evaluated"]]
    assert {w.fields["reference"] for w in evaluated} == {source}
    # every window compared with a reference gets its adversarial point
    assert len(adv) == len(evaluated) == {"file": 5, "first_n": 3, "rolling": 4}[source]
    assert all(0 <= r.fields["score"] <= 1 and r.fields["n_events"] == 500 for r in adv)
    assert any(r.measurement == R.SOURCE for r in sink.records)  # per-source extraction records
    if source != "rolling":  # the reference keeps exactly its rows
        rows = reference_frame(state.reference)
        assert rows is not None and len(rows) == state.reference.n_rows == (1500 if source == "file" else 1000)


# ----------------------------------------------------------------------------- the store on the real broker


@pytest.mark.integration
def test_a_reference_over_1mb_is_chunked_and_round_trips(settings, consume_all):
    ensure_references_topic(settings)
    big, other = big_ref(), big_ref(seed=2)
    blob = big.to_bytes()
    assert len(blob) > PRODUCER_MAX_REQUEST  # > Kafka's default message and request limits
    seen: list = []

    async def main():
        store = ReferenceStore(settings)
        follower = ReferenceStore(settings)
        snap = asyncio.Event()

        async def on_snapshot(refs):
            seen.append(("snapshot", sorted(refs)))
            snap.set()

        async def on_change(k, stored):
            seen.append(("change", k, None if stored is None else stored.sha256))

        follow = asyncio.ensure_future(follower.follow(on_snapshot, on_change, poll_ms=200))
        try:
            await asyncio.wait_for(snap.wait(), 30)
            await store.save(
                StoredReference(
                    "big", "1", blob, "", -1, (-1, -1), big.n_rows, time.time(), origin=ORIGIN_SET, source="big.npz"
                )
            )
            reader = ReferenceStore(settings)  # another process reading it
            try:
                first = await reader.load()
            finally:
                await reader.close()
            await store.save(
                StoredReference(
                    "big",
                    "1",
                    other.to_bytes(),
                    "",
                    -1,
                    (-1, -1),
                    other.n_rows,
                    time.time(),
                    origin=ORIGIN_SET,
                    source="other.npz",
                )
            )
            second = await store.load()
            await store.reset("big", "1")
            third = await store.load()
            deadline = time.monotonic() + 15
            while (not seen or seen[-1] != ("change", ("big", "1"), None)) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        finally:
            follow.cancel()
            await asyncio.gather(follow, return_exceptions=True)
            await store.close()
            await follower.close()
        return first, second, third

    first, second, third = asyncio.run(main())
    got = first[("big", "1")]
    assert got.blob == blob and got.origin == ORIGIN_SET and got.source == "big.npz"
    back = got.reference()
    assert back.n_rows == 5000 and sorted(back.segments) == sorted(big.segments)
    np.testing.assert_array_equal(back.numeric["x3"].values, big.numeric["x3"].values)
    assert second[("big", "1")].source == "other.npz" and ("big", "1") not in third
    # a running follower saw the saves and the reset, in order, ending with the reset (changes that
    # arrive in one poll are reported once, as the key's latest state)
    writes = [
        ("change", ("big", "1"), hashlib.sha256(blob).hexdigest()),
        ("change", ("big", "1"), hashlib.sha256(other.to_bytes()).hexdigest()),
        ("change", ("big", "1"), None),
    ]
    assert seen[0] == ("snapshot", []) and seen[-1] == writes[-1], seen
    assert seen[1:] == [w for w in writes if w in seen[1:]], seen  # a subsequence, in write order
    # on the topic: no record near the 1 MB limit; the replaced and reset chunks are tombstoned
    recs = consume_all(settings, references_topic(settings), timeout=15, idle=2.0)
    assert max(len(r.value or b"") + len(r.key) for r in recs) <= 512 * 1024 + 200
    live: dict[bytes, bytes | None] = {}
    for r in recs:
        live[r.key] = r.value
    assert not [k for k, v in live.items() if k.startswith(CHUNK_PREFIX.encode()) and v is not None]
    assert sum(1 for r in recs if r.key.startswith(CHUNK_PREFIX.encode()) and r.value) == 8  # 4 + 4 chunks


@pytest.mark.integration
def test_worker_built_references_still_round_trip(settings):
    """The small, unchunked form (what workers store for first_n) and its stream position."""
    ensure_references_topic(settings)
    ref = small_ref()

    async def main():
        store = ReferenceStore(settings)
        try:
            await store.save(StoredReference("m", "2", ref.to_bytes(), "t.inferences", 3, (41, 7), ref.n_rows, 9.5))
            return await store.load()
        finally:
            await store.close()

    got = asyncio.run(main())[("m", "2")]
    assert got.origin == ORIGIN_FIRST_N and got.end_pos == (41, 7) and got.partition == 3 and got.created == 9.5
    assert got.reference().n_rows == 300


# ----------------------------------------------------------------------------- end to end with a worker


def _cli(monkeypatch, settings_env, capsys, *argv) -> tuple[int, str, str]:
    for k, v in settings_env.items():
        monkeypatch.setenv(k, v)
    code = cli(["reference", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.integration
@pytest.mark.slow  # with a running worker (~11 s)
def test_set_show_reset_with_a_running_worker(settings, settings_env, tmp_path, monkeypatch, capsys):
    """set → show → the running worker uses it (x0 drifts against it) → reset → rebuilt from the next events."""
    from kafka import KafkaProducer

    from streams.influx.sink import DatabaseNotFound, query
    from tests.reliability.helpers import wait_for, worker

    mon = write_monitors(tmp_path / "monitors.yaml", {"first_n": 1000})
    shifted = write_rows(tmp_path / "shifted.csv", 3000, seed=4, shift=3.0)
    rng = np.random.default_rng(8)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5, max_request_size=4 << 20)
    sent = [0]
    t0 = float(int(time.time()) - 3600)

    def send(n_batches: int) -> None:
        for _ in range(n_batches):
            producer.send(settings.topic_inferences, key=b"m", value=batch(sent[0], 500, rng, t0))
            sent[0] += 500
        producer.flush(30)

    def windows():
        try:
            rows = query(settings, 'SELECT "seq", "reference", "drift_evaluated" FROM "dw_window"')
        except DatabaseNotFound:
            return []
        return sorted(rows, key=lambda r: r["time"])

    def x0_drift() -> dict[int, int]:
        rows = query(settings, 'SELECT "drift" FROM "dw_drift" WHERE "feature" = \'x0\' AND "detector" = \'ks\'')
        return {r["time"]: int(r["drift"]) for r in rows}

    def n_windows(n):
        return lambda: True if len(windows()) >= n else len(windows())

    log = tmp_path / "worker.log"
    try:
        with worker(settings_env, mon, log) as proc:
            send(4)  # 1000 events build the reference, 2 windows are tested against it
            wait_for(n_windows(4), 120, "4 windows", [proc], log)

            code, out, err = _cli(
                monkeypatch,
                settings_env,
                capsys,
                "set",
                "m",
                "--version",
                "1",
                "--file",
                str(tmp_path / "shifted.csv"),
                "--monitors",
                str(mon),
            )
            assert code == 0, err
            assert "reference of m v1 set from" in out and "3000 rows" in out
            wait_for(
                lambda: "reference set by an operator" in log.read_text(), 30, "the worker to apply it", [proc], log
            )
            send(2)
            wait_for(n_windows(6), 60, "6 windows", [proc], log)

            code, out, err = _cli(
                monkeypatch, settings_env, capsys, "show", "m", "--version", "1", "--json", "--monitors", str(mon)
            )
            assert code == 0, err
            doc = json.loads(out)
            (shown,) = doc["references"]
            assert shown["origin"] == ORIGIN_SET and shown["rows"] == 3000
            assert shown["source"] == str((tmp_path / "shifted.csv").resolve()) and shown["created_utc"]
            x0 = next(f for f in shown["features"] if f["name"] == "x0")
            assert x0["mean"] == pytest.approx(shifted["x0"].mean())  # 3.0 +- noise
            assert x0["quantiles"]["0.5"] == pytest.approx(np.median(shifted["x0"]))
            c0 = next(f for f in shown["features"] if f["name"] == "c0")
            assert c0["top"][0]["value"] == "a" and c0["top"][0]["share"] == pytest.approx(
                np.mean(shifted["c0"] == "a"), abs=1e-4
            )
            assert len(out) < 10_000  # a summary, never the 3000 rows
            # the rows are stored beside it (for the row-based evaluators of a restarted worker), not shown
            assert shown["stored_rows"]["n"] == 3000 and shown["stored_rows"]["withheld"] == []
            code, text, _ = _cli(monkeypatch, settings_env, capsys, "show", "m", "--monitors", str(mon))
            assert "set by an operator" in text and "x0" in text and "row data 3000 rows" in text

            code, out, err = _cli(
                monkeypatch, settings_env, capsys, "reset", "m", "--version", "1", "--monitors", str(mon)
            )
            assert code == 0 and "reset m/1" in out, err
            wait_for(
                lambda: "reset to the configured source" in log.read_text(), 30, "the worker to reset", [proc], log
            )
            send(4)  # 1000 events rebuild the reference, 2 windows are tested against it
            wait_for(n_windows(10), 60, "10 windows", [proc], log)

            def rebuilt():
                c, o, _e = _cli(
                    monkeypatch, settings_env, capsys, "show", "m", "--version", "1", "--json", "--monitors", str(mon)
                )
                refs = json.loads(o)["references"] if c == 0 else []
                return (
                    True
                    if refs and refs[0]["origin"] == ORIGIN_FIRST_N and refs[0]["stored_rows"]["n"] == 1000
                    else refs
                )

            wait_for(rebuilt, 30, "the rebuilt reference in the store", [proc], log)
            adversarial = query(settings, f'SELECT "score" FROM "{R.ADVERSARIAL}"')
    finally:
        producer.close(10)
    wins = windows()
    assert [w["seq"] for w in wins] == list(range(10))
    kinds = [w["reference"] if w["drift_evaluated"] else "-" for w in wins]
    assert kinds == ["-", "-", "first_n", "first_n", "set", "set", "-", "-", "first_n", "first_n"], kinds
    drift = x0_drift()
    verdicts = [drift.get(w["time"]) for w in wins]
    # stationary traffic: no drift against its own first events; x0 drifts against the shifted file
    assert verdicts == [None, None, 0, 0, 1, 1, None, None, 0, 0], verdicts
    # adversarial scores from the first window with reference rows on (the detectors are fitted once
    # per model version and worker: the set/reset reference does not refit them)
    assert sorted(r["time"] for r in adversarial) == [w["time"] for w in wins[2:]]


@pytest.mark.integration
def test_a_worker_started_later_reads_the_set_reference(settings, settings_env, tmp_path, monkeypatch, capsys):
    """Restart path: a reference set for every version overrides the configured file; reset restores it."""
    from streams.worker.deadletter import DeadLetterPublisher
    from streams.worker.decode import RawMessage
    from streams.worker.monitors import load_monitors
    from streams.worker.pipeline import Pipeline

    write_rows(tmp_path / "ref.csv", 2000, seed=6)
    write_rows(tmp_path / "shifted.csv", 2000, seed=7, shift=3.0)
    mon = write_monitors(tmp_path / "m.yaml", {"file": "ref.csv"})
    cfg = load_monitors(mon)

    def run_worker(version: str) -> list:
        rng = np.random.default_rng(9)
        msgs = [RawMessage(batch(500 * i, 500, rng, 1.7e9, version), b"m", "t", 0, i, None) for i in range(2)]

        async def no_dead_letters(key, value, headers):
            raise AssertionError("no dead letters here")

        async def main():
            store = ReferenceStore(settings)
            sink = CollectSink()
            p = Pipeline(settings, cfg, sink=sink, deadletters=DeadLetterPublisher(no_dead_letters), references=store)
            try:
                await p.process(msgs)
                await p.drain(timeout=120)
            finally:
                await store.close()
            return sink.records

        return asyncio.run(main())

    def summary(records) -> list[tuple[str, int]]:
        wins = {r.time_ns: r.fields["reference"] for r in records if r.measurement == R.WINDOW and "seq" in r.fields}
        x0 = {
            r.time_ns: int(r.fields["drift"])
            for r in records
            if r.measurement == R.DRIFT and r.tags.get("feature") == "x0" and "segment" not in r.tags
        }
        return [(wins[t], x0[t]) for t in sorted(wins)]

    assert summary(run_worker("a")) == [("file", 0), ("file", 0)]
    code, out, err = _cli(
        monkeypatch, settings_env, capsys, "set", "m", "--file", str(tmp_path / "shifted.csv"), "--monitors", str(mon)
    )
    assert code == 0 and "every version" in out, err
    assert summary(run_worker("b")) == [("set", 1), ("set", 1)]  # x0 drifts against the shifted rows
    code, out, err = _cli(monkeypatch, settings_env, capsys, "reset", "m", "--monitors", str(mon))
    assert code == 0 and "reset m/*" in out, err
    assert summary(run_worker("c")) == [("file", 0), ("file", 0)]
    code, out, _ = _cli(monkeypatch, settings_env, capsys, "reset", "m", "--monitors", str(mon))
    assert code == 0 and "nothing stored for m" in out


@pytest.mark.integration
def test_show_says_one_thing_and_gives_the_summary_its_help_promises(
    settings, settings_env, tmp_path, monkeypatch, capsys
):
    """`reference show iris` once said both "not in the monitor config" and "workers use the configured
    source"; `reference show wine` (a file reference, nothing stored) printed no per-feature summary."""
    cols = write_rows(tmp_path / "ref.csv", 400, seed=3)
    mon = write_monitors(tmp_path / "monitors.yaml", {"file": "ref.csv"})
    code, out, err = _cli(monkeypatch, settings_env, capsys, "show", "iris", "--monitors", str(mon))
    assert code == 0, err
    assert "no worker monitors this model" in out and "workers use the configured source" not in out
    code, out, err = _cli(monkeypatch, settings_env, capsys, "show", "m", "--monitors", str(mon))
    assert code == 0 and "workers use the configured file" in out, err
    assert "configured reference (what workers build from the file): 400 rows" in out
    x0 = next(line for line in out.splitlines() if line.strip().startswith("x0 "))
    assert f"{np.mean(cols['x0']):.4g}" in x0  # the per-feature summary, checked against numpy
    assert any(line.strip().startswith("c0 ") for line in out.splitlines())
    code, out, err = _cli(monkeypatch, settings_env, capsys, "show", "m", "--monitors", str(mon), "--json")
    doc = json.loads(out)
    assert doc["configured"]["rows"] == 400 and {f["name"] for f in doc["configured"]["features"]} == {*NUMERIC, "c0"}
