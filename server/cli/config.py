"""Settings for a CLI command: the environment, with ``--data-dir`` taking precedence."""

from __future__ import annotations

import os
from pathlib import Path

import click

from server.settings import Settings


def load_settings(data_dir: Path | None) -> Settings:
    """Settings from the environment; a bad value is a clear CLI error, not a traceback."""
    if data_dir is not None:
        os.environ["GATEWAY_DATA_DIR"] = str(data_dir)
    try:
        return Settings()
    except ValueError as exc:
        cause = f" ({exc.__cause__})" if exc.__cause__ is not None else ""
        raise click.ClickException(f"invalid settings: {exc}{cause}") from exc
