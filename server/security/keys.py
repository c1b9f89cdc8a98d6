"""RFC 7517 sections 4-5: the gateway's own token signing keys, as JSON Web Keys.

Keys live in ``<data dir>/keys/``, one private JWK (JSON) per file, readable by
the owner only. Each file is named ``<created>-<kid>.json`` where ``created`` is
a nanosecond timestamp, so the newest key is the last one in name order. The
``kid`` is the key's RFC 7638 thumbprint.

Rotation adds a key: the newest key signs, every key kept verifies, so tokens
signed before a rotation stay valid until they expire. Another process holding
the same directory sees a rotated key only after it loads the keys again.

Beside the signing keys lives the installation secret (``keys/installation-secret``,
32 random bytes, 0600), from which :class:`InstallationSecret` derives the keys of
keyed hashes and sealed tokens (pseudonymous Patient ids, paging cursors). It is
created once and must be kept (and backed up) with the data: a new secret changes
every Patient id, so the index has to be rebuilt (``imaging-gateway reindex``).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from server.storage.permissions import file_lock

if TYPE_CHECKING:
    from server.security.shared_secrets import SharedSecrets

SigningKey = ECKey | RSAKey
SHARED_KEYS = "signing-keys"  # their name in the shared database (a JSON list of JWKs)

# alg -> how to generate a key for it: (kty, curve or RSA modulus size)
GENERATE: dict[str, tuple[str, str | int]] = {
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "RS256": ("RSA", 2048),
    "RS384": ("RSA", 2048),
    "PS256": ("RSA", 2048),
}
EC_ALG_FOR_CURVE = {"P-256": "ES256", "P-384": "ES384"}
RSA_ALGS = frozenset({"RS256", "RS384", "PS256"})
MIN_RSA_BITS = 2048

KEY_DIR = "keys"
SECRET_FILE = "installation-secret"
SECRET_BYTES = 32
FILE_MODE = 0o600
DIR_MODE = 0o700
_CHECK_MODES = os.name == "posix"


class SigningKeys:
    """The gateway's token signing keys (RFC 7517): created on first start in the data dir, or loaded."""

    def __init__(self, keys: list[tuple[SigningKey, str]], directory: Path | None = None) -> None:
        """``keys`` is oldest first as (private key, alg); the last one signs."""
        if not keys:
            raise ValueError("at least one signing key is needed")
        self._keys = list(keys)
        self._directory = directory
        self._key_set = self._public_set()

    # ------------------------------------------------------------------ loading

    @classmethod
    def load_or_create(cls, directory: Path, alg: str = "ES256") -> SigningKeys:
        """Load the keys under ``directory/keys``; create one for ``alg`` if there is none.

        A key is also created when the newest stored key is for another alg, so
        changing the configured alg rotates to a key of the new kind.
        """
        if alg not in GENERATE:
            raise ValueError(
                f"cannot create signing keys for alg {alg!r}; use one of {sorted(GENERATE)}"
            )
        key_dir = Path(directory) / KEY_DIR
        _ensure_private_dir(key_dir)
        with _locked(key_dir):
            keys = [_read_key_file(path, thumbprint_kid=True) for path in _key_files(key_dir)]
            loaded = [(key, key_alg) for found in keys for key, key_alg in found]
            if not loaded or loaded[-1][1] != alg:
                key = _generate(alg)
                _write_key_file(key_dir, key, _next_stamp(key_dir))
                loaded.append((key, alg))
        return cls(loaded, key_dir)

    @classmethod
    def load_or_create_shared(cls, secrets: SharedSecrets, alg: str = "ES256") -> SigningKeys:
        """The keys in the shared database (every replica signs with the newest), created
        or rotated to ``alg`` as :meth:`load_or_create` does with files."""
        if alg not in GENERATE:
            raise ValueError(
                f"cannot create signing keys for alg {alg!r}; use one of {sorted(GENERATE)}"
            )

        def settle(current: bytes | None) -> bytes:
            stored = json.loads(current) if current else []
            if stored and stored[-1].get("alg") == alg:
                return current or b""
            key = _generate(alg)
            stored.append({**key.as_dict(private=True), "alg": alg, "use": "sig"})
            return json.dumps(stored, sort_keys=True).encode("utf-8")

        data, _ = secrets.settle(SHARED_KEYS, settle)
        source = Path("database:" + SHARED_KEYS)
        return cls([_import(item, source, True) for item in json.loads(data)])

    @classmethod
    def from_jwk_file(cls, path: Path) -> SigningKeys:
        """Use a configured private JWK (or JWK Set) file; the set's last key signs.

        The file must not be readable by group or other users.
        """
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"signing key file {path} does not exist")
        return cls(_read_key_file(path, thumbprint_kid=False))

    # ------------------------------------------------------------------ use

    @property
    def signing_kid(self) -> str:
        """The kid of the key that signs new tokens."""
        return _kid(self._keys[-1][0])

    @property
    def signing_alg(self) -> str:
        return self._keys[-1][1]

    @property
    def kids(self) -> list[str]:
        """Every kid, oldest first."""
        return [_kid(key) for key, _ in self._keys]

    @property
    def key_set(self) -> KeySet:
        """The public keys, for verifying what this gateway signed."""
        return self._key_set

    def jwks(self) -> dict[str, Any]:
        """RFC 7517 section 5 JWK Set of the public keys, newest first."""
        return {"keys": [dict(key.as_dict(private=False)) for key in reversed(self._key_set.keys)]}

    def sign(self, claims: dict[str, Any], *, typ: str = "JWT") -> str:
        """A compact JWS (RFC 7515 section 7.1) over ``claims`` with the newest key."""
        key, alg = self._keys[-1]
        header = {"alg": alg, "kid": _kid(key), "typ": typ}
        return jwt.encode(header, dict(claims), key, algorithms=[alg])

    def rotate(self) -> None:
        """Add a new key of the current signing alg; it signs from now on, older keys still verify."""
        if self._directory is None:
            raise RuntimeError("a configured signing key is rotated by replacing its file")
        alg = self.signing_alg
        key = _generate(alg)
        with _locked(self._directory):
            _write_key_file(self._directory, key, _next_stamp(self._directory))
        self._keys.append((key, alg))
        self._key_set = self._public_set()

    def _public_set(self) -> KeySet:
        public: list[Any] = []
        for key, alg in self._keys:
            data = key.as_dict(private=False)
            data.update({"kid": _kid(key), "alg": alg, "use": "sig"})
            public.append(type(key).import_key(data))
        return KeySet(public)


class InstallationSecret:
    """The installation's own secret, and the purpose-bound keys derived from it."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < SECRET_BYTES:
            raise ValueError(f"an installation secret has at least {SECRET_BYTES} bytes")
        self._secret = bytes(secret)

    @classmethod
    def load_or_create(cls, directory: Path, new: bytes | None = None) -> InstallationSecret:
        """The secret in ``directory/keys/installation-secret``, created (0600) on first use
        from ``new`` (default: 32 random bytes)."""
        key_dir = Path(directory) / KEY_DIR
        _ensure_private_dir(key_dir)
        path = key_dir / SECRET_FILE
        with _locked(key_dir):
            if not path.exists():
                _write_private(path, new if new is not None else os.urandom(SECRET_BYTES))
        _refuse_shared(path)
        return cls(path.read_bytes())

    @classmethod
    def load_or_create_shared(cls, secrets: SharedSecrets) -> InstallationSecret:
        """The installation secret in the shared database, created on first use."""
        value, _ = secrets.get_or_create(SECRET_FILE, lambda: os.urandom(SECRET_BYTES))
        return cls(value)

    def patient_id_key(self) -> bytes:
        """The key of pseudonymous Patient ids (server.core.fhir.imaging.patient_id)."""
        return self.derive("patient-id")

    def derive(self, purpose: str) -> bytes:
        """A 32-byte key for one purpose: HMAC-SHA256(secret, purpose); purposes never share keys."""
        return hmac.new(self._secret, b"gateway-key:" + purpose.encode(), hashlib.sha256).digest()


def patient_id_key(data_dir: Path, database_url: str | None = None) -> bytes:
    """The patient-id key of the installation whose data directory is ``data_dir`` (or
    whose shared database is ``database_url``)."""
    return installation_secret(data_dir, database_url).patient_id_key()


def installation_secret(data_dir: Path, database_url: str | None = None) -> InstallationSecret:
    """The installation secret: in the shared database if there is one, else a file."""
    if not database_url:
        return InstallationSecret.load_or_create(data_dir)
    from server.security.shared_secrets import SharedSecrets

    secrets = SharedSecrets(database_url)
    try:
        return InstallationSecret.load_or_create_shared(secrets)
    finally:
        secrets.close()


# ---------------------------------------------------------------------- helpers


def _kid(key: SigningKey) -> str:
    kid = key.kid
    if kid is None:
        key.ensure_kid()
        kid = key.kid
    assert kid is not None
    return kid


def _generate(alg: str) -> SigningKey:
    kty, size = GENERATE[alg]
    key: SigningKey
    if kty == "EC":
        key = ECKey.generate_key(str(size), parameters={"alg": alg, "use": "sig"})
    else:
        key = RSAKey.generate_key(int(size), parameters={"alg": alg, "use": "sig"})
    key.ensure_kid()
    return key


def _alg_for(key: SigningKey, declared: Any, source: Path) -> str:
    if isinstance(key, ECKey):
        expected = EC_ALG_FOR_CURVE.get(key.curve_name)
        if expected is None:
            raise ValueError(f"{source}: curve {key.curve_name} is not supported for signing")
        if declared not in (None, expected):
            raise ValueError(f"{source}: alg {declared!r} does not fit curve {key.curve_name}")
        return expected
    bits = key.public_key.key_size
    if bits < MIN_RSA_BITS:
        raise ValueError(f"{source}: RSA keys need at least {MIN_RSA_BITS} bits, this has {bits}")
    if declared is None:
        return "RS256"
    if declared not in RSA_ALGS:
        raise ValueError(f"{source}: alg {declared!r} is not accepted for RSA keys")
    return str(declared)


def _import(data: Any, source: Path, thumbprint_kid: bool) -> tuple[SigningKey, str]:
    if not isinstance(data, dict):
        raise ValueError(f"{source}: not a JSON Web Key")
    kty = data.get("kty")
    if kty not in ("EC", "RSA"):
        raise ValueError(f"{source}: key type {kty!r} cannot sign tokens; use an EC or RSA key")
    try:
        key: SigningKey = ECKey.import_key(data) if kty == "EC" else RSAKey.import_key(data)
    except (JoseError, TypeError, KeyError, ValueError) as error:
        raise ValueError(f"{source}: not a usable JSON Web Key ({error})") from error
    if not key.is_private:
        raise ValueError(f"{source}: holds a public key; a private key is needed to sign")
    if data.get("use") not in (None, "sig"):
        raise ValueError(f"{source}: key is meant for use {data.get('use')!r}, not signing")
    alg = _alg_for(key, data.get("alg"), source)
    params = {k: v for k, v in data.items() if k not in ("kid", "alg", "use", "key_ops")}
    keep_kid = not thumbprint_kid and bool(data.get("kid"))
    kid = str(data["kid"]) if keep_kid else key.thumbprint()
    params.update({"kid": kid, "alg": alg, "use": "sig"})
    key = type(key).import_key(params)
    return key, alg


def _read_key_file(path: Path, *, thumbprint_kid: bool) -> list[tuple[SigningKey, str]]:
    _refuse_shared(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{path}: cannot read the key file ({error})") from error
    if isinstance(data, dict) and isinstance(data.get("keys"), list):
        found = [_import(item, path, thumbprint_kid) for item in data["keys"]]
        if not found:
            raise ValueError(f"{path}: the key set is empty")
        return found
    return [_import(data, path, thumbprint_kid)]


def _refuse_shared(path: Path) -> None:
    if not _CHECK_MODES:
        return
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(
            f"signing key file {path} is accessible by group or other users "
            f"(mode {stat.S_IMODE(mode):o}); restrict it with: chmod 600 {path}"
        )


def _ensure_private_dir(key_dir: Path) -> None:
    key_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if _CHECK_MODES and stat.S_IMODE(key_dir.stat().st_mode) != DIR_MODE:
        key_dir.chmod(DIR_MODE)


def _key_files(key_dir: Path) -> list[Path]:
    return sorted(p for p in key_dir.glob("*.json") if p.is_file())


def _next_stamp(key_dir: Path) -> int:
    stamp = time.time_ns()
    for path in _key_files(key_dir):
        head = path.stem.split("-", 1)[0]
        if head.isdigit():
            stamp = max(stamp, int(head) + 1)
    return stamp


def _write_key_file(key_dir: Path, key: SigningKey, stamp: int) -> Path:
    target = key_dir / f"{stamp:020d}-{_kid(key)}.json"
    body = json.dumps(key.as_dict(private=True), indent=2, sort_keys=True).encode("utf-8")
    _write_private(target, body)
    return target


def _write_private(target: Path, body: bytes) -> None:
    """Write ``body`` to ``target`` atomically, readable by the owner only."""
    partial = target.parent / f".{target.name}.partial"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise


def _locked(key_dir: Path) -> contextlib.AbstractContextManager[None]:
    """Serialise key creation between processes sharing the directory (POSIX only)."""
    return file_lock(key_dir / ".lock")
