"""The end of a run as data: gate, recording a baseline, terminal text, report files, HTML, shards, `finish`."""
