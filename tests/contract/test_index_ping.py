"""The readiness read of an index (``Index.ping``, behind ``/readyz``): it answers on an empty
and on a filled index, and fails once the index's tables or indices are gone."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import pytest

from server.core.records import InstanceRecord
from server.index.base import Index
from server.index.sqlite import SqliteIndex

Build = Callable[..., InstanceRecord]


def _remove_the_index(index: Index) -> None:
    """Take the index away under the open backend, as an operator's mistake or a lost volume would."""  # fmt: skip
    if isinstance(index, SqliteIndex):
        conn = sqlite3.connect(index.path)
        try:
            conn.execute("DROP TABLE instance")
            conn.commit()
        finally:
            conn.close()
        return
    from server.index.elasticsearch import ElasticsearchIndex

    assert isinstance(index, ElasticsearchIndex)
    aliases = index.es.indices.get_alias(name=",".join(index.names.values()))
    index.es.indices.delete(index=",".join(aliases))


def test_ping_answers_on_an_empty_and_a_filled_index(index: Index, record_of: Build) -> None:
    index.ping()
    index.add_instances([record_of(), record_of()], overwrite=False)
    index.ping()


def test_ping_fails_once_the_index_is_gone(index: Index, record_of: Build) -> None:
    index.add_instances([record_of()], overwrite=False)
    _remove_the_index(index)
    with pytest.raises(Exception):  # noqa: B017 - any failure makes /readyz name the index
        index.ping()
