"""One pseudonym secret per dataset: the key of its de-identification hashes (PatientID, UIDs).

Secrets live in the shared database when there is one (``server.security.shared_secrets``),
else in ``<data dir>/pseudonym-secrets/`` (a 0700 folder), one 0600 file per
dataset, ``dataset-<id>``, plus ``no-dataset`` for instances stored without one. They
are written atomically under a lock shared by every process (as the signing keys in
:mod:`server.security.keys`), created once and never changed: a new secret would give
the same patient another pseudonym, so rotation means a new dataset.

A secret is generated in LETHE's format (UUIDv7 hex + a Luhn mod-16 check digit,
``server.core.deid.ctp.generate_secret``) when none is given. A given secret is accepted
in LETHE's format (so a site keeps the pseudonyms LETHE gave it) or, for secrets made
for RSNA CTP directly, when it has at least 32 printable ASCII characters, no spaces at
either end (CTP trims them, so two spellings would mean one key) and at least 12
distinct characters. Secrets are never logged and never part of an error message.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from server.core.deid.ctp import generate_secret, valid_secret
from server.security.keys import _ensure_private_dir, _locked, _write_private
from server.security.shared_secrets import SharedSecrets

SECRET_DIR = "pseudonym-secrets"
NO_DATASET = "no-dataset"
MIN_LENGTH = 32
MIN_DISTINCT = 12
_DATASET_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_FILE = re.compile(r"^(dataset-[A-Za-z0-9\-.]{1,64}|no-dataset)$")


class SecretError(ValueError):
    """A secret that is refused (its message never contains the secret)."""


class SecretConflict(SecretError):
    """The dataset already has another secret (secrets never change)."""


def check_secret(secret: str) -> None:
    """Accept a LETHE-format secret, or a strong CTP one (see the module docstring)."""
    if valid_secret(secret):
        return
    if (
        len(secret) < MIN_LENGTH
        or secret != secret.strip()
        or not secret.isascii()
        or not secret.isprintable()
        or len(set(secret)) < MIN_DISTINCT
    ):
        raise SecretError(
            "the pseudonym secret is refused: give a LETHE secret (33 hex characters with "
            f"its check digit) or at least {MIN_LENGTH} printable ASCII characters "
            f"(at least {MIN_DISTINCT} different ones, no spaces at either end)"
        )


def is_secret_file(name: str) -> bool:
    """Names of the files this module writes (backup classifies them as keys)."""
    return bool(_FILE.match(name))


class PseudonymSecrets:
    """The pseudonym secrets under one data directory."""

    def __init__(self, data_dir: Path, shared: SharedSecrets | None = None) -> None:
        self.directory = Path(data_dir) / SECRET_DIR
        self.shared = shared  # the shared database's secrets instead of files

    def close(self) -> None:
        if self.shared is not None:
            self.shared.close()

    def path(self, dataset: str | None) -> Path:
        if dataset is None:
            return self.directory / NO_DATASET
        if not _DATASET_ID.match(dataset):
            raise SecretError(f"{dataset[:70]!r} is not a dataset id")
        return self.directory / f"dataset-{dataset}"

    def read(self, dataset: str | None) -> str | None:
        """The dataset's secret, or None if it has none yet."""
        path = self.path(dataset)
        if self.shared is not None:
            value = self.shared.read(f"{SECRET_DIR}/{path.name}")
            return None if value is None else value.decode("utf-8")
        if not path.exists():
            return None
        _refuse_shared(path)
        return path.read_text(encoding="utf-8")

    def get_or_create(self, dataset: str | None, given: str | None = None) -> tuple[str, bool]:
        """(secret, created): the stored secret, else ``given`` (checked) or a new one.

        A ``given`` secret different from the stored one raises SecretConflict.
        """
        if given is not None:
            check_secret(given)
        path = self.path(dataset)
        stored = self.read(dataset)
        if stored is None and self.shared is not None:
            secret = given if given is not None else generate_secret()
            value, created = self.shared.get_or_create(
                f"{SECRET_DIR}/{path.name}", lambda: secret.encode("utf-8")
            )
            stored = value.decode("utf-8")
            if created:
                return stored, True
        if stored is None:
            _ensure_private_dir(self.directory)
            with _locked(self.directory):
                stored = self.read(dataset)
                if stored is None:
                    secret = given if given is not None else generate_secret()
                    _write_private(path, secret.encode("utf-8"))
                    return secret, True
        if given is not None and given != stored:
            raise SecretConflict(
                f"{_name(dataset)} already has a pseudonym secret and it never changes "
                "(rotation means a new dataset)"
            )
        return stored, False

    def remove(self, dataset: str | None) -> None:
        """Forget a secret this process just created for a write that then failed."""
        if self.shared is not None:
            self.shared.remove(f"{SECRET_DIR}/{self.path(dataset).name}")
            return
        with _locked(self.directory):
            self.path(dataset).unlink(missing_ok=True)


def _name(dataset: str | None) -> str:
    return "the dataset-less store" if dataset is None else f"dataset {dataset}"


def _refuse_shared(path: Path) -> None:
    if os.name != "posix":
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SecretError(
            f"pseudonym secret file {path} is accessible by group or other users "
            f"(mode {mode:o}); restrict it with: chmod 600 {path}"
        )
