"""The ``imaging-gateway`` command line."""
