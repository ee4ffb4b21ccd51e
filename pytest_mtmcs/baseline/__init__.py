"""Stored baselines: the .ambr format and its strict reader, the store, stored transcripts, re-judging."""
