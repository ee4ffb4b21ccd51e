"""`hf:` backend: any transformers image-text-to-text chat model, batched across requests.

`hf:PATH` loads a local folder; `hf:OWNER/NAME[@REVISION]` loads a hub model from the local
Hugging Face cache only: nothing is ever downloaded at run time (pre-download with
`hf download OWNER/NAME`). Requests are grouped by generation settings, sorted by prompt size to
reduce padding, and generated in batches with left padding and one processor call per batch.
torch and transformers are imported inside the backend, never at module import.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_mtmcs.errors import BackendError, ConfigError
from pytest_mtmcs.records import ChatRequest, GenerationSettings, ImageRef
from pytest_mtmcs.suite.images import open_image

if TYPE_CHECKING:
    from PIL import Image

    from pytest_mtmcs.backends import BackendOptions, Generation

DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")
DEFAULT_BATCH_CPU = 16
DEFAULT_BATCH_GPU = 32
AUTO_BATCH = -1
MAX_AUTO_BATCH = 128
# Files whose bytes decide the outputs besides the weights (template, tokenizer, image budget).
_CONFIG_FILES: tuple[str, ...] = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "processor_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "chat_template.json",
    "chat_template.jinja",
)
_WEIGHT_SUFFIXES: tuple[str, ...] = (".safetensors", ".bin")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_IMAGE_CACHE_SIZE = 256


def create(rest: str, options: BackendOptions) -> HFBackend:
    """Factory for `hf:PATH` and `hf:OWNER/NAME[@REVISION]`."""
    if not rest.strip():
        raise ConfigError(
            "--mtmcs-model=hf:: expected a local folder or a hub id, "
            "e.g. hf:Qwen/Qwen2.5-VL-7B-Instruct or hf:./my-checkpoint"
        )
    return HFBackend(rest.strip(), options)


def sha256_files(paths: Sequence[Path]) -> str:
    """One digest over several files: name and contents of each, in the order given."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a checkpoint folder, safetensors preferred, sorted by name."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix == ".safetensors")
    if not files:
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    return files


def resolve_model(ref: str, option: str = "--mtmcs-model") -> tuple[Path, str | None]:
    """A local folder, or a hub id found in the local cache -> (folder, commit or None).

    Never downloads: a hub id missing from the cache is a ConfigError saying how to fetch it.
    """
    candidate = Path(ref).expanduser()
    if candidate.is_dir():
        return candidate.resolve(), None
    repo_id, _, revision = ref.partition("@")
    looks_like_path = ref.startswith((".", "/", "~")) or ref.count("/") != 1
    if looks_like_path or not _HUB_ID.match(repo_id):
        raise ConfigError(
            f"{option}=hf:{ref}: no such folder, and not a hub id of the form OWNER/NAME[@REVISION]"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, revision=revision or None, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError) as exc:
        fetch = f"hf download {repo_id}" + (f" --revision {revision}" if revision else "")
        raise ConfigError(
            f"{option}=hf:{ref}: model not found in the local Hugging Face cache and the plugin "
            f"never downloads at run time; fetch it first with `{fetch}` (set HF_HOME or "
            f"HF_HUB_CACHE to use another cache) ({type(exc).__name__})"
        ) from None
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"{option}=hf:{ref}: the cached snapshot {folder.name} has no config.json; "
            f"the download is incomplete, run `hf download {repo_id}` again"
        )
    # Cached snapshots live in a folder named after the commit they hold.
    return folder, folder.name


def _is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


class HFBackend:
    """A transformers `AutoModelForImageTextToText` + `AutoProcessor` pair."""

    def __init__(
        self,
        model_ref: str,
        options: BackendOptions,
        *,
        spec: str | None = None,
        local_folder: bool = False,
        threads: int | None = None,
    ) -> None:

        self.spec = spec or f"hf:{model_ref}"
        self._ref = model_ref
        self._options = options
        if options.dtype not in DTYPES:
            raise ConfigError(
                f"--mtmcs-dtype={options.dtype!r}: expected one of {', '.join(DTYPES)}"
            )
        requested = options.batch_size
        if requested is not None and requested != AUTO_BATCH and requested < 1:
            raise ConfigError(
                f"--mtmcs-batch-size={requested}: expected a positive integer or auto"
            )
        if local_folder:
            self._folder, self._revision = Path(model_ref), None
        else:
            self._folder, self._revision = resolve_model(model_ref)
        self._threads = threads
        self.device = options.device or _default_device()
        self._loaded = False
        self._load_seconds = 0.0
        self._batch_size: int | None = None
        self._fingerprint: dict[str, Any] | None = None
        self._images: OrderedDict[str, Image.Image] = OrderedDict()

    # The model loads on first use: a run answered entirely from the response cache never
    # imports transformers nor reads the weights (the fingerprint needs neither).

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            import time

            started = time.perf_counter()
            self._load()
            self._loaded = True
            self._load_seconds = time.perf_counter() - started

    @property
    def model(self) -> Any:
        self._ensure_loaded()
        return self._model

    @property
    def processor(self) -> Any:
        self._ensure_loaded()
        return self._processor

    @property
    def load_seconds(self) -> float:
        self._ensure_loaded()
        return self._load_seconds

    @property
    def batch_size(self) -> int:
        if self._batch_size is None:
            self._batch_size = self._choose_batch_size(self._options.batch_size)
        return self._batch_size

    # --- loading ------------------------------------------------------------------------------

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        device = self.device
        if self._threads is not None and device == "cpu":
            # Process-wide. Greedy outputs do not depend on the thread count.
            torch.set_num_threads(self._threads)
        dtype: Any = (
            "auto" if self._options.dtype == "auto" else getattr(torch, self._options.dtype)
        )
        kwargs: dict[str, Any] = {
            "local_files_only": True,
            "trust_remote_code": self._options.trust_remote_code,
        }
        from transformers.utils import logging as hf_logging

        # The per-tensor "Loading weights" bar would cut into pytest's terminal output.
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            self._processor: Any = AutoProcessor.from_pretrained(self._folder, **kwargs)
            # device "auto" spreads a model too big for one GPU over all visible ones.
            placement = {"device_map": "auto"} if device == "auto" else {}
            model: Any = AutoModelForImageTextToText.from_pretrained(
                self._folder, dtype=dtype, **placement, **kwargs
            )
            if device != "auto":
                model.to(device)
            self._model: Any = model
        except (ConfigError, BackendError):
            raise
        except Exception as exc:  # transformers raises many types while loading
            hint = ""
            if "trust_remote_code" in str(exc):
                hint = " (this model ships its own code: pass --mtmcs-trust-remote-code if you trust it)"
            raise BackendError(
                f"{self.spec}: cannot load the model from {self._display_ref()}: "
                f"{type(exc).__name__}: {exc}{hint}"
            ) from None
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        self._model.eval()
        tokenizer = getattr(self._processor, "tokenizer", None)
        if tokenizer is None:
            raise BackendError(f"{self.spec}: the processor has no tokenizer; not a chat model?")
        # Decoder-only batching needs left padding: new tokens must follow each prompt directly.
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._tokenizer = tokenizer
        image_processor = getattr(self._processor, "image_processor", None)
        size = getattr(image_processor, "size", None)
        # Qwen-VL style processors take a pixel budget (`size.longest_edge` in pixels); others get
        # images downscaled by us before processing.
        self._pixel_budget_size = (
            dict(size)
            if hasattr(image_processor, "merge_size") and size and "longest_edge" in size
            else None
        )

    def _display_ref(self) -> str:
        # The user's own spelling: the resolved folder may be a machine path.
        return self._ref if not self.spec.startswith("tiny:") else self.spec

    def _choose_batch_size(self, requested: int | None) -> int:
        if requested is not None and requested != AUTO_BATCH:
            return requested
        on_gpu = str(self.device).startswith("cuda") or self.device == "auto"
        if requested is None:
            return DEFAULT_BATCH_GPU if on_gpu else DEFAULT_BATCH_CPU
        return self._auto_batch_size() if on_gpu else DEFAULT_BATCH_CPU

    def _auto_batch_size(self) -> int:
        """Batch that fits in about half the free GPU memory (OOM splitting covers misses)."""
        import torch

        try:
            index = torch.device(self.device).index if self.device != "auto" else None
            free, _ = torch.cuda.mem_get_info(index)
        except Exception:  # no CUDA context: fall back to the default
            return DEFAULT_BATCH_GPU
        text = getattr(self.model.config, "text_config", self.model.config)
        layers = int(getattr(text, "num_hidden_layers", 32))
        heads = int(getattr(text, "num_attention_heads", 32))
        kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // heads)
        elem = next(self.model.parameters()).element_size()
        # KV cache for a 2k-token sequence (long dialogue + image), twice for activations.
        per_seq = 2 * layers * kv_heads * head_dim * elem * 2048 * 2
        fit = int(free * 0.5 // max(per_seq, 1))
        batch = 1
        while batch * 2 <= min(fit, MAX_AUTO_BATCH):
            batch *= 2
        return batch

    # --- identity -----------------------------------------------------------------------------

    def fingerprint(self) -> Mapping[str, Any]:
        if self._fingerprint is None:
            config_files = [self._folder / n for n in _CONFIG_FILES if (self._folder / n).is_file()]
            self._fingerprint = {
                "backend": "hf",
                "spec": self.spec,
                "model": self._display_ref(),
                "revision": self._revision,
                # A hub commit pins the files; a local folder is identified by its contents.
                "weights_sha256": None
                if self._revision
                else sha256_files(weight_files(self._folder)),
                "config_sha256": sha256_files(config_files),
                "dtype": self._dtype_name(),
                "device": str(self.device).split(":")[0],
                # Package metadata: plain strings, and no import of either library.
                "transformers": _version("transformers"),
                "torch": _version("torch"),
            }
        return dict(self._fingerprint)

    def _dtype_name(self) -> str:
        """The dtype the weights load in: the option, or with `auto` the checkpoint's own."""
        if self._options.dtype != "auto":
            return self._options.dtype
        try:
            config = json.loads((self._folder / "config.json").read_text())
        except (OSError, ValueError):
            return "auto"
        found = config.get("dtype") or config.get("torch_dtype")
        return str(found).removeprefix("torch.") if found else "auto"

    # --- generation ---------------------------------------------------------------------------

    def generate(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        self._ensure_loaded()
        results: list[Generation | None] = [None] * len(requests)
        prepared: dict[int, list[dict[str, Any]]] = {}
        cost: dict[int, tuple[int, int]] = {}
        for i, request in enumerate(requests):
            try:
                prepared[i] = self._conversation(request)
            except BackendError as exc:
                results[i] = exc
                continue
            images = sum(1 for m in request.messages if m.image is not None)
            cost[i] = (images, sum(len(m.text) for m in request.messages))
        groups: dict[GenerationSettings, list[int]] = {}
        for i in prepared:
            groups.setdefault(requests[i].settings, []).append(i)
        for settings, indices in groups.items():
            # Similar sizes side by side: less padding, and image prompts batch together.
            indices.sort(key=lambda i: cost[i])
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                outputs = self._run_batch([prepared[i] for i in chunk], settings)
                for i, out in zip(chunk, outputs, strict=True):
                    results[i] = out
        return [r if r is not None else BackendError("no result") for r in results]

    def _conversation(self, request: ChatRequest) -> list[dict[str, Any]]:
        conversation: list[dict[str, Any]] = []
        for message in request.messages:
            content: list[dict[str, Any]] = []
            if message.image is not None:
                content.append({"type": "image", "image": self._image(message.image, request)})
            content.append({"type": "text", "text": message.text})
            conversation.append({"role": message.role, "content": content})
        return conversation

    def _image(self, ref: ImageRef, request: ChatRequest) -> Image.Image:
        budget = request.settings.max_pixels
        key = f"{ref.sha256}:{budget if self._pixel_budget_size is None else ''}"
        cached = self._images.get(key)
        if cached is not None:
            self._images.move_to_end(key)
            return cached
        try:
            image = open_image(ref.data())
        except Exception as exc:  # decoding untrusted bytes
            where = f" {ref.where}" if ref.where else ""
            raise BackendError(f"{self.spec}: cannot decode image{where}: {exc}") from None
        if budget is not None and self._pixel_budget_size is None:
            image = _downscale(image, budget)
        self._images[key] = image
        if len(self._images) > _IMAGE_CACHE_SIZE:
            self._images.popitem(last=False)
        return image

    def _run_batch(
        self, conversations: list[list[dict[str, Any]]], settings: GenerationSettings
    ) -> list[Generation]:
        try:
            return list(self._generate_batch(conversations, settings))
        except Exception as exc:  # isolate failures to the requests that cause them
            if _is_oom(exc):
                self._free_memory()
                if len(conversations) == 1:
                    return [
                        BackendError(
                            f"{self.spec}: out of memory on {self.device} for a single request; "
                            "lower --mtmcs-max-pixels or --mtmcs-max-new-tokens, use a smaller "
                            "--mtmcs-dtype, or a larger device"
                        )
                    ]
                half = len(conversations) // 2
                return self._run_batch(conversations[:half], settings) + self._run_batch(
                    conversations[half:], settings
                )
            if len(conversations) > 1:
                # One bad request must not fail its neighbours: retry them one by one.
                return [r for c in conversations for r in self._run_batch([c], settings)]
            return [BackendError(f"{self.spec}: generation failed: {type(exc).__name__}: {exc}")]

    def _free_memory(self) -> None:
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _generate_batch(
        self, conversations: list[list[dict[str, Any]]], settings: GenerationSettings
    ) -> list[str]:
        import torch

        processor_kwargs: dict[str, Any] = {"padding": True}
        if settings.max_pixels is not None and self._pixel_budget_size is not None:
            shortest = int(self._pixel_budget_size.get("shortest_edge") or 0)
            processor_kwargs["size"] = {
                "shortest_edge": min(shortest, settings.max_pixels),
                "longest_edge": settings.max_pixels,
            }
        inputs = self.processor.apply_chat_template(
            conversations,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            # Benchmark text is untrusted: a literal `<|image_pad|>` must stay plain text.
            sanitize_control_tokens=True,
            processor_kwargs=processor_kwargs,
        )
        target = self.model.device if self.device == "auto" else self.device
        inputs = inputs.to(target)
        gen_kwargs: dict[str, Any] = {"max_new_tokens": settings.max_new_tokens}
        if settings.temperature > 0:
            gen_kwargs.update(do_sample=True, temperature=settings.temperature)
        else:
            gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if self.model.generation_config.pad_token_id is None:
            gen_kwargs["pad_token_id"] = self._tokenizer.pad_token_id
        with torch.inference_mode():
            output = self.model.generate(**inputs, **gen_kwargs)
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        texts = self._tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [t.strip() for t in texts]

    def close(self) -> None:
        self._images.clear()
        if self._loaded:
            del self._model, self._processor
            self._loaded = False
            self._free_memory()


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "-"


def _downscale(image: Image.Image, max_pixels: int) -> Image.Image:
    """Keeps the aspect ratio and fits within `max_pixels` (never upscales)."""
    width, height = image.size
    if width * height <= max_pixels:
        return image
    scale = (max_pixels / (width * height)) ** 0.5
    size = (max(1, int(width * scale)), max(1, int(height * scale)))
    from PIL import Image as PILImage

    return image.resize(size, PILImage.Resampling.BICUBIC)
