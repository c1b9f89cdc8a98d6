"""The data-holder view: who pushes into a dataset may read it back, without an agreement.

A data-access agreement is how a *data user* gets access to a dataset. The organisation
that holds the data - its clients that push into the dataset (``clients add --store``),
the dataset's curators (``--curate``) - and administrators must be able to verify what
they pushed (search, metadata, retrieve) without writing an agreement to themselves.

These grants are made in the same narrowing step as the agreements' (``authn.py``), so
every API (DICOMweb, FHIR, DIMSE) applies them alike, and each carries its basis
(``data-holder`` or ``admin``) into the audit. They follow the client's rights as
registered *now* and the token's dataset scopes: a store right removed from the client,
or a token asked for without ``dataset:<id>:store``, gives no view of that dataset.
"""

from __future__ import annotations

from collections.abc import Iterable

from server.security.model import RANK, Basis, Condition, Grant


def holder_grants(datasets: Iterable[str], basis: Basis) -> dict[str, Grant]:
    """Full access (search, metadata, retrieve) to each dataset, on ``basis``."""
    return {d: Grant(d, Condition.DOWNLOAD, basis=basis) for d in datasets}


def widen(grants: dict[str, Grant], extra: dict[str, Grant]) -> dict[str, Grant]:
    """``grants`` with ``extra`` added: per dataset the more permissive; on a tie the grant
    already there (an agreement's) is kept, so the audit names the agreement."""
    out = dict(grants)
    for dataset, grant in extra.items():
        old = out.get(dataset)
        if old is None or RANK[grant.condition] > RANK[old.condition]:
            out[dataset] = grant
    return out
