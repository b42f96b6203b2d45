"""Thin entry points over the library: the CLI now, Prefect flows later."""
