"""The de-identification policy a dataset carries (PS3.15 Annex E profile + options).

Pure data: no I/O. ``services/deid_policy.py`` finds a dataset's policy and secret;
``core/deid/engine.py`` applies it to one instance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Profile(StrEnum):
    """What a dataset does to every instance on the way in."""

    basic = "basic"  # PS3.15 Annex E Basic Application Level Confidentiality Profile + options
    eucaim = "eucaim"  # output compatible with EUCAIM's LETHE pipeline (RSNA CTP script)
    none = "none"  # data arrives already de-identified; must be chosen explicitly


class Option(StrEnum):
    """PS3.15 Annex E options (E.3.x) a ``basic`` policy may switch on; CID 7050 code in CODES."""

    retain_long_full_dates = "retain-longitudinal-full-dates"
    retain_long_modified_dates = "retain-longitudinal-modified-dates"
    retain_patient_characteristics = "retain-patient-characteristics"
    retain_device_identity = "retain-device-identity"
    retain_institution_identity = "retain-institution-identity"
    retain_uids = "retain-uids"
    retain_safe_private = "retain-safe-private"
    clean_descriptors = "clean-descriptors"
    clean_structured_content = "clean-structured-content"
    clean_graphics = "clean-graphics"


# CID 7050 De-identification Method (scheme DCM)
BASIC_PROFILE_CODE = "113100"
CODES: dict[Option, str] = {
    Option.clean_graphics: "113103",
    Option.clean_structured_content: "113104",
    Option.clean_descriptors: "113105",
    Option.retain_long_full_dates: "113106",
    Option.retain_long_modified_dates: "113107",
    Option.retain_patient_characteristics: "113108",
    Option.retain_device_identity: "113109",
    Option.retain_uids: "113110",
    Option.retain_safe_private: "113111",
    Option.retain_institution_identity: "113112",
}


class BurnedIn(StrEnum):
    """What happens to an instance that may carry burned-in identifying text."""

    refuse = "refuse"  # default: the part fails with a clear reason
    quarantine = "quarantine"  # held out of the index for an administrator
    clean = "clean"  # OCR + redaction (only where the engine supports it)


class PolicyError(ValueError):
    """A policy that cannot be applied (unknown option, incompatible combination)."""


@dataclass(frozen=True)
class DeidPolicy:
    profile: Profile = Profile.basic
    options: frozenset[Option] = frozenset()
    provider_id: str | None = None  # EUCAIM SITE-ID; eucaim writes sha256-hex(provider_id)
    burned_in: BurnedIn = BurnedIn.refuse

    def __post_init__(self) -> None:
        if self.profile is not Profile.basic and self.options:
            raise PolicyError(f"options apply to the basic profile only, not {self.profile}")
        both = {Option.retain_long_full_dates, Option.retain_long_modified_dates}
        if both <= self.options:
            raise PolicyError("choose one of the two Retain Longitudinal options, not both")

    @property
    def active(self) -> bool:
        return self.profile is not Profile.none

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"profile": self.profile.value, "burnedIn": self.burned_in.value}
        if self.options:
            body["options"] = sorted(o.value for o in self.options)
        if self.provider_id is not None:
            body["providerId"] = self.provider_id
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> DeidPolicy:
        try:
            return cls(
                profile=Profile(body.get("profile", "basic")),
                options=frozenset(Option(o) for o in body.get("options", ())),
                provider_id=body.get("providerId"),
                burned_in=BurnedIn(body.get("burnedIn", "refuse")),
            )
        except ValueError as exc:
            raise PolicyError(str(exc)) from exc


@dataclass
class DeidRecord:
    """What de-identification did to one instance: names of attributes, never values."""

    profile: str
    options: list[str]
    edition: str  # the PS3.15 edition the rule table comes from, e.g. "2025b"
    changed: list[str] = field(default_factory=list)  # keywords or tags (gggg,eeee)
    removed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "options": self.options,
            "edition": self.edition,
            "changed": self.changed,
            "removed": self.removed,
            "added": self.added,
        }


class BurnedInSuspected(Exception):
    """The instance may carry burned-in identifying text and the policy does not clean it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
