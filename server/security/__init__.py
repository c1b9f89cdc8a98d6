"""Tokens, scopes, data-access agreements and audit: who may do what, and the record of it."""
