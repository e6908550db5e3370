"""NannyML's side of ``driftwatch bench real``; runs inside the benchmark's own virtualenv.

NannyML's pins clash with driftwatch's venv (alibi-detect needs numpy<2), so
``benchmarks/real.py`` creates a virtualenv for it under its state folder and
runs this file there as a subprocess: ``python real_nannyml.py JOB.json OUT.json``.
It imports nothing from driftwatch. The job names, per stream, a Parquet file of
the replayed events (features, model outputs, labels), the reference size and
the chunk size (= driftwatch's window); for each stream it runs, with NannyML's
defaults and its chunk-based thresholds:

* ``UnivariateDriftCalculator`` over every feature (fitted on the reference
  rows, calculated on the rest): per analysis chunk, whether any feature alerts
  and how many;
* ``CBPE`` (classification streams with labels; ``accuracy``, isotonic
  calibration on the reference): the estimated accuracy per analysis chunk.

Writes one JSON object: ``{stream: {"univariate": {...}, "cbpe": {...},
"seconds": s}}`` (an ``"error"`` string instead where NannyML failed).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
import warnings

os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")  # no usage analytics from the benchmark


def _univariate(nml, ref, ana, job: dict) -> dict:
    feats = job["numeric"] + job["categorical"]
    calc = nml.UnivariateDriftCalculator(
        column_names=feats, treat_as_categorical=job["categorical"] or None, chunk_size=job["window"]
    )
    calc.fit(ref)
    df = calc.calculate(ana).filter(period="analysis").to_df(multilevel=False)
    alert_cols = [c for c in df.columns if c.endswith("_alert") and not c.startswith("chunk")]
    alerts = df[alert_cols].fillna(False).astype(bool)
    starts = df["chunk_start_index"].astype(int).tolist() if "chunk_start_index" in df.columns else []
    return {
        "methods": sorted({c[len(f) + 1 : -len("_alert")] for c in alert_cols for f in feats if c.startswith(f + "_")}),
        "chunk_start_index": starts,
        "alert": alerts.any(axis=1).astype(int).tolist(),
        "n_alerts": alerts.sum(axis=1).astype(int).tolist(),
    }


def _cbpe(nml, ref, ana, job: dict) -> dict:
    classes = job["classes"]
    if len(classes) == 2:
        est = nml.CBPE(
            metrics=["accuracy"],
            y_pred_proba="p_" + classes[1],
            y_pred="y_pred_int",
            y_true="y_true_int",
            problem_type="classification_binary",
            chunk_size=job["window"],
        )
    else:
        est = nml.CBPE(
            metrics=["accuracy"],
            y_pred_proba={c: "p_" + c for c in classes},
            y_pred="y_pred",
            y_true="y_true",
            problem_type="classification_multiclass",
            chunk_size=job["window"],
        )
    est.fit(ref)
    df = (
        est.estimate(ana.drop(columns=["y_true", "y_true_int"], errors="ignore"))
        .filter(period="analysis")
        .to_df(multilevel=False)
    )
    return {
        "chunk_start_index": df["chunk_start_index"].astype(int).tolist() if "chunk_start_index" in df.columns else [],
        "estimated_accuracy": [float(v) for v in df["accuracy_value"]],
        "alert": df["accuracy_alert"].fillna(False).astype(int).tolist() if "accuracy_alert" in df.columns else [],
    }


def main(job_path: str, out_path: str) -> int:
    warnings.filterwarnings("ignore")
    import nannyml as nml
    import pandas as pd

    with open(job_path) as f:
        jobs = json.load(f)
    out: dict = {"nannyml_version": nml.__version__}
    for job in jobs:
        t0 = time.perf_counter()
        res: dict = {}
        try:
            df = pd.read_parquet(job["path"])
            for c in job["categorical"]:
                df[c] = df[c].astype("object")
            if job["classes"] and len(job["classes"]) == 2:
                df["y_pred_int"] = (df["y_pred"] == job["classes"][1]).astype(int)
                if "y_true" in df.columns:
                    df["y_true_int"] = (df["y_true"] == job["classes"][1]).astype(int)
            ref, ana = df.iloc[: job["ref_n"]].copy(), df.iloc[job["ref_n"] :].reset_index(drop=True)
            res["univariate"] = _univariate(nml, ref, ana, job)
            if job["classes"] and "y_true" in df.columns:
                res["cbpe"] = _cbpe(nml, ref, ana, job)
        except Exception as e:  # reported per stream, the others go on
            res["error"] = f"{type(e).__name__}: {e}"
            res["traceback"] = traceback.format_exc()[-2000:]
        res["seconds"] = round(time.perf_counter() - t0, 2)
        out[job["name"]] = res
        print(
            f"[nannyml] {job['name']}: {res['seconds']} s{' ERROR ' + res['error'] if 'error' in res else ''}",
            file=sys.stderr,
            flush=True,
        )
    with open(out_path, "w") as f:
        json.dump(out, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1], sys.argv[2]))
