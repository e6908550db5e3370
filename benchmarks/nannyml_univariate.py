"""NannyML's univariate drift (its default thresholds) on episodes exported by benchmarks.thresholds_real.

Runs under an interpreter that has NannyML (a separate virtualenv: its pins clash with
alibi-detect's): ``/path/to/nannyml-venv/bin/python benchmarks/nannyml_univariate.py DIR``.
Input: one .npz per episode in DIR (``ref``, ``win_0``, ``win_1``, ...); output on stdout,
JSON: episode -> NannyML method -> one alert flag per window (any feature alerted).
"""

import glob
import json
import sys

import nannyml as nml
import numpy as np
import pandas as pd

out = {}
for path in sorted(glob.glob(sys.argv[1] + "/*.npz")):
    d = np.load(path)
    ref = d["ref"]
    wins = [d[k] for k in sorted((k for k in d.files if k.startswith("win_")), key=lambda k: int(k[4:]))]
    w = wins[0].shape[0]
    cols = [f"x{i}" for i in range(ref.shape[1])]
    ref_df = pd.DataFrame(ref, columns=cols)
    ana_df = pd.DataFrame(np.concatenate(wins), columns=cols)
    res = {}
    for method in ("jensen_shannon", "kolmogorov_smirnov", "wasserstein", "hellinger"):
        calc = nml.UnivariateDriftCalculator(column_names=cols, continuous_methods=[method], chunk_size=w)
        calc.fit(ref_df)
        r = calc.calculate(ana_df).filter(period="analysis").to_df()
        alerts = np.zeros(len(wins), dtype=bool)
        for c in cols:
            a = r[(c, method, "alert")].to_numpy(dtype=bool)
            alerts[: len(a)] |= a[: len(wins)]
        res[method] = alerts.tolist()
    out[path.split("/")[-1][:-4]] = res
print(json.dumps(out))
