"""Optional login and per-user model lists.

Three modes (``DRIFTWATCH_DASHBOARD_AUTH``, default ``auto``):

``none``
    no login (the default for the local stack, which binds 127.0.0.1 only).
``password``
    a login form. A shared password (``DRIFTWATCH_DASHBOARD_PASSWORD`` or
    ``DRIFTWATCH_DASHBOARD_PASSWORD_FILE``) lets anyone who knows it in; users
    listed in the access file with a ``password_hash`` can log in as themselves.
``oidc``
    Streamlit's ``st.login`` (OpenID Connect) as configured in the ``[auth]``
    section of ``.streamlit/secrets.toml``; needs ``Authlib>=1.3.2`` (the
    ``oidc`` extra: ``pip install 'driftwatch[oidc]'``). Without it the login
    page says what to install and lets nobody in (:func:`authlib_problem`). The
    user is ``st.user.email`` (else ``name``/``sub``).

``auto`` picks ``password`` when a password (or a user with a ``password_hash``)
is configured, ``oidc`` when secrets have an ``[auth]`` section, else ``none``.

The access file (``DRIFTWATCH_DASHBOARD_ACCESS``, YAML) says which models each
user may see; names match case-insensitively, model entries are glob patterns::

    users:
      alice@example.com: {models: ["*"]}
      bob@example.com:   {models: [churn, "fraud-*"]}
      carol: {models: [churn], password_hash: "pbkdf2_sha256$600000$…"}
    default_models: []   # everyone else, including shared-password and anonymous users

A shared-password login proves only that someone knows the password, so it gets
``default_models``, never a named user's list; per-user lists apply to users
who proved who they are (their own password hash, or OIDC). Without an access
file every logged-in user sees every model. Make a hash with
``python -m dashboard.auth hash``.

>>> acc = Access(users={"bob": ("churn", "fraud-*")}, default_models=())
>>> acc.allowed("Bob", ["churn", "fraud-eu", "ranker"])
['churn', 'fraud-eu']
>>> acc.allowed(None, ["churn"])
[]
>>> verify_password("s3cret", hash_password("s3cret", iterations=1000))
True
"""

from __future__ import annotations

import base64
import fnmatch
import getpass
import hashlib
import hmac
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HASH_SCHEME = "pbkdf2_sha256"
HASH_ITERATIONS = 600_000


class AccessError(ValueError):
    """The access file is unreadable or malformed (the message says where)."""


def hash_password(password: str, *, iterations: int = HASH_ITERATIONS, salt: bytes | None = None) -> str:
    """``pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>`` of a password."""
    salt = salt or os.urandom(16)
    dk = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    b64 = lambda b: base64.b64encode(b).decode().rstrip("=")  # noqa: E731
    return f"{HASH_SCHEME}${iterations}${b64(salt)}${b64(dk)}"


def verify_password(password: str, hashed: str) -> bool:
    """Constant-time check of a password against :func:`hash_password`'s output."""
    try:
        scheme, iters, salt_b64, hash_b64 = hashed.split("$")
        if scheme != HASH_SCHEME:
            return False
        pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
        salt, want = base64.b64decode(pad(salt_b64)), base64.b64decode(pad(hash_b64))
        got = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, int(iters))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


#: what Streamlit's ``st.login`` needs (``streamlit[auth]`` asks for the same)
AUTHLIB_MIN = (1, 3, 2)
OIDC_EXTRA = "oidc"


def authlib_problem() -> str | None:
    """Why OIDC login cannot work in this Python environment (Authlib missing or too old),
    or None when it can.

    >>> authlib_problem() in (None, "Authlib is not installed") or authlib_problem().endswith("too old")
    True
    """
    try:
        import authlib  # noqa: PLC0415
    except ImportError:
        return "Authlib is not installed"
    version = str(getattr(authlib, "__version__", "0"))
    parts = []
    for p in version.split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    if tuple(parts) < AUTHLIB_MIN:
        return f"Authlib {version} is too old"
    return None


def oidc_install_hint(problem: str) -> str:
    """The message for an OIDC login that cannot work: what is wrong and what to install.

    >>> "driftwatch[oidc]" in oidc_install_hint("Authlib is not installed")
    True
    """
    need = ".".join(map(str, AUTHLIB_MIN))
    return (f"OIDC login is configured, but {problem}: Streamlit's `st.login` needs Authlib>={need}. "
            f"Install the dashboard's OIDC extra — `pip install 'driftwatch[{OIDC_EXTRA}]'` "
            f"(or `pip install 'Authlib>={need}'`) — and restart the dashboard. Until then nobody can log in.")


def check_shared(password: str, expected: str) -> bool:
    """Constant-time comparison with the shared password."""
    return hmac.compare_digest(password.encode(), expected.encode())


@dataclass(frozen=True)
class Access:
    """Who may see which models (see the module docstring). ``users`` maps a
    lower-cased user name to model patterns; ``hashes`` to password hashes."""

    users: dict[str, tuple[str, ...]] = field(default_factory=dict)
    default_models: tuple[str, ...] = ()
    hashes: dict[str, str] = field(default_factory=dict)

    def patterns(self, user: str | None) -> tuple[str, ...]:
        if user is not None and user.lower() in self.users:
            return self.users[user.lower()]
        return self.default_models

    def allowed(self, user: str | None, models: Iterable[str]) -> list[str]:
        """The models ``user`` may see (``None``: an unnamed user), in the given order."""
        pats = self.patterns(user)
        return [m for m in models if any(fnmatch.fnmatchcase(m, p) for p in pats)]

    def password_hash(self, user: str) -> str | None:
        return self.hashes.get(user.lower())


def load_access(path: Path | str) -> Access:
    """Read and check an access file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise AccessError(f"{path}: cannot read the dashboard access file: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise AccessError(f"{path}: not valid YAML: {e}") from None
    return parse_access(data, str(path))


def parse_access(data: Any, source: str = "<access>") -> Access:
    """Check already-parsed YAML (see the module docstring for the shape)."""
    if not isinstance(data, dict):
        raise AccessError(f"{source}: expected a mapping with 'users' and 'default_models'")
    unknown = set(data) - {"users", "default_models"}
    if unknown:
        raise AccessError(f"{source}: unknown keys {sorted(unknown)} (expected users, default_models)")

    def model_list(v: Any, where: str) -> tuple[str, ...]:
        if v is None:
            return ()
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise AccessError(f"{source}: {where}: expected a list of model names or patterns")
        return tuple(v)

    users: dict[str, tuple[str, ...]] = {}
    hashes: dict[str, str] = {}
    raw_users = data.get("users") or {}
    if not isinstance(raw_users, dict):
        raise AccessError(f"{source}: users: expected a mapping of user -> {{models: [...]}}")
    for name, entry in raw_users.items():
        entry = entry or {}
        if not isinstance(entry, dict) or set(entry) - {"models", "password_hash"}:
            raise AccessError(f"{source}: users.{name}: expected {{models: [...], password_hash: ...}}")
        users[str(name).lower()] = model_list(entry.get("models"), f"users.{name}.models")
        if entry.get("password_hash"):
            h = str(entry["password_hash"])
            if not h.startswith(HASH_SCHEME + "$"):
                raise AccessError(f"{source}: users.{name}.password_hash: make it with `python -m dashboard.auth hash`")
            hashes[str(name).lower()] = h
    return Access(users, model_list(data.get("default_models"), "default_models"), hashes)


def resolve_mode(settings: Any, access: Access | None, secrets_have_auth: bool) -> str:
    """The effective login mode for ``settings.dashboard_auth``.

    >>> class S: dashboard_auth = "auto"; dashboard_password = None
    >>> resolve_mode(S(), None, False), resolve_mode(S(), None, True)
    ('none', 'oidc')
    """
    mode = getattr(settings, "dashboard_auth", "auto")
    if mode != "auto":
        return mode
    if getattr(settings, "dashboard_password", None) is not None or (access and access.hashes):
        return "password"
    if secrets_have_auth:
        return "oidc"
    return "none"


def main(argv: list[str] | None = None) -> int:
    """``python -m dashboard.auth hash``: print a password hash for the access file."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] != ["hash"]:
        print("usage: python -m dashboard.auth hash   (reads the password from the terminal or stdin)")
        return 2
    pw = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    if not pw:
        print("empty password", file=sys.stderr)
        return 1
    print(hash_password(pw))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
