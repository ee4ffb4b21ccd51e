"""Text from models and suites, made safe to print on a terminal.

A reply can hold ANSI escape sequences (colours, cursor moves, window titles, hyperlinks), a
carriage return that overwrites the line before it, or C0/C1 control characters and Unicode
direction overrides that make a log say something other than what it holds. `printable` removes
them; tabs and newlines stay, a carriage return becomes a space.
"""

from __future__ import annotations

import re

# ESC [ ... final byte (CSI), ESC ] ... BEL or ESC \ (OSC), ESC P/X/^/_ ... ESC \ (DCS, SOS, PM,
# APC), any other two-byte ESC sequence; the single-byte C1 CSI (U+009B) with its parameters.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"
    r"|\x1b[ -~]?"
    r"|\x9b[0-?]*[ -/]*[@-~]?"
)
# C0 except tab and newline, DEL, C1, and the bidirectional formatting characters.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` without escape sequences and control characters (tabs and newlines kept)."""
    if text.isprintable():
        return text
    text = _ESCAPES.sub("", text).replace("\r\n", "\n").replace("\r", " ")
    return _CONTROLS.sub("", text)


__all__ = ["printable"]
