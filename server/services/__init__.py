"""Services: authorise → core → index/storage. Writes clean up after themselves on failure."""
