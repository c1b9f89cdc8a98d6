"""The ``dataset-deidentification`` extension of a dataset's ResearchStudy (pure, no I/O).

One complex extension carries the dataset's de-identification policy
(``profiles/StructureDefinition-dataset-deidentification.json``)::

    {"url": ".../dataset-deidentification", "extension": [
        {"url": "profile", "valueCode": "basic"},
        {"url": "option", "valueCode": "retain-uids"},        (0..*, basic only)
        {"url": "providerId", "valueString": "SITE-ID"},      (eucaim: required)
        {"url": "burnedIn", "valueCode": "refuse"}]}

The policy is set once: :func:`settle` gives a written ResearchStudy the stored policy
when it omits the extension, the default policy when it never had one, and refuses
a different one (rotation means a new dataset).
"""

from __future__ import annotations

from typing import Any

from server.core.deid.policy import BurnedIn, DeidPolicy, Option, PolicyError, Profile

URL = "https://cancer-imaging-gateway.eu/fhir/StructureDefinition/dataset-deidentification"
MAX_PROVIDER_ID = 256


class PolicyConflict(Exception):
    """A write would change a dataset's policy (or pseudonym secret), which is fixed."""


def find(resource: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Every ``dataset-deidentification`` extension of ``resource`` (0 or 1 when valid)."""
    if not isinstance(resource, dict):
        return []
    extensions = resource.get("extension")
    if not isinstance(extensions, list):
        return []
    return [e for e in extensions if isinstance(e, dict) and e.get("url") == URL]


def policy_of(resource: dict[str, Any] | None) -> DeidPolicy | None:
    """The policy a ResearchStudy carries, or None if it carries none (PolicyError if invalid)."""
    found = find(resource)
    if not found:
        return None
    if len(found) > 1:
        raise PolicyError("a dataset carries one dataset-deidentification extension, not several")
    return parse(found[0])


def parse(extension: dict[str, Any]) -> DeidPolicy:
    """The policy of one extension; PolicyError names what is wrong."""
    if any(str(k).startswith("value") for k in extension):  # complex: no value[x]
        raise PolicyError("dataset-deidentification has sub-extensions, not a value")
    values: dict[str, list[Any]] = {}
    for sub in extension.get("extension") or []:
        if not isinstance(sub, dict):
            raise PolicyError("dataset-deidentification: a sub-extension is not an object")
        name = sub.get("url")
        key = {"profile": "valueCode", "option": "valueCode", "burnedIn": "valueCode",
               "providerId": "valueString"}.get(str(name))  # fmt: skip
        if key is None:
            raise PolicyError(f"dataset-deidentification: unknown sub-extension {name!r}")
        if not isinstance(sub.get(key), str):
            raise PolicyError(f"dataset-deidentification: {name} needs a {key}")
        values.setdefault(str(name), []).append(sub[key])
    for name in ("profile", "providerId", "burnedIn"):
        if len(values.get(name, [])) > 1:
            raise PolicyError(f"dataset-deidentification: {name} is given more than once")
    if not values.get("profile"):
        raise PolicyError("dataset-deidentification: profile (basic, eucaim or none) is required")
    return build(
        values["profile"][0],
        values.get("option", []),
        (values.get("providerId") or [None])[0],
        (values.get("burnedIn") or [BurnedIn.refuse.value])[0],
    )


def build(profile: str, options: list[str], provider_id: str | None, burned_in: str) -> DeidPolicy:
    """A checked policy from its parts (PolicyError with a message fit for the caller)."""
    try:
        chosen = Profile(profile)
    except ValueError:
        raise PolicyError(
            f"unknown de-identification profile {profile!r}; use one of {_names(Profile)}"
        ) from None
    opts = set()
    for option in options:
        try:
            opts.add(Option(option))
        except ValueError:
            raise PolicyError(
                f"unknown de-identification option {option!r}; use one of {_names(Option)}"
            ) from None
    if len(opts) != len(options):
        raise PolicyError("a de-identification option is given more than once")
    try:
        burned = BurnedIn(burned_in)
    except ValueError:
        raise PolicyError(
            f"unknown burned-in policy {burned_in!r}; use one of {_names(BurnedIn)}"
        ) from None
    check_provider_id(chosen, provider_id)
    return DeidPolicy(chosen, frozenset(opts), provider_id, burned)


def check_provider_id(profile: Profile, provider_id: str | None) -> None:
    if profile is Profile.eucaim and provider_id is None:
        raise PolicyError(
            "the eucaim profile needs the provider id (the EUCAIM SITE-ID): "
            "InstitutionName becomes its SHA-256, as LETHE writes it"
        )
    if provider_id is None:
        return
    if profile is not Profile.eucaim:
        raise PolicyError(f"a provider id applies to the eucaim profile only, not {profile}")
    if (
        not provider_id
        or provider_id != provider_id.strip()
        or len(provider_id) > MAX_PROVIDER_ID
        or not provider_id.isprintable()
    ):
        raise PolicyError(
            f"the provider id must be 1-{MAX_PROVIDER_ID} printable characters "
            "without leading or trailing spaces"
        )


def extension(policy: DeidPolicy) -> dict[str, Any]:
    """The canonical extension of ``policy`` (options sorted, burnedIn always written)."""
    subs: list[dict[str, Any]] = [{"url": "profile", "valueCode": policy.profile.value}]
    subs += [{"url": "option", "valueCode": o} for o in sorted(o.value for o in policy.options)]
    if policy.provider_id is not None:
        subs.append({"url": "providerId", "valueString": policy.provider_id})
    subs.append({"url": "burnedIn", "valueCode": policy.burned_in.value})
    return {"url": URL, "extension": subs}


def with_policy(resource: dict[str, Any], policy: DeidPolicy) -> dict[str, Any]:
    """``resource`` carrying exactly ``policy`` (other extensions kept, in their order)."""
    kept = [e for e in resource.get("extension") or [] if not _is_ours(e)]
    return {**resource, "extension": [*kept, extension(policy)]}


def settle(
    written: dict[str, Any], stored: dict[str, Any] | None, default: DeidPolicy
) -> dict[str, Any]:
    """The ResearchStudy to store when ``written`` replaces ``stored`` (None: a new dataset).

    No extension in ``written``: the stored policy (or ``default``) is kept. A policy
    different from the stored one raises PolicyConflict; an invalid one PolicyError.
    ``stored`` may be the last content of a deleted dataset: its id keeps its policy.
    """
    current = policy_of(stored) if stored is not None else None
    if stored is not None and current is None:
        current = default  # stored before datasets carried policies: the default applied
    wanted = policy_of(written)
    if wanted is None:
        wanted = current or default
        if wanted.profile is Profile.eucaim and wanted.provider_id is None:
            raise PolicyError(
                "the default de-identification profile is eucaim, which needs a provider id: "
                "give this dataset its policy (profile eucaim with its providerId)"
            )
    elif current is not None and wanted != current:
        raise PolicyConflict(
            f"the de-identification policy of dataset {written.get('id')} is "
            f"{describe(current)} and cannot be changed to {describe(wanted)}: "
            "a policy (and its pseudonym secret) is fixed for the life of a dataset id; "
            "rotation means a new dataset"
        )
    return with_policy(written, wanted)


def describe(policy: DeidPolicy) -> str:
    """One line for people: ``basic (retain-uids; burned-in: refuse)``, ``none (...)``."""
    parts = sorted(o.value for o in policy.options)
    if policy.provider_id is not None:
        parts.append(f"provider {policy.provider_id}")
    parts.append(f"burned-in: {policy.burned_in.value}")
    return f"{policy.profile.value} ({'; '.join(parts)})"


def _is_ours(ext: Any) -> bool:
    return isinstance(ext, dict) and ext.get("url") == URL


def _names(enum: Any) -> str:
    return ", ".join(m.value for m in enum)
