"""One exception root: every public exception class in the packages derives from DriftwatchError.

The classes are found by reading the source (any ``class X(...)`` whose base names an error),
so a new exception class that forgets the root fails here, naming its module.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from detectors import errors as E

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("detectors", "streams", "dashboard")
_ERROR_WORDS = ("Error", "Exception", "Unavailable", "Failure", "Exhausted", "Mismatch")


def _declared_exceptions() -> list[tuple[str, str]]:
    """(module, class) of every public top-level class whose base looks like an exception."""
    out = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in tree.body:
                if not isinstance(node, ast.ClassDef) or node.name.startswith("_"):
                    continue
                bases = [ast.unparse(b) for b in node.bases]
                if any(any(w in b for w in _ERROR_WORDS) for b in bases):
                    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
                    out.append((module, node.name))
    return out


DECLARED = _declared_exceptions()


def test_found_the_known_exceptions() -> None:
    names = {c for _, c in DECLARED}
    # a sample across the three packages: the scan works (else every check below passes vacuously)
    assert {
        "ReferenceDataError",
        "WindowEvaluationError",
        "ConfigError",
        "TopicError",
        "InfluxQueryError",
        "AccessError",
    } <= names
    assert len(DECLARED) >= 27


@pytest.mark.parametrize(("module", "name"), DECLARED, ids=[f"{m}.{c}" for m, c in DECLARED])
def test_every_exception_has_the_root(module: str, name: str) -> None:
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, E.DriftwatchError), f"{module}.{name} does not derive from DriftwatchError"


def test_one_engine_unavailable() -> None:
    from detectors.adversarial.outlier import EngineUnavailable as a
    from detectors.multivariate import EngineUnavailable as b

    assert a is b is E.EngineUnavailable


def test_families_keep_their_builtin_bases() -> None:
    """Handlers written before the root (``except ValueError``) still catch what they caught."""
    for fam in (E.ConfigurationError, E.InvalidInputError):
        assert issubclass(fam, ValueError)
    for fam in (E.EngineUnavailable, E.DetectorFailure, E.ServiceError, E.StorageError):
        assert issubclass(fam, RuntimeError)
    from detectors.reference import ReferenceDataError
    from streams.worker.monitors import ConfigError

    with pytest.raises(ValueError):
        raise ReferenceDataError("x")
    with pytest.raises(E.ConfigurationError):
        raise ConfigError("x")


def test_errors_module_imports_nothing() -> None:
    """The SDK and the dashboard import it: no numpy, no streams."""
    tree = ast.parse(Path(E.__file__).read_text())
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert all(isinstance(n, ast.ImportFrom) and n.module == "__future__" for n in imports)
