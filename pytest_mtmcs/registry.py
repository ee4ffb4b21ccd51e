"""Pluggable kinds (model backends, judges) by spec prefix: built-ins plus entry points.

A spec is `PREFIX:REST`. Each kind has built-in prefixes (`"module:function"` strings, imported
only when used, so a heavy SDK loads only for the runs that need it) and an entry-point group
through which third-party packages add prefixes; the entry point's name is the prefix and its
value a factory `(rest, options) -> instance`. Built-ins win over an entry point of the same name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from pytest_mtmcs.errors import ConfigError


@dataclass(frozen=True)
class Registry:
    """The prefixes of one pluggable kind (`what`: "backend", "judge")."""

    what: str
    group: str
    builtin: Mapping[str, str]

    def available(self) -> dict[str, str]:
        """Prefix -> factory location, built-ins first, then entry points."""
        found = dict(self.builtin)
        for ep in entry_points(group=self.group):
            found.setdefault(ep.name, ep.value)
        return found

    def known_text(self) -> str:
        return ", ".join(sorted(self.available()))

    def factory(self, prefix: str, *, spec: str, option: str) -> Callable[[str, Any], Any]:
        """The factory registered for `prefix`; an unknown prefix is a ConfigError naming
        `option`, the spec, the known prefixes and the entry-point group."""
        known = self.available()
        if prefix not in known:
            raise ConfigError(
                f"{option}={spec!r}: unknown {self.what} {prefix!r}; known: {self.known_text()}. "
                f"Third-party {self.what}s register in the {self.group!r} entry-point group."
            )
        module_name, _, attr = known[prefix].partition(":")
        factory: Callable[[str, Any], Any] = getattr(importlib.import_module(module_name), attr)
        return factory
