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

Guessing is throttled (:class:`Throttle`): after ``free`` failed logins in a row for
one user name, or from one client address, that name/address is locked out for a
while that doubles with each further failure; a locked-out attempt is refused without
looking at the password (the right one too). A login for an unknown user costs the
same PBKDF2 work as one for a known user (:func:`check_login` verifies against a dummy
hash with the access file's iteration count), so the time does not tell which names
exist. Failures are counted and logged with the name and address, never the password.
"""

from __future__ import annotations

import base64
import fnmatch
import getpass
import hashlib
import hmac
import os
import secrets
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from detectors.errors import ConfigurationError
from streams.retry import Backoff

HASH_SCHEME = "pbkdf2_sha256"
HASH_ITERATIONS = 600_000


class AccessError(ConfigurationError):
    """The access file is unreadable or malformed (the message says where)."""


def hash_password(password: str, *, iterations: int = HASH_ITERATIONS, salt: bytes | None = None) -> str:
    """``pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>`` of a password."""
    salt = salt or os.urandom(16)
    dk = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)

    def b64(b):
        return base64.b64encode(b).decode().rstrip("=")

    return f"{HASH_SCHEME}${iterations}${b64(salt)}${b64(dk)}"


def verify_password(password: str, hashed: str) -> bool:
    """Constant-time check of a password against :func:`hash_password`'s output."""
    try:
        scheme, iters, salt_b64, hash_b64 = hashed.split("$")
        if scheme != HASH_SCHEME:
            return False

        def pad(s):
            return s + "=" * (-len(s) % 4)

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
        import authlib
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
    return (
        f"OIDC login is configured, but {problem}: Streamlit's `st.login` needs Authlib>={need}. "
        f"Install the dashboard's OIDC extra — `pip install 'driftwatch[{OIDC_EXTRA}]'` "
        f"(or `pip install 'Authlib>={need}'`) — and restart the dashboard. Until then nobody can log in."
    )


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


_access_cache: dict[str, tuple[float, tuple[int, int], Access | AccessError]] = {}
_access_lock = threading.Lock()
#: how long a read access file is reused (it is also re-read as soon as its mtime or size changes)
ACCESS_CACHE_SECONDS = 2.0


def cached_access(path: Path | str, ttl: float = ACCESS_CACHE_SECONDS) -> Access:
    """:func:`load_access`, re-read when the file changed or after ``ttl`` seconds.

    Every dashboard rerun (full or auto-refresh) asks for the current access list, so a
    revoked model disappears within ``ttl`` seconds of the edit at the latest; reading
    the file on each of a busy dashboard's reruns is what the cache saves.
    """
    key = str(Path(path).resolve())
    try:
        st_ = os.stat(key)
        stamp = (st_.st_mtime_ns, st_.st_size)
    except OSError:
        stamp = (-1, -1)
    now = time.monotonic()
    with _access_lock:
        hit = _access_cache.get(key)
        if hit is not None and hit[1] == stamp and now - hit[0] < ttl:
            found = hit[2]
        else:
            try:
                found = load_access(key)
            except AccessError as e:
                found = e
            _access_cache[key] = (now, stamp, found)
    if isinstance(found, AccessError):
        raise found
    return found


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


# Guessing ---------------------------------------------------------------------------------

_dummy_hashes: dict[int, str] = {}
_dummy_lock = threading.Lock()


def _iterations(hashed: str) -> int | None:
    try:
        return int(hashed.split("$")[1])
    except (IndexError, ValueError):
        return None


def dummy_hash(iterations: int = HASH_ITERATIONS) -> str:
    """A hash of a random password with ``iterations`` rounds (made once per count), to
    verify unknown users against so that they cost as much time as known ones."""
    with _dummy_lock:
        if iterations not in _dummy_hashes:
            _dummy_hashes[iterations] = hash_password(secrets.token_urlsafe(24), iterations=iterations)
        return _dummy_hashes[iterations]


def check_login(access: Access | None, name: str, password: str, shared: str | None) -> tuple[bool, bool]:
    """``(ok, named)`` for a login form's ``name``/``password``, in constant work.

    A known name is checked against its own hash; an unknown or empty name against a
    dummy hash with the same iteration count as the access file's hashes (the largest),
    so every attempt costs one PBKDF2 run whether or not the name exists. ``named`` is
    True when the user's own password matched; otherwise the shared password (if any)
    is compared in constant time.

    >>> acc = Access(users={"bob": ("*",)}, hashes={"bob": hash_password("pw", iterations=1000)})
    >>> check_login(acc, "Bob", "pw", None), check_login(acc, "eve", "pw", "pw"), check_login(acc, "eve", "x", "pw")
    ((True, True), (True, False), (False, False))
    """
    hashed = access.password_hash(name) if (access is not None and name) else None
    own: bool
    if hashed is None:
        counts = [n for n in (_iterations(h) for h in (access.hashes.values() if access else ())) if n]
        own = verify_password(password, dummy_hash(max(counts) if counts else HASH_ITERATIONS)) and False
    else:
        own = verify_password(password, hashed)
    if own:
        return True, True
    if shared is not None and check_shared(password, shared):
        return True, False
    return False, False


@dataclass
class _Record:
    failures: int = 0
    locked_until: float = 0.0
    last: float = 0.0


class Throttle:
    """Failed-login counts per key (``"user:<name>"``, ``"addr:<ip>"``) and lockouts.

    The first ``free`` failures in a row cost nothing extra; each further failure locks
    the key for ``base`` seconds, doubling up to ``cap``. A success clears the keys it
    used; a key with no failure for ``forget`` seconds starts over. Thread-safe (every
    browser session runs its script on its own thread).

    >>> th = Throttle(free=2, base=10, cap=60)
    >>> [th.failed(["user:a"], now=0.0) for _ in range(4)]
    [0.0, 0.0, 10.0, 20.0]
    >>> th.wait(["user:a", "addr:x"], now=5.0), th.wait(["user:b"], now=5.0)
    (15.0, 0.0)
    """

    def __init__(
        self, free: int = 5, base: float = 30.0, cap: float = 900.0, forget: float = 3600.0, max_keys: int = 100_000
    ) -> None:
        self.free, self.base, self.cap, self.forget, self.max_keys = free, base, cap, forget, max_keys
        self._backoff = Backoff(base, cap)
        self._records: dict[str, _Record] = {}
        self._lock = threading.Lock()

    def wait(self, keys: Iterable[str], now: float | None = None) -> float:
        """Seconds until any of ``keys`` may try again (0: now)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            return max([0.0, *(r.locked_until - now for k in keys if (r := self._records.get(k)))])

    def failed(self, keys: Iterable[str], now: float | None = None) -> float:
        """Count a failure for each key; return the resulting lockout in seconds (0: none)."""
        now = time.monotonic() if now is None else now
        longest = 0.0
        with self._lock:
            if len(self._records) > self.max_keys:  # someone cycling names: forget the stale ones
                for k in [k for k, r in self._records.items() if now - r.last > self.forget or r.locked_until < now]:
                    del self._records[k]
            for k in keys:
                r = self._records.setdefault(k, _Record())
                if now - r.last > self.forget:
                    r.failures = 0
                r.failures += 1
                r.last = now
                if r.failures > self.free:
                    lock = float(self._backoff.delay(r.failures - self.free))
                    r.locked_until = max(r.locked_until, now + lock)
                    longest = max(longest, lock)
        return longest

    def failures(self, key: str) -> int:
        with self._lock:
            r = self._records.get(key)
            return r.failures if r else 0

    def succeeded(self, keys: Iterable[str]) -> None:
        with self._lock:
            for k in keys:
                self._records.pop(k, None)

    def reset(self) -> None:
        with self._lock:
            self._records.clear()


#: the dashboard process's login throttle (all sessions share it)
THROTTLE = Throttle()


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
