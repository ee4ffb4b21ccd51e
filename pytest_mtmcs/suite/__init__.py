"""Suites: the native format (reading, writing), images, intent questions, importers of the benchmarks' releases."""
