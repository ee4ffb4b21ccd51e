"""The suites of a run: loaded once per spec, with their metadata and generation settings.

Collection loads a suite when pytest reaches its `suite.toml` (or a `--mtmcs-suite` spec); an
xdist controller, which never collects, loads one only when the end of the run needs its
dialogues (re-judging a baseline, user text in the report), from the spec its workers recorded.
"""

from __future__ import annotations

import gc
from typing import Any

from pytest_mtmcs import defaults
from pytest_mtmcs.analysis.buckets import bucket_spec
from pytest_mtmcs.errors import ConfigError
from pytest_mtmcs.harness.settings import Settings
from pytest_mtmcs.outcome.model import SuiteMeta
from pytest_mtmcs.records import IMAGE_PLACEMENTS, Dialogue, GenerationSettings, Suite


class DuplicateSuite(ConfigError):
    """A suite whose name another loaded suite already has: its dialogues are not collected,
    and the run stops (a usage error) once collection ends."""


class SuiteStore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.by_spec: dict[str, Suite] = {}
        self.meta: dict[str, SuiteMeta] = {}
        # Where each suite name was loaded from: two folders defining one suite name would mix
        # their dialogues in every result, baseline and flip.
        self.where: dict[str, str] = {}
        # Suite names defined twice (one message each): the run stops before any model runs.
        self.clashes: list[str] = []
        self._settings_cache: dict[str, GenerationSettings] = {}

    def load(self, spec: str, where: str | None = None, nodeid: str = "") -> Suite:
        """The suite of `spec`; `where` names its file for messages (default: the spec),
        `nodeid` is its collector's (under which the gate's cells are reported)."""
        if spec in self.by_spec:
            return self.by_spec[spec]
        from pytest_mtmcs.suite import resolve_suite

        kwargs: dict[str, Any] = {}
        if spec.startswith("mtmcs-bench:"):
            kwargs = {
                "splits": self.settings.splits,
                "modalities": self.settings.modalities,
                "variant_images": self.settings.variant_images,
                "captions": self.settings.captions,
            }
        suite = resolve_suite(spec, **kwargs)
        shown = where or spec
        if suite.name in self.where and self.where[suite.name] != shown:
            self.clashes.append(
                f"suite name {suite.name!r} is defined twice: by {self.where[suite.name]} and by "
                f"{shown}; results, baselines and flips are kept per suite name, so give each "
                "suite its own `name` in its suite.toml (a copied suite folder keeps the name "
                "of the one it was copied from)"
            )
            raise DuplicateSuite(self.clashes[-1])
        # The suite lives as long as the session: move its tens of thousands of objects out of
        # the cyclic collector's way (every later collection would walk them all again).
        gc.freeze()
        settings = self.generation_settings(suite)
        self.by_spec[spec] = suite
        self.where[suite.name] = shown
        self.meta[suite.name] = SuiteMeta(
            name=suite.name,
            version=suite.version,
            content_hash=suite.content_hash,
            spec=spec,
            defaults=dict(suite.defaults),
            settings=settings.as_dict(),
            dialogues=len(suite.dialogues),
            nodeid=nodeid or spec,
            # What a judge can be shown of the suite's images (judges.shown_for_suite).
            images=sum(1 for d in suite.dialogues if d.image is not None),
            captions=sum(1 for d in suite.dialogues if d.image is not None and d.image.caption),
        )
        return suite

    def generation_settings(self, suite: Suite) -> GenerationSettings:
        """Decoding for this suite: the options, else the suite's `[defaults]`, else built-in."""
        cached = self._settings_cache.get(suite.name)
        if cached is not None:
            return cached
        s, d = self.settings, suite.defaults
        placement = s.image_placement or d.get("image_placement", defaults.IMAGE_PLACEMENT)
        if placement not in IMAGE_PLACEMENTS:
            raise ConfigError(
                f"image placement {placement!r}: expected first, last or every "
                "(--mtmcs-image-placement / ini mtmcs_image_placement)"
            )
        max_new = s.max_new_tokens or d.get("max_new_tokens", defaults.MAX_NEW_TOKENS)
        try:
            max_new = int(max_new)
        except ValueError:
            raise ConfigError(f"--mtmcs-max-new-tokens={max_new!r}: expected an integer") from None
        if max_new < 1:
            raise ConfigError(f"--mtmcs-max-new-tokens={max_new}: expected a positive integer")
        out = GenerationSettings(
            max_new_tokens=max_new,
            temperature=defaults.TEMPERATURE,
            image_placement=placement,
            max_pixels=s.max_pixels,
        )
        self._settings_cache[suite.name] = out
        return out

    def bucket_spec(self, name: str) -> str:
        meta = self.meta.get(name)
        return bucket_spec(self.settings.buckets, meta.defaults if meta else None)

    def dialogues_of(self, name: str) -> dict[str, Dialogue]:
        """A suite's dialogues by id; an xdist controller loads the suite here, from its spec."""
        for loaded in self.by_spec.values():
            if loaded.name == name:
                return {d.id: d for d in loaded.dialogues}
        meta = self.meta.get(name)
        if meta is None or not meta.spec:
            raise ConfigError(f"cannot find the suite {name!r} to load its dialogues")
        return {d.id: d for d in self.load(meta.spec).dialogues}

    def learn(self, metas: dict[str, dict[str, Any]]) -> None:
        """Suite metadata sent by xdist workers: an xdist controller never loads the suites."""
        for name, m in metas.items():
            self.meta.setdefault(name, SuiteMeta(**m))
