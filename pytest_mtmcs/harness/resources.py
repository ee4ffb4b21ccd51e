"""What a process builds to run or re-judge dialogues: the response cache, the judge, the model
backend (behind its guards). Each is built once, on first use, and closed when the run ends.

Building a backend or judge can fail (a model folder that does not exist, a judge that cannot be
built): the error is a `MtmcsError` naming the option; callers decide how the run stops.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pytest_mtmcs.harness.settings import Settings


class Resources:
    def __init__(self, settings: Settings, cache_dir: Path | None) -> None:
        """`cache_dir`: pytest's cache folder for the default response cache (None when the
        cache provider is off: then no response cache unless --mtmcs-cache names one)."""
        self.settings = settings
        self.cache_dir = cache_dir
        self._cache: Any = None
        self._judge: Any = None
        self._backend: Any = None
        self._adjudications: list[Any] | None = None

    # -- the response cache ------------------------------------------------------------------

    @property
    def cache(self) -> Any:
        if self._cache is None:
            self._cache = self._open_cache()
        return self._cache

    def _open_cache(self) -> Any:
        from pytest_mtmcs.backends.cache import NullCache, ResponseCache

        s = self.settings
        if s.no_cache:
            return NullCache()
        path = Path(s.cache_path) if s.cache_path else None
        if path is None:
            if self.cache_dir is None:  # -p no:cacheprovider
                return NullCache()
            path = self.cache_dir / "responses.sqlite"
        return ResponseCache(path)

    def cache_or_none(self) -> Any:
        """The cache, or None when nothing is cached (no keys to compute then)."""
        from pytest_mtmcs.backends.cache import NullCache

        return None if isinstance(self.cache, NullCache) else self.cache

    def cache_counts(self) -> dict[str, int]:
        c = self._cache
        return {k: int(getattr(c, k, 0)) for k in ("hits", "misses", "writes")}

    # -- the judge ---------------------------------------------------------------------------

    def judge_options(self) -> Any:
        """What a model judge needs: its backend options (--mtmcs-judge-base-url), the cache."""
        from pytest_mtmcs.judges.model_judges import ModelJudgeOptions

        return ModelJudgeOptions(
            self.settings.backend_options("judge"),
            self.cache,
            cascade_threshold=self.settings.cascade_threshold,
            images=self.settings.judge_images,
        )

    @property
    def judge(self) -> Any:
        if self._judge is None:
            from pytest_mtmcs.judges import create_judge

            self._judge = create_judge(self.settings.judge, self.judge_options())
        return self._judge

    @property
    def judge_built(self) -> bool:
        return self._judge is not None

    # -- people's labels ---------------------------------------------------------------------

    @property
    def adjudications(self) -> list[Any]:
        """The adjudications file's lines, checked (`baseline.adjudications.read`): a bad or
        conflicting line raises its `file:line` error; a named file that does not exist is a
        ConfigError (a typo must not drop every label silently); the default file may be
        absent."""
        if self._adjudications is None:
            from pytest_mtmcs.baseline.adjudications import OPTION, read
            from pytest_mtmcs.errors import ConfigError

            s = self.settings
            if s.adjudications_named and not s.adjudications_path.is_file():
                raise ConfigError(
                    f"{OPTION}={s.adjudications_path}: no such file; `pytest-mtmcs review "
                    f"REPORT_DIR --adjudications {s.adjudications_path}` writes it"
                )
            self._adjudications = read(s.adjudications_path)
        return self._adjudications

    def adjudication_labels(self) -> dict[str, Any]:
        from pytest_mtmcs.baseline.adjudications import labels

        return labels(self.adjudications)

    # -- the model under test ----------------------------------------------------------------

    @property
    def backend(self) -> Any:
        if self._backend is None:
            self._backend = self._build_backend()
        return self._backend

    @property
    def backend_built(self) -> bool:
        return self._backend is not None

    def _build_backend(self) -> Any:
        from pytest_mtmcs.backends import create_backend

        s = self.settings
        assert s.model is not None
        device = s.device
        if device is None and s.model.split(":", 1)[0] in ("hf", "tiny"):
            device = worker_device()
        backend = create_backend(s.model, s.backend_options("model", device))
        if s.guards:
            from pytest_mtmcs.engine.guarded_backend import create_guarded_backend

            try:
                backend = create_guarded_backend(
                    backend, list(s.guards), s.backend_options("guard")
                )
            except BaseException:
                backend.close()
                raise
        return backend

    def close(self) -> None:
        # After the summary: a re-judge on the controller may still have used the judge.
        for resource in (self._judge, self._backend, self._cache):
            close = getattr(resource, "close", None)
            if close is not None:
                close()


def worker_device() -> str | None:
    """xdist worker i gets GPU i mod the visible count (an outer CUDA_VISIBLE_DEVICES holds)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None:
        return None
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        return "cpu"
    idx = int(worker.removeprefix("gw")) % torch.cuda.device_count()
    return f"cuda:{idx}"
