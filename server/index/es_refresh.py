"""When an Elasticsearch write becomes visible to search, and what a write waits for.

Elasticsearch makes documents searchable at a *refresh* (every ``refresh_interval``, 1 s
here). ``GATEWAY_ELASTICSEARCH__REFRESH`` chooses what an
acknowledged write (a STOW answer, a delete) guarantees:

- ``immediate`` (default): the writer asks for a refresh of the level indices once its
  bulk is acknowledged and answers when that refresh is done, so a QIDO sent after the
  answer sees the write (read-after-write, as on SQLite). Concurrent writers of one
  process share refreshes (``SharedRefresh``: a group commit), so the cost is about one
  refresh per burst of writes, not one per write, and the answer comes in milliseconds.
- ``wait_for``: Elasticsearch's ``refresh=wait_for``: the same guarantee, no extra
  refresh, but each answer waits for the next periodic refresh (up to 1 s), so a
  client's STOW rate is about one request a second.
- ``none``: the answer comes once the bulk is acknowledged (durable); searches and
  retrievals (both are index searches) see the write within ``refresh_interval`` (1 s).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Literal

RefreshMode = Literal["immediate", "wait_for", "none"]
REFRESH_MODES: tuple[str, ...] = ("immediate", "wait_for", "none")


class SharedRefresh:
    """Refreshes shared by concurrent writers (group commit).

    ``wait()`` returns once a refresh that *started after the call* has completed, so
    everything the caller wrote before calling is searchable. While one refresh runs,
    later callers wait for the next one, which one of them starts for all of them: at
    most one refresh runs at a time in the process, and a burst of N writers costs about
    two refreshes, not N. A failed refresh raises in every caller that waited for it.
    """

    def __init__(self, refresh: Callable[[], Any]) -> None:
        self._refresh = refresh
        self._cond = threading.Condition()
        self._running = False
        self._started = 0  # refreshes started (generation numbers)
        self._finished = 0
        self._errors: dict[int, BaseException] = {}
        self.refreshes = 0  # refreshes made, for tests and benchmarks

    def wait(self) -> None:
        with self._cond:
            # a refresh running now may have started before our write: we need the next
            target = self._started + 1
            while self._finished < target:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True
                self._started += 1
                generation = self._started
                error: BaseException | None = None
                self._cond.release()
                try:
                    self._refresh()
                except BaseException as exc:  # every waiter of this refresh gets it
                    error = exc
                finally:
                    self._cond.acquire()
                    self._running = False
                    self._finished = generation
                    self.refreshes += 1
                    if error is not None:
                        self._errors[generation] = error
                    for old in [g for g in self._errors if g < generation - 1000]:
                        del self._errors[old]
                    self._cond.notify_all()
            if target in self._errors:
                raise self._errors[target]
