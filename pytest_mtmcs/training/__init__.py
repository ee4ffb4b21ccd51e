"""Offline training of the tiny fixture checkpoints (`tiny:qwen2-vl`, `tiny:qwen2.5-vl`, ...).

Not imported by the plugin: `python -m pytest_mtmcs.training --recipe NAME --out DIR`.
"""
