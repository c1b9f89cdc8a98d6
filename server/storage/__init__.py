"""Blob stores: where instance bytes live. ``filesystem`` is the default."""
