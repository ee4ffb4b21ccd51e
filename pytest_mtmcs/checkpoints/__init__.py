"""Committed model checkpoints served by the `tiny:` backend (`tiny-NAME/` -> `tiny:NAME`).

Data only. Regenerate the tiny Qwen-VL ones with `python -m pytest_mtmcs.backends.tiny build`;
doing so changes every output of those models and so every baseline recorded with them.
"""
