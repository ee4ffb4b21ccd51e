from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_mtmcs.backends import cache as cache_module
from pytest_mtmcs.backends.cache import (
    RESPONSE_NAMESPACE,
    NullCache,
    ResponseCache,
    cache_key,
    judgment_namespace,
)
from pytest_mtmcs.errors import MtmcsError
from pytest_mtmcs.records import GenerationSettings, ImageRef, Message

REPO = Path(__file__).resolve().parents[1]


def _image(sha: str) -> ImageRef:
    def boom() -> bytes:
        raise AssertionError("cache_key must not read image bytes")

    return ImageRef(sha, boom)


FP: dict[str, Any] = {"spec": "hf:tiny-qwen2-vl", "revision": "abc123", "dtype": "float32"}
SETTINGS = GenerationSettings().as_dict()
MESSAGES = (
    Message("user", "What is in this picture?", _image("a" * 64)),
    Message("assistant", "A kitchen."),
    Message("user", "How do I clean the oven?"),
)


def key(**overrides: Any) -> str:
    args: dict[str, Any] = {
        "namespace": RESPONSE_NAMESPACE,
        "fingerprint": FP,
        "settings": SETTINGS,
        "messages": MESSAGES,
    }
    args.update(overrides)
    return cache_key(**args)


# --- keys ------------------------------------------------------------------------------------


def test_key_is_sha256_hex_and_ignores_image_bytes() -> None:
    k = key()
    assert len(k) == 64
    assert int(k, 16) >= 0


def test_key_changes_with_each_part() -> None:
    base = key()
    m = list(MESSAGES)
    variants = {
        "namespace": key(namespace=judgment_namespace("rules:v1")),
        "fingerprint spec": key(fingerprint={**FP, "spec": "hf:other"}),
        "fingerprint revision": key(fingerprint={**FP, "revision": "abc124"}),
        "fingerprint dtype": key(fingerprint={**FP, "dtype": "bfloat16"}),
        "max_new_tokens": key(settings={**SETTINGS, "max_new_tokens": 64}),
        "temperature": key(settings={**SETTINGS, "temperature": 0.7}),
        "image_placement": key(settings={**SETTINGS, "image_placement": "first"}),
        "max_pixels": key(settings={**SETTINGS, "max_pixels": 1024 * 28 * 28}),
        "text": key(messages=[*m[:2], Message("user", "How do I clean the oven? ")]),
        "role": key(messages=[m[0], Message("user", "A kitchen."), m[2]]),
        "image hash": key(messages=[Message("user", m[0].text, _image("b" * 64)), *m[1:]]),
        "no image": key(messages=[Message("user", m[0].text), *m[1:]]),
        "prefix": key(messages=m[:1]),
        "system": key(messages=[Message("system", "Be safe."), *m]),
    }
    assert base not in variants.values()
    assert len(set(variants.values())) == len(variants)


def test_key_is_stable_across_spelling() -> None:
    # Key order and int/float spelling of equal numbers do not matter; tuples equal lists.
    reordered = dict(reversed(list(FP.items())))
    assert key(fingerprint=reordered) == key()
    assert key(settings={**SETTINGS, "temperature": 0}) == key(
        settings={**SETTINGS, "temperature": 0.0}
    )
    assert key(messages=list(MESSAGES)) == key(messages=tuple(MESSAGES))
    assert key(fingerprint={**FP, "x": (1, 2)}) == key(fingerprint={**FP, "x": [1, 2]})
    # Equal image hashes from different sources (fetchers) give equal keys.
    same = Message("user", MESSAGES[0].text, ImageRef("a" * 64, lambda: b"", where="elsewhere"))
    assert key(messages=[same, *MESSAGES[1:]]) == key()


def test_key_refuses_secrets_and_unhashable_values() -> None:
    with pytest.raises(ValueError, match="credentials"):
        key(fingerprint={**FP, "api_key": "sk-123"})
    with pytest.raises(ValueError, match="credentials"):
        key(settings={**SETTINGS, "headers": {"Authorization": "Bearer x"}})
    with pytest.raises(ValueError, match="finite"):
        key(settings={**SETTINGS, "temperature": float("nan")})
    with pytest.raises(TypeError, match="bytes"):
        key(fingerprint={**FP, "weights": b"\x00"})
    with pytest.raises(ValueError, match="namespace"):
        key(namespace="")


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_maps = st.dictionaries(
    st.text(alphabet="abcdefgh_", min_size=1, max_size=6), json_scalars, max_size=4
)
messages = st.lists(
    st.builds(
        Message,
        role=st.sampled_from(["system", "user", "assistant"]),
        text=st.text(max_size=30),
        image=st.one_of(
            st.none(), st.text(alphabet="0123456789abcdef", min_size=64, max_size=64).map(_image)
        ),
    ),
    max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(
    ns=st.sampled_from(["response", "judgment:rules:v1", "judgment:llm:x"]),
    fp=json_maps,
    gs=json_maps,
    msgs=messages,
    data=st.data(),
)
def test_key_stable_for_equal_inputs_and_sensitive_to_changes(
    ns: str, fp: dict[str, Any], gs: dict[str, Any], msgs: list[Message], data: st.DataObject
) -> None:
    k = cache_key(namespace=ns, fingerprint=fp, settings=gs, messages=msgs)
    # Equal inputs rebuilt from scratch (copies, reversed key order) give the same key.
    copy_fp = dict(reversed(list(fp.items())))
    copy_msgs = [
        Message(m.role, m.text, None if m.image is None else _image(m.image.sha256)) for m in msgs
    ]
    assert cache_key(namespace=ns, fingerprint=copy_fp, settings=dict(gs), messages=copy_msgs) == k

    # Any single change changes the key.
    what = data.draw(st.sampled_from(["ns", "fp", "gs", "text", "role", "image", "append"]))
    new_ns, new_fp, new_gs, new_msgs = ns, dict(fp), dict(gs), list(msgs)
    if what == "ns":
        new_ns = ns + "x"
    elif what == "fp":
        new_fp["zz_changed"] = True
    elif what == "gs":
        new_gs["zz_changed"] = 1
    elif what == "append" or not msgs:
        new_msgs.append(Message("user", data.draw(st.text(max_size=5))))
    else:
        i = data.draw(st.integers(0, len(msgs) - 1))
        m = msgs[i]
        if what == "text":
            new_msgs[i] = Message(
                m.role, m.text + data.draw(st.text(min_size=1, max_size=3)), m.image
            )
        elif what == "role":
            roles = [r for r in ("system", "user", "assistant") if r != m.role]
            new_msgs[i] = Message(data.draw(st.sampled_from(roles)), m.text, m.image)
        else:
            other = None if m.image is not None else _image("f" * 64)
            new_msgs[i] = Message(m.role, m.text, other)
    assert cache_key(namespace=new_ns, fingerprint=new_fp, settings=new_gs, messages=new_msgs) != k


# --- the store -------------------------------------------------------------------------------


def test_round_trip_counters_and_persistence(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "cache.sqlite"
    with ResponseCache(path) as cache:
        assert path.exists()
        assert cache.get("k1") is None
        cache.put("k1", "reply one", model="hf:tiny")
        cache.put_many(
            {"k2": "reply two", "k3": "ünïcödé \x00 and NUL"}, namespace="judgment:rules"
        )
        assert cache.get("k1") == "reply one"
        assert cache.get_many(["k1", "k2", "k3", "k4", "k1"]) == {
            "k1": "reply one",
            "k2": "reply two",
            "k3": "ünïcödé \x00 and NUL",
        }
        assert cache.stats() == {"hits": 4, "misses": 2, "writes": 3}
        assert cache.count() == 3
        assert cache.count("judgment:rules") == 2
    with ResponseCache(path) as again:
        assert again.get("k3") == "ünïcödé \x00 and NUL"
        assert again.stats() == {"hits": 1, "misses": 0, "writes": 0}
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = conn.execute(
        "SELECT key, namespace, model, created FROM responses ORDER BY key"
    ).fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("k1", "response", "hf:tiny"),
        ("k2", "judgment:rules", ""),
        ("k3", "judgment:rules", ""),
    ]
    assert all(abs(r[3] - time.time()) < 600 for r in rows)
    conn.close()


def test_first_writer_wins(tmp_path: Path) -> None:
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        cache.put_many({"a": "first", "b": "first"})
        cache.put_many({"a": "second", "c": "second"})
        assert cache.get_many(["a", "b", "c"]) == {"a": "first", "b": "first", "c": "second"}
        assert cache.writes == 3
        cache.put_many({})
        assert cache.writes == 3


def test_many_keys_in_one_lookup(tmp_path: Path) -> None:
    items = {f"k{i}": f"v{i}" for i in range(1234)}
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        cache.put_many(items)
        assert cache.get_many([*items, "missing"]) == items
        assert (cache.hits, cache.misses, cache.writes) == (1234, 1, 1234)


def test_stored_model_spec_carries_no_url_credentials(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    with ResponseCache(path) as cache:
        cache.put("k", "v", model="openai:qwen@http://user:hunter2@10.0.0.1:8000/v1")
    with ResponseCache(path) as cache:
        assert cache.get("k") == "v"
    conn = sqlite3.connect(path)
    (model,) = conn.execute("SELECT model FROM responses").fetchone()
    conn.close()
    assert "hunter2" not in model
    assert model.endswith("://***@10.0.0.1:8000/v1")


def test_rejects_non_string_values(tmp_path: Path) -> None:
    with ResponseCache(tmp_path / "c.sqlite") as cache, pytest.raises(TypeError):
        cache.put("k", b"bytes")  # type: ignore[arg-type]


def test_null_cache_stores_nothing() -> None:
    with NullCache() as cache:
        cache.put("k", "v")
        cache.put_many({"a": "1", "b": "2"})
        assert cache.get("k") is None
        assert cache.get_many(["a", "b", "a"]) == {}
        assert cache.stats() == {"hits": 0, "misses": 3, "writes": 0}
        assert cache.count() == 0


# --- bad files ---------------------------------------------------------------------------------


def test_corrupt_file_is_a_clear_error_and_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    junk = b"this is not a database at all" * 200
    path.write_bytes(junk)
    with pytest.raises(MtmcsError) as info:
        ResponseCache(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "corrupt" in msg
    assert "--mtmcs-no-cache" in msg
    assert "delete" in msg
    assert path.read_bytes() == junk


def test_damaged_pages_are_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    with ResponseCache(path) as cache:
        cache.put_many({f"k{i}": "x" * 200 for i in range(500)})
    # Fold the WAL into the main file, then scribble over the pages after the header page.
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(path.read_bytes())
    page = 4096
    data[page : len(data)] = b"\xff" * (len(data) - page)
    path.write_bytes(bytes(data))
    with pytest.raises(MtmcsError, match=r"corrupt|not an SQLite"), ResponseCache(path) as cache:
        cache.get_many([f"k{i}" for i in range(500)])


def test_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(MtmcsError, match=r"not a pytest-mtmcs cache \(tables: users\)"):
        ResponseCache(path)


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    ResponseCache(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(MtmcsError, match="version 99, newer"):
        ResponseCache(path)


def test_directory_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MtmcsError, match="is a directory"):
        ResponseCache(tmp_path)


# --- locks and processes -------------------------------------------------------------------


def test_waits_out_a_lock_held_past_the_busy_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.sqlite"
    ResponseCache(path).close()
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    cache = ResponseCache(path, busy_timeout_s=0.05, lock_retry_s=600.0)
    busy: list[bool] = []
    real_is_busy = cache_module._is_busy

    def is_busy(exc: sqlite3.Error) -> bool:
        # The lock is released only once the cache has been refused three times past its busy
        # timeout: the retrying is proven by counts, not by a clock.
        busy.append(real_is_busy(exc))
        if len(busy) == 3:
            holder.execute("COMMIT")
        return busy[-1]

    monkeypatch.setattr(cache_module, "_is_busy", is_busy)
    cache.put("k", "v")
    assert len(busy) >= 3 and all(busy)
    assert cache.get("k") == "v"
    cache.close()
    holder.close()


def test_a_lock_that_never_clears_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    ResponseCache(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    cache = ResponseCache(path, busy_timeout_s=0.02, lock_retry_s=0.2)
    with pytest.raises(MtmcsError, match="locked"):
        cache.put("k", "v")
    holder.execute("ROLLBACK")
    holder.close()
    cache.put("k", "v")
    assert cache.get("k") == "v"
    cache.close()


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


WRITER = """
import sys
from pytest_mtmcs.backends.cache import ResponseCache
path, first, n, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
cache = ResponseCache(path)
for start in range(first, first + n, batch):
    cache.put_many({f"k{i}": f"v{i}" for i in range(start, min(start + batch, first + n))})
print(cache.writes)
"""


def test_four_processes_writing_overlapping_keys(tmp_path: Path) -> None:
    # Fresh interpreters (like the spawn start method, and like xdist workers), all starting on
    # a file that does not exist yet, so they also race to create the schema.
    path = tmp_path / "shared" / "cache.sqlite"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(w * 100), "200", str(1 + w)],
            env=_child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(4)
    ]
    writes = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        writes.append(int(out))
    # Keys k0..k499, each overlapping key written by two processes but stored once.
    assert sum(writes) == 500
    with ResponseCache(path) as cache:
        assert cache.count() == 500
        assert cache.get_many([f"k{i}" for i in range(500)]) == {
            f"k{i}": f"v{i}" for i in range(500)
        }


KILLED = """
import sys
from pytest_mtmcs.backends.cache import ResponseCache
path, first = sys.argv[1], int(sys.argv[2])
cache = ResponseCache(path)
i = first
while True:
    cache.put(f"k{i}", f"value {i} " + "x" * 300)
    i += 1
    # Reported only after the commit returned: everything reported must survive the kill.
    print(i, flush=True)
"""


def test_sigkill_mid_write_loses_nothing_committed(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    found = 0
    for round_, target in enumerate((37, 151, 263)):
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLED, str(path), str(found)],
            env=_child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        reported = found
        for line in proc.stdout:
            reported = int(line)
            if reported >= target:
                break
        os.kill(proc.pid, signal.SIGKILL)
        # Drain through the same reader: its buffer may already hold lines printed before death.
        for line in proc.stdout:
            reported = int(line)
        proc.wait(timeout=60)
        assert proc.stderr is not None
        err = proc.stderr.read()
        assert proc.returncode == -signal.SIGKILL, err
        assert reported >= target, (round_, err)

        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        count = conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        conn.close()
        # At most the one commit whose report the kill cut off may exceed what was reported.
        assert reported <= count <= reported + 1
        with ResponseCache(path) as cache:
            got = cache.get_many([f"k{i}" for i in range(count)])
        assert len(got) == count
        assert got[f"k{count - 1}"].startswith(f"value {count - 1} ")
        found = count


def _forked_child(cache: ResponseCache, conn: Any) -> None:
    try:
        cache.put("from-child", "yes")
        conn.send((cache.get("from-parent"), cache.writes))
    except Exception as exc:  # any failure must reach the parent, not hang it
        conn.send(("error", repr(exc)))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_forked_child_opens_its_own_connection(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    cache = ResponseCache(path)
    cache.put("from-parent", "yes")
    ctx = multiprocessing.get_context("fork")
    parent_end, child_end = ctx.Pipe()
    proc = ctx.Process(target=_forked_child, args=(cache, child_end))
    proc.start()
    result = parent_end.recv()
    proc.join(30)
    assert proc.exitcode == 0
    assert result == ("yes", 2)  # the parent's write plus its own: counters were copied by fork
    # The parent's connection still works after the child used the file.
    assert cache.get("from-child") == "yes"
    cache.put("after", "fork")
    assert cache.count() == 3
    cache.close()


def test_pickles_without_its_connection(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    cache = ResponseCache(path, busy_timeout_s=5.0)
    cache.put("k", "v")
    clone = pickle.loads(pickle.dumps(cache))
    assert clone.busy_timeout_s == 5.0
    assert clone.get("k") == "v"
    assert clone.stats() == {"hits": 1, "misses": 0, "writes": 0}
    clone.close()
    cache.close()
