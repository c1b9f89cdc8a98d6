"""One translation of "the cluster cannot answer" for every Elasticsearch-backed class.

Every public method of a decorated class (and every iterator it returns from a generator
method) turns a transport failure (connection refused or cut, timeout) and a cluster-side
unavailability (HTTP 429/502/503/504 after the client's own retries) into
ServiceUnavailable, which every edge maps the same way: HTTP 503 + Retry-After + no-store,
DIMSE "out of resources", CLI exit with a clear message. Query bugs (HTTP 400 from the
cluster) stay errors of their own: they are ours, not an outage.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from elasticsearch import ApiError, TransportError

from server.errors import ServiceUnavailable

C = TypeVar("C", bound=type)
RETRY_AFTER = 10
_BUSY = frozenset({429, 502, 503, 504})


def as_unavailable(exc: BaseException) -> ServiceUnavailable | None:
    """The ServiceUnavailable an Elasticsearch failure means, or None if it is no outage."""
    if isinstance(exc, TransportError):  # ConnectionError, ConnectionTimeout, TLS failures
        return ServiceUnavailable(f"Elasticsearch is unreachable: {exc}", RETRY_AFTER)
    if isinstance(exc, ApiError) and exc.meta.status in _BUSY:
        return ServiceUnavailable(
            f"Elasticsearch cannot answer now (HTTP {exc.meta.status})", RETRY_AFTER
        )
    return None


def _guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from fn(*args, **kwargs)
            except (TransportError, ApiError) as exc:
                mapped = as_unavailable(exc)
                if mapped is None:
                    raise
                raise mapped from exc

        return generator

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (TransportError, ApiError) as exc:
            mapped = as_unavailable(exc)
            if mapped is None:
                raise
            raise mapped from exc

    return call


def outage_is_unavailable(cls: C) -> C:
    """Class decorator: guard every public method (``__init__`` included) as described above."""
    for name, member in list(vars(cls).items()):
        if name == "__init__" or (not name.startswith("_") and inspect.isfunction(member)):
            setattr(cls, name, _guard(member))
    return cls
