"""Paths as users write them: `~` and environment variables expanded in every path and spec.

`--mtmcs-suite=mtmcs-bench:~/data/MTMCS-Bench`, `--mtmcs-report=$RUNNER_TEMP/report`,
`--mtmcs-model=hf:~/models/qwen`: the shell expands none of these (a `~` after `=` or a `:` is
not at the start of a word), so the plugin does, as `git` and `pip` do for their path options.
"""

from __future__ import annotations

import os
import re

# `PREFIX:REST` where PREFIX is a scheme-like word; a Windows drive letter (`C:`) is no prefix.
_PREFIX = re.compile(r"^([A-Za-z][A-Za-z0-9_.+-]+):(?!//)")


def expand_path(path: str) -> str:
    """`~`, `~user`, `$VAR` and `${VAR}` expanded; an unknown variable stays as written."""
    return os.path.expanduser(os.path.expandvars(path))


def expand_spec(spec: str) -> str:
    """A `PREFIX:PATH` spec (or a plain path) with its path part expanded.

    URLs (`openai:...` specs never hold one, `http://` would) keep their `//` untouched.
    """
    m = _PREFIX.match(spec)
    if m is None:
        return expand_path(spec)
    return spec[: m.end()] + expand_path(spec[m.end() :])
