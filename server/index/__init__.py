"""Metadata indexes: ``sqlite`` (embedded default); Elasticsearch comes later."""
