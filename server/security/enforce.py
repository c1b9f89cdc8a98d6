"""The checks every service applies before touching the index (one place, PS3.18 and FHIR alike)."""

from __future__ import annotations

from server.errors import Forbidden, NotFound, Unauthorized
from server.security import scopes as scope_syntax
from server.security.model import Action, Principal


def require(principal: Principal, resource_type: str, op: str) -> None:
    """403 unless a SMART scope grants ``op`` on ``resource_type`` (SMART 2.0 3.0.2.3)."""
    if principal.unrestricted or principal.admin:
        return
    if not scope_syntax.allows_resource(principal.resource_scopes, resource_type, op):
        raise Forbidden(f"the token has no scope allowing '{op}' on {resource_type}")


def require_admin(principal: Principal) -> None:
    if not (principal.unrestricted or principal.admin):
        if principal.anonymous:
            raise Unauthorized("this operation needs an administrator's token")
        raise Forbidden("this operation needs the admin scope")


def check_dataset(principal: Principal, action: Action, dataset: str | None, what: str) -> None:
    """404, never 403, for data outside the grant: no hint that it exists."""
    if not principal.allows(action, dataset):
        raise NotFound(f"{what} not found")
