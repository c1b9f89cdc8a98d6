"""The SQLite index's remembered instance lists stay bounded, empty answers included.

``SqliteIndex.instances`` remembers answers per reader thread until the next commit
(server/index/sqlite.py). A caller may ask for UIDs that do not exist as often as it likes:
those empty answers must count against the bound like any other, or they would grow without
limit between two commits.
"""

from __future__ import annotations

from pathlib import Path

from server.index.base import Scope
from server.index.sqlite import SqliteIndex, _Memo


def test_empty_answers_for_made_up_uids_count_against_the_bound(tmp_path: Path) -> None:
    index = SqliteIndex(tmp_path / "index.sqlite")
    try:
        for n in range(3 * _Memo.ROWS):
            assert index.instances(Scope(f"1.2.3.{n}")) == []
        memo = index._local.memo
        assert len(memo.entries) <= _Memo.ROWS
        assert memo.rows <= _Memo.ROWS
    finally:
        index.close()
