"""Pure logic: no web framework, database or HTTP client imports."""
