"""Shared machinery the tools stand on. Never imports `tools` or `assistant`."""
