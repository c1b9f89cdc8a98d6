"""Start-up time of a gateway on an existing data directory, twice in a row.

The first start runs whatever the data directory needs (an upgrade's migrations: schema
steps before answering, backfills in the background while ``/readyz`` says
``migrating``); the second shows a start with nothing to migrate. Reports, for each, the
seconds to the first answer of ``/healthz`` and to ``/readyz`` 200, and the ``/readyz``
states seen.

    .venv/bin/python bench/start_time.py DATA_DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.live import LiveServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", type=Path)
    args = parser.parse_args()
    out: dict[str, Any] = {"loadavg_start": os.getloadavg()}
    for attempt in ("first", "second"):
        live = LiveServer(args.data_dir, extra_env={"GATEWAY_LOG_LEVEL": "info"})
        started = time.perf_counter()
        live.start(timeout=3600)
        answering = time.perf_counter() - started
        states = set()
        try:
            while True:
                ready = httpx.get(f"{live.url}/readyz", timeout=60)
                states.add(ready.json().get("status"))
                if ready.status_code == 200:
                    break
                time.sleep(2)
        finally:
            live.stop()
        out[attempt] = {"healthz_seconds": round(answering, 1),
                        "ready_seconds": round(time.perf_counter() - started, 1),
                        "readyz_states": sorted(states)}  # fmt: skip
    out["loadavg_end"] = os.getloadavg()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
