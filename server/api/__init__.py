"""Thin HTTP routers per standard; the one error→HTTP mapping lives in errors.py."""
