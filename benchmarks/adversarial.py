"""``driftwatch bench adversarial``: do the adversarial scores tell attacks from benign traffic?

One in-process run on the demo's wine classifier (``streams.devstack.models.build_wine``:
standard-scaled logistic regression, 13 numeric inputs, 3 classes) with the
monitor config of ``streams/devstack/examples/demo.yaml``. The reference is 1,000 events
of the stationary demo stream with their predictions (what a ``first_n``
reference holds). The detectors are ``detectors.adversarial`` with default
settings, fitted once; every experiment runs on a copy of the fitted monitor,
window by window (``--window`` events), exactly as the worker calls it. The
attack traffic comes from ``streams.devstack.attacks`` (the same generators as the demo's
scenarios):

1. **extraction** — benign clients (natural demo traffic, lengths uniform in
   ``--benign-queries``, plus ``--long-sources`` clients of ``--long-queries``
   each) interleaved at random with extraction attackers (``--attack-queries``
   each; strategies ``jbda``, ``random-sign``, ``walk``). Reported: share of
   attackers flagged within 200 queries, queries to detection (median, p90),
   share of benign clients ever flagged.
2. **evasion** — ``--windows`` benign windows and as many evasion windows
   (``--evasion-share`` of the events are evasion attempts from one client, the
   rest benign), in random order. Reported: ROC AUC of the combined score
   (``sklearn.metrics.roc_auc_score``), per component too, and the share of
   windows flagged at ``alpha``.
3. **benign shift** — ``--shift-windows`` stationary windows, then as many
   windows where the normal clients (``--clients``, Zipf volumes) send only
   above-median-alcohol wines. Reported: share of windows with data drift
   (``detectors.univariate``, KS + chi-square, Bonferroni), adversarial flag
   rate, clients flagged.
4. **benign shifts** (``benign_shifts``) — the same on every kind of
   ``streams.devstack.attacks.BENIGN_SHIFTS`` (the demo's drift, a mean shift of three
   other inputs, a scale change, covariate shift toward the decision boundary,
   a new segment, a seasonal swing, a subpopulation, one client with an unusual
   mix), on the wine classifier and (all but toward-boundary) on the diabetes
   regressor, each monitor fitted on its own 1,000 stationary events. Reported
   per phase: drift rate (the inputs moved), adversarial flag rate and the
   components that raised it (``flagged_by``; ``score_ge_0.9_top_component``:
   close calls), the population low-margin and off-manifold rates against the
   reference, and the clients flagged by any component. None may flag.

Prints one JSON object (progress on stderr); ``done_when`` checks the issue's
criteria. ``--quick`` shrinks everything for smoke tests.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

STRATEGIES = ("jbda", "random-sign", "walk")


@dataclass
class Options:
    seed: int = 0
    window: int = 500
    reference: int = 1000
    benign_sources: int = 600
    benign_queries: tuple[int, int] = (100, 600)
    long_sources: int = 20
    long_queries: int = 2000
    attack_sources: int = 60
    attack_queries: int = 400
    strategies: tuple[str, ...] = STRATEGIES
    windows: int = 40
    evasion_share: float = 0.1
    shift_windows: int = 30
    clients: int = 100
    shift_models: tuple[str, ...] = ("wine", "diabetes")  # models the benign shifts run on
    rate: float = 200.0  # events/s, for event times (idle expiry)

    @classmethod
    def quick(cls, seed: int = 0) -> Options:
        return cls(
            seed=seed,
            benign_sources=150,
            long_sources=4,
            long_queries=1000,
            attack_sources=20,
            attack_queries=250,
            windows=12,
            shift_windows=10,
            clients=40,
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = Options()
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test): ~10x fewer events")
    parser.add_argument("--seed", type=int, default=d.seed, help="random seed (default 0)")
    parser.add_argument("--window", type=int, default=d.window, help="events per window (default 500, as the demo)")
    parser.add_argument("--benign-sources", type=int, help=f"benign clients (default {d.benign_sources})")
    parser.add_argument("--attack-sources", type=int, help=f"attackers per strategy (default {d.attack_sources})")
    parser.add_argument("--attack-queries", type=int, help=f"queries per attacker (default {d.attack_queries})")
    parser.add_argument(
        "--strategies", default=",".join(d.strategies), help=f"extraction strategies (default {','.join(d.strategies)})"
    )
    parser.add_argument("--windows", type=int, help=f"benign and evasion windows, each (default {d.windows})")
    parser.add_argument(
        "--evasion-share",
        type=float,
        default=d.evasion_share,
        help="share of an evasion window's events that are attacks (default 0.1)",
    )
    parser.add_argument(
        "--shift-windows", type=int, help=f"stationary and shifted windows, each (default {d.shift_windows})"
    )
    parser.add_argument("--clients", type=int, help=f"normal clients in the benign-shift run (default {d.clients})")
    parser.add_argument("--output", type=Path, help="also write the JSON to this file")


def options_from_args(args: argparse.Namespace) -> Options:
    o = Options.quick(args.seed) if args.quick else Options(seed=args.seed)
    o.window = args.window
    o.evasion_share = args.evasion_share
    o.strategies = tuple(s for s in args.strategies.split(",") if s)
    for name in ("benign_sources", "attack_sources", "attack_queries", "windows", "shift_windows", "clients"):
        v = getattr(args, name)
        if v is not None:
            setattr(o, name, v)
    bad = [s for s in o.strategies if s not in STRATEGIES]
    if bad:
        raise ValueError(f"unknown strategies {bad}; known: {', '.join(STRATEGIES)}")
    return o


def _log(msg: str) -> None:
    print(f"[bench adversarial] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- data


class World:
    """The demo model, its monitor config and helpers to turn inputs into frames."""

    def __init__(self, o: Options) -> None:
        from streams.devstack.models import EXAMPLES_DIR, build_diabetes, build_wine
        from streams.worker.monitors import load_monitors

        self.model = build_wine()
        self.models = {"wine": self.model, "diabetes": build_diabetes()}
        self._monitors = load_monitors(EXAMPLES_DIR / "demo.yaml")
        self.features = self.features_of(self.model)
        self.o = o

    def features_of(self, model) -> list:
        """The demo config's monitored features of a demo model."""
        return list(self._monitors.model(model.model_id).features)

    def frame(self, X: np.ndarray, sources: np.ndarray, t0: float = 0.0, model=None):
        """Events of ``X`` as the worker sees them: logged features and the model's predictions."""
        from detectors.frame import Frame

        m = model or self.model
        n = X.shape[0]
        cols = m.derive(X)
        pred = m.predict(X)
        out = (
            dict(
                pred_label=np.asarray(pred["label"], dtype=object),
                pred_proba=np.round(pred["proba"], 4),
                classes=tuple(m.classes),
            )
            if m.task == "classification"
            else dict(pred_value=pred["value"])
        )
        return Frame.from_columns(
            event_id=np.arange(n).astype(str).astype(object),
            event_time=t0 + np.arange(n) / self.o.rate,
            source_id=np.asarray(sources, dtype=object),
            numeric={k: np.asarray(v, dtype=np.float64) for k, v in cols.items() if k in m.numeric_features},
            categorical={k: np.asarray(v, dtype=object) for k, v in cols.items() if k in m.categorical},
            **out,
        )

    def clients(self, rng: np.random.Generator, n: int, k: int) -> np.ndarray:
        """``n`` client ids from ``k`` clients with Zipf-like volumes (as the demo)."""
        w = 1.0 / np.arange(1, k + 1)
        ids = np.array([f"client-{i + 1:03d}" for i in range(k)], dtype=object)
        return ids[rng.choice(k, n, p=w / w.sum())]


def _interleave(rng: np.random.Generator, lengths: np.ndarray) -> np.ndarray:
    """Global order of events of sources with the given lengths: random, each source's order kept.

    Returns, for each global position, the index into the concatenation of the sources'
    sequences (source 0's events first, in order, then source 1's, ...).
    """
    keys = rng.random(int(lengths.sum()))
    owner = np.repeat(np.arange(lengths.size), lengths)
    by_owner = np.lexsort((keys, owner))  # per owner, keys ascending
    sorted_keys = keys[by_owner]
    # the j-th event of a source gets that source's j-th smallest key
    return np.argsort(sorted_keys, kind="stable")


def _run_windows(mon, world: World, X: np.ndarray, sources: np.ndarray, t0: float = 0.0) -> list:
    frame = world.frame(X, sources, t0)
    w = world.o.window
    return [mon.evaluate(frame.take(slice(a, min(a + w, len(frame))))) for a in range(0, len(frame), w)]


# ----------------------------------------------------------------------------- experiments


def extraction_experiment(base, world: World, rng: np.random.Generator) -> dict[str, Any]:
    from streams.devstack.attacks import ExtractionAttack

    o, m = world.o, world.model
    mon = copy.deepcopy(base)
    names, seqs, kinds = [], [], []
    lo, hi = o.benign_queries
    for i in range(o.benign_sources):
        L = int(rng.integers(lo, hi + 1))
        seqs.append(m.sample(rng, L)[0])
        names.append(f"benign-{i:04d}")
        kinds.append("benign")
    for i in range(o.long_sources):
        seqs.append(m.sample(rng, o.long_queries)[0])
        names.append(f"long-{i:03d}")
        kinds.append("long")
    for s in o.strategies:
        for i in range(o.attack_sources):
            seeds, _ = m.sample(rng, 10)
            att = ExtractionAttack(
                m.estimator.predict, seeds, scale=m.std, strategy=s, step=0.1, rng=rng, finish=m.finish_inputs
            )
            seqs.append(att.take(o.attack_queries))
            names.append(f"{s}-{i:03d}")
            kinds.append(s)
    lengths = np.array([q.shape[0] for q in seqs])
    order = _interleave(rng, lengths)
    X = np.vstack(seqs)[order]
    src = np.repeat(np.array(names, dtype=object), lengths)[order]
    _log(f"extraction: {len(names)} sources, {X.shape[0]} events, {int(np.ceil(X.shape[0] / o.window))} windows")
    t = time.perf_counter()
    _run_windows(mon, world, X, src)
    elapsed = time.perf_counter() - t
    tr = mon.tracker
    first = np.array([tr.state(n)["first_flag"] if tr.state(n) else -1 for n in names])
    kinds_a = np.array(kinds)
    out: dict[str, Any] = {
        "sources": len(names),
        "events": int(X.shape[0]),
        "seconds": round(elapsed, 2),
        "events_per_s": round(X.shape[0] / elapsed),
        "delta": round(tr.calibration.delta, 4),
        "sources_evicted": tr.evicted,
        "state_bytes": tr.memory_bytes,
    }
    for s in o.strategies:
        f = first[kinds_a == s]
        det = f[f >= 0]
        out[s] = {
            "attackers": int(f.size),
            "queries_each": o.attack_queries,
            "detected_within_200": round(float(((f >= 0) & (f <= 200)).mean()), 4),
            "detected": round(float((f >= 0).mean()), 4),
            "queries_to_detection_median": float(np.median(det)) if det.size else None,
            "queries_to_detection_p90": float(np.quantile(det, 0.9)) if det.size else None,
        }
    b = first[kinds_a == "benign"]
    lengths_b = lengths[kinds_a == "benign"]
    out["benign"] = {
        "sources": int(b.size),
        "queries": [int(lo), int(hi)],
        "flagged": int((b >= 0).sum()),
        "false_positive_rate": round(float((b >= 0).mean()), 4),
        "flagged_by_length": {
            f"{a}-{z}": round(float((b[(lengths_b >= a) & (lengths_b < z)] >= 0).mean()), 4)
            for a, z in ((lo, (lo + hi) // 2), ((lo + hi) // 2, hi + 1))
        },
    }
    lg = first[kinds_a == "long"]
    if lg.size:
        out["benign_long"] = {
            "sources": int(lg.size),
            "queries_each": o.long_queries,
            "flagged": int((lg >= 0).sum()),
            "false_positive_rate": round(float((lg >= 0).mean()), 4),
        }
    return out


def evasion_experiment(base, world: World, rng: np.random.Generator) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    from streams.devstack.attacks import evasion

    o, m = world.o, world.model
    mon = copy.deepcopy(base)
    labels = rng.permutation(np.r_[np.zeros(o.windows, dtype=int), np.ones(o.windows, dtype=int)])
    k_att = int(round(o.window * o.evasion_share))
    scores, comps, flipped, steps, dist, eval_ms = [], [], [], [], [], []
    t = time.perf_counter()
    for i, lab in enumerate(labels):
        n_nat = o.window - k_att if lab else o.window
        X, _ = m.sample(rng, n_nat)
        src = world.clients(rng, n_nat, 20)
        if lab:
            start, _ = m.sample(rng, k_att)
            r = evasion(
                m.estimator, start, scale=m.std, step=0.05, max_steps=60, lo=m.lo, hi=m.hi, finish=m.finish_inputs
            )
            flipped.append(r.flipped.mean())
            steps.append(np.median(r.steps))
            dist.append(np.median(np.linalg.norm((r.X - start) / m.std, axis=1)))
            pos = np.sort(rng.choice(o.window, k_att, replace=False))
            mask = np.zeros(o.window, dtype=bool)
            mask[pos] = True
            Xw = np.empty((o.window, X.shape[1]))
            Xw[~mask], Xw[mask] = X, r.X
            sw = np.empty(o.window, dtype=object)
            sw[~mask], sw[mask] = src, "evader-1"
            X, src = Xw, sw
        f = world.frame(X, src, t0=i * o.window / o.rate)
        t1 = time.perf_counter()
        res = mon.evaluate(f)
        eval_ms.append(1000 * (time.perf_counter() - t1))
        scores.append(res.score)
        comps.append(
            {**{k: c.p_value for k, c in res.population.items()}, **{k: c.p_value for k, c in res.components.items()}}
        )
    elapsed = time.perf_counter() - t
    scores_a = np.array(scores)
    out: dict[str, Any] = {
        "windows": {"benign": int((labels == 0).sum()), "evasion": int(labels.sum())},
        "attack_share": o.evasion_share,
        "window": o.window,
        "seconds": round(elapsed, 2),
        "evaluate_ms_median": round(float(np.median(eval_ms)), 1),
        "auc": round(float(roc_auc_score(labels, scores_a)), 4),
        "flagged_evasion_windows": round(float((scores_a[labels == 1] > 1 - base.spec.alpha).mean()), 4),
        "flagged_benign_windows": round(float((scores_a[labels == 0] > 1 - base.spec.alpha).mean()), 4),
        "score_median": {
            "benign": round(float(np.median(scores_a[labels == 0])), 4),
            "evasion": round(float(np.median(scores_a[labels == 1])), 4),
        },
        "attack": {
            "flip_rate": round(float(np.mean(flipped)), 4),
            "steps_median": float(np.median(steps)),
            "perturbation_l2_std_median": round(float(np.median(dist)), 3),
        },
        "component_auc": {},
    }
    for name in ("outlier_source", "low_margin_source", "outlier", "low_margin"):
        p = np.array([c.get(name, np.nan) for c in comps])
        if np.isfinite(p).all():
            out["component_auc"][name] = round(float(roc_auc_score(labels, -np.log10(np.maximum(p, 1e-300)))), 4)
    return out


def shift_experiment(
    base, world: World, rng: np.random.Generator, ref_frame, kind: str = "subpopulation", model=None
) -> dict[str, Any]:
    """Stationary windows, then as many under the benign shift ``kind`` (``streams.devstack.attacks.BENIGN_SHIFTS``).

    Reported per phase: share of windows with data drift (the inputs moved), adversarial flag
    rate (must stay 0), the population rates against the reference (which drift raises), the
    components that raised a flag, and the clients flagged (extraction or a source contrast).
    """
    from detectors.reference import Reference
    from detectors.spec import DriftSpec
    from detectors.univariate import univariate_drift
    from streams.devstack.attacks import benign_shift_sample

    o = world.o
    m = model or world.model
    mon = copy.deepcopy(base)
    ref = Reference.from_frame(ref_frame, world.features_of(m))
    spec = DriftSpec()
    n_w = o.shift_windows
    rows: dict[str, list] = {"stationary": [], "shift": []}
    by: dict[str, dict[str, int]] = {"stationary": {}, "shift": {}}
    near: dict[str, dict[str, int]] = {"stationary": {}, "shift": {}}
    flagged_clients: dict[str, set] = {"stationary": set(), "shift": set()}
    seen: dict[str, set] = {"stationary": set(), "shift": set()}
    for i in range(2 * n_w):
        phase = "stationary" if i < n_w else "shift"
        src = world.clients(rng, o.window, o.clients)
        if phase == "stationary":
            X, _ = m.sample(rng, o.window)
        elif kind == "unusual-client":  # one heavy client's traffic changes; the rest stays as it was
            X, _ = m.sample(rng, o.window)
            own = rng.random(o.window) < 0.2
            X[own] = benign_shift_sample(m, kind, rng, int(own.sum()))[0]
            src[own] = "client-unusual"
        else:
            X, _ = benign_shift_sample(m, kind, rng, o.window, progress=(i - n_w + 0.5) / n_w)
        frame = world.frame(X, src, t0=i * o.window / o.rate, model=m)
        res = mon.evaluate(frame)
        drift = univariate_drift(frame, ref, spec)
        pop = res.population
        rows[phase].append(
            (
                bool(drift.drift),
                res.flagged,
                res.score,
                pop["outlier"].rate if "outlier" in pop else np.nan,
                pop["low_margin"].rate if "low_margin" in pop else np.nan,
            )
        )
        for name in res.flagged_by:
            by[phase][name] = by[phase].get(name, 0) + 1
        if res.score >= 0.9:  # close calls: which component came near the flag
            near[phase][res.top_component] = near[phase].get(res.top_component, 0) + 1
        seen[phase].update(res.sources.source.tolist())
        flagged_clients[phase].update(res.suspects)
    out: dict[str, Any] = {"kind": kind, "model": m.model_id, "clients": o.clients, "windows_each": n_w}
    for phase, r in rows.items():
        a = np.array(r, dtype=float)
        out[phase] = {
            "drift_rate": round(float(a[:, 0].mean()), 4),
            "adversarial_flag_rate": round(float(a[:, 1].mean()), 4),
            "score_median": round(float(np.median(a[:, 2])), 4),
            "score_max": round(float(np.max(a[:, 2])), 4),
            "outlier_rate_mean": round(float(np.nanmean(a[:, 3])), 4),
            "low_margin_rate_mean": round(float(np.nanmean(a[:, 4])), 4) if np.isfinite(a[:, 4]).any() else None,
            "flagged_by": by[phase],
            "score_ge_0.9_top_component": near[phase],
            "flagged_clients": sorted(flagged_clients[phase]),
            "client_flag_rate": round(len(flagged_clients[phase]) / max(1, len(seen[phase])), 4),
        }
        out[phase]["extraction_flagged_clients"] = len(flagged_clients[phase])  # (name kept for older readers)
    tr = mon.tracker
    out["max_queries_per_client"] = int(max((tr.state(c) or {"n_queries": 0})["n_queries"] for c in seen["shift"]))
    return out


def benign_shifts_experiment(world: World, rng_seed: int, fitted: dict) -> dict[str, Any]:
    """Every kind of :data:`streams.devstack.attacks.BENIGN_SHIFTS` on the wine classifier, and the demo's drift
    (and the kinds that apply to a regressor) on the diabetes model. ``fitted``: model id -> (monitor, reference)."""
    from streams.devstack.attacks import BENIGN_SHIFTS

    out: dict[str, Any] = {}
    for model_id, (mon, ref_frame) in fitted.items():
        m = world.models[model_id]
        for j, kind in enumerate(BENIGN_SHIFTS):
            if kind == "toward-boundary" and m.task != "classification":
                continue
            t = time.perf_counter()
            r = shift_experiment(mon, world, np.random.default_rng([rng_seed, 6, j, len(out)]), ref_frame, kind, m)
            r["seconds"] = round(time.perf_counter() - t, 2)
            out[f"{model_id}/{kind}"] = r
            _log(
                f"benign shift {model_id}/{kind}: flag rate {r['shift']['adversarial_flag_rate']}, "
                f"clients flagged {r['shift']['flagged_clients']}, drift {r['shift']['drift_rate']}"
            )
    return out


# ----------------------------------------------------------------------------- the run


def run_benchmark(o: Options) -> dict[str, Any]:
    from detectors.adversarial import AdversarialMonitor, AdversarialSpec

    t_all = time.perf_counter()

    world = World(o)
    m = world.model
    X_ref, _ = m.sample(np.random.default_rng([o.seed, 1]), o.reference)
    ref_frame = world.frame(X_ref, np.full(o.reference, None, dtype=object))
    spec = AdversarialSpec(seed=o.seed)
    t = time.perf_counter()
    base = AdversarialMonitor.fit(ref_frame, world.features, spec, task="classification")
    fit_s = time.perf_counter() - t
    _log(f"fitted in {fit_s:.1f} s (delta {base.calibration.delta:.3f})")
    ext = extraction_experiment(base, world, np.random.default_rng([o.seed, 2]))
    _log("extraction done")
    eva = evasion_experiment(base, world, np.random.default_rng([o.seed, 3]))
    _log("evasion done")
    sh = shift_experiment(base, world, np.random.default_rng([o.seed, 4]), ref_frame)
    _log("benign shift done")
    fitted = {"wine": (base, ref_frame)}
    if o.shift_models and "diabetes" in o.shift_models:
        d = world.models["diabetes"]
        Xd, _ = d.sample(np.random.default_rng([o.seed, 1]), o.reference)
        dref = world.frame(Xd, np.full(o.reference, None, dtype=object), model=d)
        fitted["diabetes"] = (AdversarialMonitor.fit(dref, world.features_of(d), spec, task="regression"), dref)
    shifts = benign_shifts_experiment(world, o.seed, fitted)
    shifts_quiet = all(
        r[phase]["adversarial_flag_rate"] == 0 and not r[phase]["flagged_clients"]
        for r in shifts.values()
        for phase in ("stationary", "shift")
    )
    main = o.strategies[0] if o.strategies else None
    done = {
        "extraction_detected_within_200_ge_0.9": bool(main and ext[main]["detected_within_200"] >= 0.9),
        "benign_sources_flagged_le_0.01": bool(ext["benign"]["false_positive_rate"] <= 0.01),
        "evasion_auc_ge_0.95": bool(eva["auc"] >= 0.95),
        "benign_shift_raises_drift": bool(sh["shift"]["drift_rate"] > 0.5),
        "benign_shift_no_extraction_flag": bool(sh["shift"]["extraction_flagged_clients"] == 0),
        "benign_shifts_flag_no_score_and_no_source": bool(shifts_quiet),
        "benign_shift_kinds_ge_5": bool(len({k.split("/")[1] for k in shifts}) >= 5),
    }
    return {
        "benchmark": "adversarial",
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(o).items()},
        "model": "wine (demo: scaled logistic regression, 13 numeric inputs, 3 classes)",
        "detectors": {
            "outlier": f"{spec.outlier.method} ({spec.outlier.engine})",
            "rate_test": spec.test,
            "alpha": spec.alpha,
            "extraction_fpr": spec.extraction.fpr,
            "extraction_focus": spec.extraction.focus,
        },
        "fit_seconds": round(fit_s, 2),
        "extraction": ext,
        "evasion": eva,
        "benign_shift": sh,
        "benign_shifts": shifts,
        "done_when": done,
        "elapsed_s": round(time.perf_counter() - t_all, 1),
    }


def run(args: argparse.Namespace) -> int:
    try:
        o = options_from_args(args)
    except ValueError as e:
        print(f"driftwatch bench adversarial: {e}", file=sys.stderr)
        return 2
    result = run_benchmark(o)
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return 0
