"""The native suite format, reading: a suite folder -> a validated `records.Suite`.

A suite is a folder: `suite.toml` + `dialogues.jsonl` + `images/`. Suites are untrusted data: every
problem becomes one `SuiteError` naming the file, the 1-based line and the field, never a traceback.
Validation is plain Python (no schema library) because a 30,080-line suite must load in well under
two seconds; each distinct image is read and verified once however many dialogues share it. The
`[defaults]` specs (buckets, thresholds) are parsed here too, so that a bad one stops collection
naming suite.toml, not an option the user never passed.

Writing is `writer.py`; `--mtmcs-suite` specs are resolved in `specs.py`.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import posixpath
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pytest_mtmcs.analysis.buckets import ALL, Buckets
from pytest_mtmcs.analysis.buckets import DEFAULT as DEFAULT_BUCKETS
from pytest_mtmcs.analysis.thresholds import parse_threshold
from pytest_mtmcs.errors import ConfigError, SuiteError
from pytest_mtmcs.records import (
    IMAGE_PLACEMENTS,
    LABELS,
    MODALITIES,
    SETTINGS,
    Dialogue,
    ImageRef,
    Question,
    Suite,
    Turn,
)
from pytest_mtmcs.suite.content import content_hash
from pytest_mtmcs.suite.images import ImageProblem, verify_image
from pytest_mtmcs.suite.releases import release_advice

SUITE_TOML = "suite.toml"
DIALOGUES_JSONL = "dialogues.jsonl"
IMAGES_DIR = "images"

# Field order of a dialogue line: the format table's order, also the order `write_suite` uses.
DIALOGUE_FIELDS: tuple[str, ...] = (
    "id",
    "pair",
    "label",
    "setting",
    "modality",
    "category",
    "intent",
    "image",
    "image_caption",
    "turns",
    "risk_turn",
    "questions",
    "source",
    "trajectory",
)
_REQUIRED_FIELDS: tuple[str, ...] = ("id", "label", "setting", "modality", "category", "turns")
_KNOWN_FIELDS = frozenset(DIALOGUE_FIELDS)
_TURN_FIELDS = frozenset({"role", "content"})
_MCQ_FIELDS = frozenset({"type", "question", "options", "answer", "tag"})
_TF_FIELDS = frozenset({"type", "question", "answer", "tag"})
_ROLES: tuple[str, ...] = ("user", "assistant")
_ROLE_ORDER: tuple[str, ...] = ("role", "content")
_QUESTION_TYPES: tuple[str, ...] = ("mcq", "tf")
_MAX_OPTIONS = 26
# One past the last allowed letter is needed by the fast check, hence 27 entries.
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ["
_MCQ_ORDER: tuple[str, ...] = ("type", "question", "options", "answer", "tag")
_TF_ORDER: tuple[str, ...] = ("type", "question", "answer", "tag")

_LABEL_SET = frozenset(LABELS)
_SETTING_SET = frozenset(SETTINGS)
_MODALITY_SET = frozenset(MODALITIES)
_TOML_TOP_FIELDS: tuple[str, ...] = ("name", "version", "source", "license", "defaults")
DEFAULTS_FIELDS: tuple[str, ...] = ("image_placement", "buckets", "thresholds", "max_new_tokens")

# A suite name: it names baseline files and report rows.
NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
_ID_RE = re.compile(r"[A-Za-z0-9_./-]+")
# All id rules in one pattern (segments of allowed characters, none `.` or `..`), for speed;
# _check_id says which rule failed.
_ID_FAST_RE = re.compile(r"(?!\.\.?(?:/|$))[A-Za-z0-9_.-]+(?:/(?!\.\.?(?:/|$))[A-Za-z0-9_.-]+)*")
_TOML_POS_RE = re.compile(r"\(at line (\d+), column (\d+)\)")
_DRIVE_RE = re.compile(r"[A-Za-z]:")


class _Bad(Exception):
    """A problem inside one dialogue line; the loop adds file and line."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _kind(value: object) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _short(value: object) -> str:
    """The value as JSON, cut short: messages stay one readable line."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _got(value: object) -> str:
    if value is None or isinstance(value, bool):
        return _short(value)
    return f"{_kind(value)} {_short(value)}"


def _mistyped(field: str, expected: str, value: object) -> _Bad:
    return _Bad(field, f"expected {expected}, got {_got(value)}")


def _enum(field: str, value: object, allowed: tuple[str, ...]) -> str:
    if isinstance(value, str) and value in allowed:
        return value
    listed = ", ".join(allowed)
    if not isinstance(value, str):
        raise _Bad(field, f"expected one of {listed}; got {_got(value)}")
    raise _Bad(field, f"unknown value {_short(value)}; allowed values: {listed}")


def _text(field: str, value: object) -> str:
    """A required string that is not blank."""
    if type(value) is not str:
        raise _mistyped(field, "a string", value)
    if not value or value.isspace():
        raise _Bad(field, "must not be empty")
    return value


def _unknown(
    field_prefix: str, obj: Mapping[str, Any], known: frozenset[str], order: tuple[str, ...]
) -> None:
    extra = [k for k in obj if k not in known]
    if extra:
        name = _field_name(field_prefix, extra[0])
        raise _Bad(name, f"unknown field; known fields: {', '.join(order)}")


_PLAIN_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,40}")


def _field_name(prefix: str, key: str) -> str:
    """`prefix.key` for plain keys; a JSON-quoted key otherwise, so a message stays one line."""
    if _PLAIN_KEY_RE.fullmatch(key):
        return f"{prefix}{key}"
    return f"{prefix.rstrip('.')}[{_short(key)}]"


# --- suite.toml --------------------------------------------------------------------------------


def _toml_key_line(text: str, key: str, table: str | None) -> int | None:
    """Best-effort line of `key = ...` or `[key]` (tomllib gives no positions in valid TOML)."""
    current: str | None = None
    assign = re.compile(rf"\s*[\"']?{re.escape(key)}[\"']?\s*=")
    header = re.compile(r"\s*\[\s*([^\]]+?)\s*\]")
    for number, line in enumerate(text.split("\n"), start=1):
        m = header.match(line)
        if m:
            current = m.group(1).strip("\"'[")
            if table is None and current == key:
                return number
            continue
        if current == table and assign.match(line):
            return number
    return None


def _parse_suite_toml(file: str, data: bytes) -> tuple[str, str, str, str, dict[str, Any]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        at = data[: exc.start].count(b"\n") + 1
        raise SuiteError(file, "not valid UTF-8 text", line=at) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = _TOML_POS_RE.search(msg)
        line = int(m.group(1)) if m else None
        reason = _TOML_POS_RE.sub("", msg).strip()
        where = f" (column {m.group(2)})" if m else ""
        raise SuiteError(file, f"TOML syntax error: {reason}{where}", line=line) from None

    def bad(field: str, message: str, table: str | None = None) -> SuiteError:
        key = field.rsplit(".", 1)[-1]
        return SuiteError(file, message, line=_toml_key_line(text, key, table), field=field)

    for key in doc:
        if key not in _TOML_TOP_FIELDS:
            known = ", ".join(_TOML_TOP_FIELDS)
            raise bad(_field_name("", key), f"unknown field; known fields: {known}")
    for key in ("name", "version"):
        if key not in doc:
            raise SuiteError(file, "missing required field", field=key)
    name = doc["name"]
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise bad("name", f"expected a name of letters, digits, '_', '.', '-'; got {_short(name)}")
    version = doc["version"]
    if not isinstance(version, str) or not version.strip():
        raise bad("version", f"expected a non-empty string, got {_got(version)}")
    texts: dict[str, str] = {}
    for key in ("source", "license"):
        value = doc.get(key, "")
        if not isinstance(value, str):
            raise bad(key, f"expected a string, got {_got(value)}")
        texts[key] = value

    raw = doc.get("defaults", {})
    if not isinstance(raw, dict):
        raise bad("defaults", "expected a [defaults] table")
    defaults: dict[str, Any] = {}
    for key, value in raw.items():
        field = f"defaults.{key}"
        if key == "image_placement":
            if not isinstance(value, str) or value not in IMAGE_PLACEMENTS:
                allowed = ", ".join(IMAGE_PLACEMENTS)
                raise bad(
                    field, f"unknown value {_short(value)}; allowed values: {allowed}", "defaults"
                )
        elif key == "max_new_tokens":
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise bad(field, f"expected a positive integer, got {_short(value)}", "defaults")
        elif key == "buckets":
            if not isinstance(value, str) or not value.strip():
                raise bad(
                    field, f'expected a string like "1,2-3,4-5,6+", got {_short(value)}', "defaults"
                )
        elif key == "thresholds":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise bad(
                    field,
                    'expected a list of strings like ["safety>=0.8", "6+:helpfulness>=0.7"]',
                    "defaults",
                )
            value = tuple(value)
        else:
            known = ", ".join(DEFAULTS_FIELDS)
            field = _field_name("defaults.", key)
            raise bad(field, f"unknown field; known fields: {known}", "defaults")
        defaults[key] = value
    _check_specs(file, text, defaults)
    return name, version, texts["source"], texts["license"], defaults


def _check_specs(file: str, text: str, defaults: dict[str, Any]) -> None:
    """Parses `[defaults] buckets` and `thresholds` now, at collection, so that a bad spec is
    reported against suite.toml (`suite.toml:7: [defaults] buckets: bad bucket '4+' ...`) and
    not later under the name of an option the user never passed."""

    def at(key: str) -> int | None:
        return _toml_key_line(text, key, "defaults")

    try:
        buckets = Buckets.parse(defaults.get("buckets", DEFAULT_BUCKETS), "[defaults] buckets")
    except ConfigError as exc:
        raise SuiteError(file, str(exc), line=at("buckets")) from None
    origin = "[defaults] thresholds"
    try:
        thresholds = [parse_threshold(spec, origin) for spec in defaults.get("thresholds", ())]
    except ConfigError as exc:
        raise SuiteError(file, str(exc), line=at("thresholds")) from None
    known = (*buckets.names, ALL)
    for t in thresholds:
        if t.bucket is not None and t.bucket not in known:
            where = "[defaults] buckets" if "buckets" in defaults else "the default buckets"
            raise SuiteError(
                file,
                f"{origin}: threshold '{t}' names bucket {t.bucket!r}, which is not one of "
                f"{where}: {', '.join(known)}",
                line=at("thresholds"),
            )


# --- images -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _FileImage:
    """Reads a suite image lazily and checks it is still the file that was verified at load."""

    path: str  # resolved, so a later chdir does not break it; never shown to users
    sha256: str
    where: str  # the suite folder as the user gave it, joined with the image path

    def __call__(self) -> bytes:
        try:
            data = Path(self.path).read_bytes()
        except OSError as exc:
            raise SuiteError(self.where, f"cannot read image: {exc.strerror}") from None
        if hashlib.sha256(data).hexdigest() != self.sha256:
            raise SuiteError(self.where, "image changed on disk since the suite was loaded")
        return data


class _Images:
    """Validates image paths of one suite, reading and verifying each distinct file once."""

    def __init__(self, root: Path) -> None:
        self._given = root
        self._root = root.resolve()
        self._by_raw: dict[str, ImageRef | _Bad] = {}
        self._by_rel: dict[str, ImageRef | _Bad] = {}
        # (path, caption) -> the image with that caption: twins share one object.
        self._captioned: dict[tuple[str, str], ImageRef] = {}

    def get(self, raw: str) -> ImageRef:
        found = self._by_raw.get(raw)
        if found is None:
            found = self._by_raw[raw] = self._check(raw)
        if isinstance(found, _Bad):
            raise found
        return found

    def captioned(self, raw: str, caption: str) -> ImageRef:
        """The image at `raw` carrying `caption` (`image_caption`)."""
        key = (raw, caption)
        found = self._captioned.get(key)
        if found is None:
            found = self._captioned[key] = replace(self.get(raw), caption=caption)
        return found

    def _check(self, raw: str) -> ImageRef | _Bad:
        shown = _short(raw)
        if "\\" in raw:
            return _Bad("image", f"{shown}: use '/' as the path separator (POSIX paths)")
        if "\x00" in raw:
            return _Bad("image", f"{shown}: path contains a NUL character")
        if raw.startswith("/") or _DRIVE_RE.match(raw):
            return _Bad(
                "image", f"{shown}: absolute paths are not allowed; use a path inside the suite"
            )
        rel = posixpath.normpath(raw)
        if rel == ".." or rel.startswith("../"):
            return _Bad("image", f"{shown}: path leaves the suite folder")
        if rel == ".":
            return _Bad("image", f"{shown}: not an image file path")
        found = self._by_rel.get(rel)
        if found is None:
            found = self._by_rel[rel] = self._read(rel, shown)
        return found

    def _read(self, rel: str, shown: str) -> ImageRef | _Bad:
        full = self._root / rel
        try:
            real = full.resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: symlink loop (older Pythons)
            return _Bad("image", f"{shown}: cannot resolve path ({exc})")
        if not real.is_relative_to(self._root):
            return _Bad("image", f"{shown}: resolves outside the suite folder (a symlink?)")
        if not real.is_file():
            what = "is not a file" if real.exists() else "no such file in the suite folder"
            return _Bad("image", f"{shown}: {what}")
        try:
            data = real.read_bytes()
        except OSError as exc:
            return _Bad("image", f"{shown}: cannot read ({exc.strerror})")
        try:
            verify_image(data)
        except ImageProblem as exc:
            return _Bad("image", f"{shown}: {exc}")
        sha = hashlib.sha256(data).hexdigest()
        return ImageRef(sha, _FileImage(str(real), sha, str(self._given / rel)), rel)


# --- dialogues.jsonl ----------------------------------------------------------------------------


def _turns(value: object) -> tuple[Turn, ...]:
    if not isinstance(value, list):
        raise _mistyped("turns", "an array of {role, content} objects", value)
    if not value:
        raise _Bad("turns", "must hold at least one user turn")
    turns: list[Turn] = []
    previous = ""
    for i, item in enumerate(value):
        if type(item) is not dict:
            raise _mistyped(f"turns[{i}]", "an object {role, content}", item)
        if len(item) != 2 or "role" not in item or "content" not in item:
            _unknown(f"turns[{i}].", item, _TURN_FIELDS, _ROLE_ORDER)
            missing = "role" if "role" not in item else "content"
            raise _Bad(f"turns[{i}].{missing}", "missing required field")
        role = item["role"]
        if role != "user" and role != "assistant":
            _enum(f"turns[{i}].role", role, _ROLES)
        content = item["content"]
        if type(content) is not str or not content or content.isspace():
            _text(f"turns[{i}].content", content)
        if i == 0 and role != "user":
            raise _Bad(f"turns[{i}].role", "a dialogue starts with a user turn")
        if role == "assistant" and previous == "assistant":
            raise _Bad(f"turns[{i}].role", "two assistant turns in a row")
        previous = role
        turns.append(Turn(role, content))
    if previous != "user":
        raise _Bad(f"turns[{len(value) - 1}].role", "a dialogue ends with a user turn")
    return tuple(turns)


def _questions(value: object) -> tuple[Question, ...]:
    if value is None:
        return ()
    if type(value) is not list:
        raise _mistyped("questions", "an array of question objects", value)
    out: list[Question] = []
    for i, item in enumerate(value):
        # The fast check accepts exactly what _question_checked accepts; the slow one explains.
        q = _question_fast(item) or _question_checked(f"questions[{i}]", item)
        out.append(q)
    return tuple(out)


def _question_fast(item: object) -> Question | None:
    """The common, valid case without building messages; None means "look closer"."""
    if type(item) is not dict:
        return None
    text = item.get("question")
    if type(text) is not str or not text or text.isspace():
        return None
    tag = item.get("tag")
    if tag is not None and type(tag) is not str:
        return None
    kind = item.get("type")
    answer = item.get("answer")
    if kind == "mcq":
        options = item.get("options")
        if not item.keys() <= _MCQ_FIELDS or type(options) is not list:
            return None
        if not 2 <= len(options) <= _MAX_OPTIONS:
            return None
        for option in options:
            if type(option) is not str or not option or option.isspace():
                return None
        if (
            type(answer) is not str
            or len(answer) != 1
            or not "A" <= answer < _LETTERS[len(options)]
        ):
            return None
        return Question("mcq", text, answer, tuple(options), tag)
    if kind == "tf" and type(answer) is bool and item.keys() <= _TF_FIELDS:
        return Question("tf", text, "true" if answer else "false", (), tag)
    return None


def _question_checked(field: str, item: object) -> Question:
    if not isinstance(item, dict):
        raise _mistyped(field, "an object", item)
    if "type" not in item:
        raise _Bad(f"{field}.type", "missing required field (mcq or tf)")
    kind = _enum(f"{field}.type", item["type"], _QUESTION_TYPES)
    if kind == "mcq":
        _unknown(f"{field}.", item, _MCQ_FIELDS, _MCQ_ORDER)
    else:
        _unknown(f"{field}.", item, _TF_FIELDS, _TF_ORDER)
    for key in _MCQ_ORDER[:-1] if kind == "mcq" else _TF_ORDER[:-1]:
        if key not in item:
            raise _Bad(f"{field}.{key}", "missing required field")
    text = _text(f"{field}.question", item["question"])
    tag = item.get("tag")
    if tag is not None and not isinstance(tag, str):
        raise _mistyped(f"{field}.tag", "a string or null", tag)
    answer = item["answer"]
    if kind == "tf":
        if not isinstance(answer, bool):
            raise _mistyped(f"{field}.answer", "true or false", answer)
        return Question("tf", text, "true" if answer else "false", (), tag)
    options = item["options"]
    if not isinstance(options, list):
        raise _mistyped(f"{field}.options", "an array of strings", options)
    if not 2 <= len(options) <= _MAX_OPTIONS:
        raise _Bad(f"{field}.options", f"needs 2 to {_MAX_OPTIONS} options, got {len(options)}")
    for j, option in enumerate(options):
        _text(f"{field}.options[{j}]", option)
    last = _LETTERS[len(options) - 1]
    if not isinstance(answer, str) or len(answer) != 1 or not "A" <= answer <= last:
        raise _Bad(
            f"{field}.answer",
            f"expected an option letter A-{last}, got {_got(answer)}",
        )
    return Question("mcq", text, answer, tuple(options), tag)


def _check_id(value: object) -> str:
    if not isinstance(value, str):
        raise _mistyped("id", "a string", value)
    if not _ID_RE.fullmatch(value):
        raise _Bad("id", f"{_short(value)}: use only letters, digits and _ . - /")
    if value.startswith("/") or value.endswith("/") or "//" in value:
        raise _Bad("id", f"{_short(value)}: no leading or trailing '/' and no '//'")
    if any(part in (".", "..") for part in value.split("/")):
        raise _Bad("id", f"{_short(value)}: '.' and '..' are not allowed as id segments")
    if not _ID_FAST_RE.fullmatch(value):  # the two spellings of the rules must never disagree
        raise _Bad("id", f"{_short(value)}: not a valid id")
    return value


def _dialogue(obj: dict[str, Any], suite: str, images: _Images) -> Dialogue:
    # Each check is inlined for the valid case and calls the helper that explains only on
    # failure: this runs 30,000 times while a benchmark-scale suite is collected.
    if not obj.keys() <= _KNOWN_FIELDS:
        _unknown("", obj, _KNOWN_FIELDS, DIALOGUE_FIELDS)
    for key in _REQUIRED_FIELDS:
        if key not in obj:
            raise _Bad(key, "missing required field")
    ident = obj["id"]
    if type(ident) is not str or not _ID_FAST_RE.fullmatch(ident):
        _check_id(ident)
    pair = obj.get("pair")
    if pair is not None and (type(pair) is not str or not pair or pair.isspace()):
        _text("pair", pair)
    label = obj["label"]
    if type(label) is not str or label not in _LABEL_SET:
        _enum("label", label, LABELS)
    setting = obj["setting"]
    if type(setting) is not str or setting not in _SETTING_SET:
        _enum("setting", setting, SETTINGS)
    modality = obj["modality"]
    if type(modality) is not str or modality not in _MODALITY_SET:
        _enum("modality", modality, MODALITIES)
    category = obj["category"]
    if type(category) is not str or not category or category.isspace():
        _text("category", category)
    intent = obj.get("intent")
    if intent is not None and type(intent) is not str:
        raise _mistyped("intent", "a string or null", intent)
    raw_image = obj.get("image")
    image: ImageRef | None = None
    if modality == "multimodal":
        if raw_image is None:
            raise _Bad("image", "a multimodal dialogue needs an image")
        if type(raw_image) is not str:
            raise _mistyped("image", "a path string", raw_image)
        caption = obj.get("image_caption")
        if caption is None:
            image = images.get(raw_image)
        else:
            if type(caption) is not str or not caption or caption.isspace():
                _text("image_caption", caption)
            image = images.captioned(raw_image, caption)
    elif raw_image is not None:
        raise _Bad("image", "a text dialogue has no image (null or absent)")
    elif obj.get("image_caption") is not None:
        raise _Bad("image_caption", "a text dialogue has no image to caption (null or absent)")
    turns = _turns(obj["turns"])
    risk_turn = obj.get("risk_turn")
    if label == "unsafe":
        if risk_turn is None:
            raise _Bad("risk_turn", "required for an unsafe dialogue (1-based user turn)")
        if type(risk_turn) is not int:  # bool is a subclass of int, not the same type
            raise _mistyped("risk_turn", "an integer", risk_turn)
        users = sum(1 for t in turns if t.role == "user")
        if not 1 <= risk_turn <= users:
            raise _Bad("risk_turn", f"must be between 1 and {users} (user turns), got {risk_turn}")
    elif risk_turn is not None:
        raise _Bad("risk_turn", "must be null for a safe dialogue")
    questions = _questions(obj.get("questions"))
    source = obj.get("source")
    if source is None:
        source = {}
    elif type(source) is not dict:
        raise _mistyped("source", "an object", source)
    trajectory = obj.get("trajectory")
    if trajectory is not None and (
        type(trajectory) is not str or not trajectory or trajectory.isspace()
    ):
        _text("trajectory", trajectory)
    return Dialogue(
        suite=suite,
        id=ident,
        label=label,
        setting=setting,
        modality=modality,
        category=category,
        turns=turns,
        pair=pair,
        intent=intent,
        image=image,
        risk_turn=risk_turn,
        questions=questions,
        source=source,
        trajectory=trajectory,
    )


def _suite_folder(path: str | os.PathLike[str]) -> Path:
    given = Path(path)
    if given.is_dir():
        return given
    if given.name == SUITE_TOML and given.is_file():
        return given.parent
    if given.exists():
        raise SuiteError(str(given), "expected a suite folder or its suite.toml")
    what = "no such file" if given.name == SUITE_TOML else "no such suite folder"
    raise SuiteError(str(given), what)


def _read(file: Path, what: str) -> bytes:
    try:
        return file.read_bytes()
    except FileNotFoundError:
        advice = release_advice(str(file.parent)) if file.name == SUITE_TOML else None
        if advice is not None:
            raise SuiteError(str(file.parent), advice) from None
        raise SuiteError(
            str(file), f"missing {what}: a suite folder holds suite.toml, dialogues.jsonl, images/"
        ) from None
    except OSError as exc:
        raise SuiteError(str(file), f"cannot read: {exc.strerror}") from None


def load_suite(path: str | os.PathLike[str]) -> Suite:
    """Loads and validates a native suite; `path` is the suite folder or its suite.toml."""
    # Loading builds millions of small acyclic objects; the cyclic collector would rescan the
    # growing heap again and again (measured: about half the load time of a 30k-line suite).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _load_suite(path)
    finally:
        if was_enabled:
            gc.enable()


def _load_suite(path: str | os.PathLike[str]) -> Suite:
    folder = _suite_folder(path)
    toml_file = folder / SUITE_TOML
    jsonl_file = folder / DIALOGUES_JSONL
    toml_bytes = _read(toml_file, SUITE_TOML)
    name, version, source, license_, defaults = _parse_suite_toml(str(toml_file), toml_bytes)
    data = _read(jsonl_file, DIALOGUES_JSONL)
    file = str(jsonl_file)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        at = data[: exc.start].count(b"\n") + 1
        raise SuiteError(file, f"not valid UTF-8 text ({exc.reason})", line=at) from None
    text = text.removeprefix("\ufeff")  # a BOM left by some editors

    images = _Images(folder)
    dialogues: list[Dialogue] = []
    id_lines: dict[str, int] = {}
    pairs: dict[str, list[tuple[int, str]]] = {}
    loads = json.loads
    # split("\n"), not splitlines(): JSON strings may hold U+2028 and other line separators.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line or line.isspace():
            continue
        try:
            obj = loads(line)
        except json.JSONDecodeError as exc:
            raise SuiteError(
                file, f"invalid JSON: {exc.msg} (column {exc.colno})", line=number
            ) from None
        except RecursionError:
            raise SuiteError(file, "invalid JSON: nested too deeply", line=number) from None
        except ValueError:  # not a JSONDecodeError: an integer literal too long to convert
            raise SuiteError(file, "invalid JSON: a number is too long", line=number) from None
        if not isinstance(obj, dict):
            raise SuiteError(
                file,
                f"expected a JSON object (one dialogue per line), got {_kind(obj)}",
                line=number,
            )
        try:
            dialogue = _dialogue(obj, name, images)
        except _Bad as bad:
            raise SuiteError(file, bad.message, line=number, field=bad.field) from None
        first = id_lines.get(dialogue.id)
        if first is not None:
            raise SuiteError(
                file,
                f"duplicate id {_short(dialogue.id)}: also on line {first}; ids must be unique",
                line=number,
                field="id",
            )
        id_lines[dialogue.id] = number
        if dialogue.pair is not None:
            _add_pair_member(file, pairs, dialogue, number)
        dialogues.append(dialogue)

    if not dialogues:
        raise SuiteError(file, "the suite has no dialogues")
    for pair, members in pairs.items():
        if len(members) == 1:
            at, label = members[0]
            other = "an unsafe" if label == "safe" else "a safe"
            raise SuiteError(
                file,
                f"pair {_short(pair)} has only this {label} member; it needs {other} twin",
                line=at,
                field="pair",
            )

    return Suite(
        name=name,
        version=version,
        root=str(folder),
        dialogues=tuple(dialogues),
        content_hash=content_hash(dialogues, defaults),
        source=source,
        license=license_,
        defaults=defaults,
    )


def _add_pair_member(
    file: str, pairs: dict[str, list[tuple[int, str]]], dialogue: Dialogue, number: int
) -> None:
    assert dialogue.pair is not None
    members = pairs.setdefault(dialogue.pair, [])
    if len(members) >= 2:
        lines = " and ".join(str(line) for line, _ in members)
        raise SuiteError(
            file,
            f"pair {_short(dialogue.pair)} already has two members (lines {lines}); "
            "a pair has one safe and one unsafe dialogue",
            line=number,
            field="pair",
        )
    if members and members[0][1] == dialogue.label:
        raise SuiteError(
            file,
            f"pair {_short(dialogue.pair)} has two {dialogue.label} members "
            f"(lines {members[0][0]} and {number}); a pair has one safe and one unsafe dialogue",
            line=number,
            field="pair",
        )
    members.append((number, dialogue.label))
