"""The pytest side: options, settings, collection, items, pre-flight checks, interrupts, progress, xdist."""
