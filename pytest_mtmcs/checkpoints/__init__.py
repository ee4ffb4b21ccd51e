"""Committed model checkpoints served by the `tiny:` backend (`tiny-NAME/` -> `tiny:NAME`).

Data only: trained offline by `python -m pytest_mtmcs.training --recipe NAME --out DIR`
(see docs/training.md). Re-training changes the models' outputs and so every baseline recorded
with them.
"""
