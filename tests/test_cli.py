"""The offline command line: import a release into a native suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pytest_mtmcs.suite import load_suite, resolve_suite

REFERENCE = Path(__file__).resolve().parent / "data" / "reference"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_mtmcs", *args], capture_output=True, text=True
    )


def test_import_mtmcs_bench_writes_a_native_suite_that_loads_back(tmp_path):
    out = tmp_path / "mtmcs"
    proc = run_cli("import", f"mtmcs-bench:{REFERENCE / 'mtmcs'}", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "wrote 16 dialogues" in proc.stdout
    native = load_suite(out)
    imported = resolve_suite(f"mtmcs-bench:{REFERENCE / 'mtmcs'}")
    assert [d.id for d in native.dialogues] == [d.id for d in imported.dialogues]
    assert [d.turns for d in native.dialogues] == [d.turns for d in imported.dialogues]
    assert [d.image.sha256 if d.image else None for d in native.dialogues] == [
        d.image.sha256 if d.image else None for d in imported.dialogues
    ]
    # The same suite hash: a baseline recorded from the release compares with the native copy.
    assert native.content_hash == imported.content_hash


def test_import_safemt_keeps_scripted_history(tmp_path):
    out = tmp_path / "safemt"
    proc = run_cli("import", f"safemt:{REFERENCE / 'safemt' / 'Data'}", str(out))
    assert proc.returncode == 0, proc.stderr
    native = load_suite(out)
    assert len(native.dialogues) == 18
    assert native.defaults["image_placement"] == "first"
    four = [d for d in native.dialogues if d.user_turns == 4]
    assert four and all(d.live_user_turns() == (4,) for d in four)
    imported = resolve_suite(f"safemt:{REFERENCE / 'safemt' / 'Data'}")
    assert native.content_hash == imported.content_hash


def test_import_error_is_one_line_without_traceback(tmp_path):
    proc = run_cli("import", f"mtmcs-bench:{tmp_path / 'nowhere'}", str(tmp_path / "out"))
    assert proc.returncode == 4
    assert proc.stderr.startswith("pytest-mtmcs: error: ")
    assert "Traceback" not in proc.stderr


def test_import_of_a_release_folder_without_its_prefix_names_the_spec(tmp_path):
    data = REFERENCE / "safemt" / "Data"
    out = tmp_path / "out"
    proc = run_cli("import", str(data), str(out))
    assert proc.returncode == 4
    assert proc.stderr == (
        f"pytest-mtmcs: error: {data}: no suite.toml here; this looks like a SafeMT release: "
        f"use pytest-mtmcs import safemt:{data} {out}\n"
    )
    assert not out.exists()
