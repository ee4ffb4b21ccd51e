"""pytest-mtmcs: multi-turn, multimodal contextual-safety regression testing as a pytest plugin."""

__version__ = "0.1.0"
