"""Importers: the benchmarks' release formats -> suites."""
