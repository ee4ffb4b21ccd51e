from __future__ import annotations

import io
import re

from hypothesis import given
from hypothesis import strategies as st

from pytest_mtmcs.harness.progress import Progress, format_duration, format_finish, format_progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class Broken(io.StringIO):
    def write(self, s: str) -> int:
        raise OSError("broken pipe")


def test_format_progress_example() -> None:
    # 1192 dialogues left at 312 per 30 s -> 114.6 s; 1236 turns in 30 s -> 41.2 turns/s.
    line = format_progress("gw0", 312, 1504, 1236, 30.0)
    assert line == "[mtmcs gw0] 312/1504 dialogues, 41.2 turns/s, ETA 0:01:55"


def test_format_progress_default_label() -> None:
    assert format_progress("mtmcs", 1, 2, 3, 1.0).startswith("[mtmcs] 1/2 dialogues, 3.0 turns/s")


def test_format_progress_at_start_has_no_division_by_zero() -> None:
    assert format_progress("gw1", 0, 10, 0, 0.0) == "[mtmcs gw1] 0/10 dialogues, 0.0 turns/s, ETA ?"
    # Turns done but no dialogue finished yet: no ETA to extrapolate from.
    assert format_progress("gw1", 0, 10, 5, 2.0).endswith("2.5 turns/s, ETA ?")


def test_format_progress_total_zero_and_done() -> None:
    assert (
        format_progress("mtmcs", 0, 0, 0, 0.0) == "[mtmcs] 0/0 dialogues, 0.0 turns/s, ETA 0:00:00"
    )
    assert format_progress("mtmcs", 7, 7, 21, 3.0).endswith("ETA 0:00:00")


def test_format_finish() -> None:
    text = format_finish("gw0", 1504, 1504, 6016, 146.0)
    assert (
        text
        == "[mtmcs gw0] done: 1504/1504 dialogues, 6016 dialogue turns in 0:02:26 (41.2 turns/s)"
    )
    assert format_finish("mtmcs", 0, 0, 0, 0.0) == (
        "[mtmcs] done: 0/0 dialogues, 0 dialogue turns in 0:00:00 (0.0 turns/s)"
    )


def test_format_duration() -> None:
    assert format_duration(0) == "0:00:00"
    assert format_duration(29.4) == "0:00:29"
    assert format_duration(29.5) == "0:00:30"
    assert format_duration(3661) == "1:01:01"
    assert format_duration(90_000) == "25:00:00"
    assert format_duration(-5) == "0:00:00"
    assert format_duration(float("nan")) == "0:00:00"
    assert format_duration(float("inf")) == "0:00:00"


@given(
    done=st.integers(0, 10**6),
    extra=st.integers(0, 10**6),
    turns=st.integers(0, 10**7),
    elapsed=st.floats(0, 10**6, allow_nan=False),
)
def test_eta_matches_the_rate_so_far(done: int, extra: int, turns: int, elapsed: float) -> None:
    total = done + extra
    line = format_progress("gw3", done, total, turns, elapsed)
    m = re.fullmatch(
        r"\[mtmcs gw3\] (\d+)/(\d+) dialogues, (\d+\.\d) turns/s, ETA (\?|(\d+):(\d\d):(\d\d))",
        line,
    )
    assert m is not None, line
    assert (int(m[1]), int(m[2])) == (done, total)
    if extra == 0:
        assert m[4] == "0:00:00"
    elif done == 0 or elapsed <= 0:
        assert m[4] == "?"
    else:
        eta = int(m[5]) * 3600 + int(m[6]) * 60 + int(m[7])
        assert abs(eta - extra * elapsed / done) <= 0.5 + 1e-6 * eta


def test_progress_throttles_and_writes_lines_for_logs() -> None:
    clock = FakeClock()
    out = io.StringIO()
    p = Progress(10, "gw0", out, min_interval_s=1.0, clock=clock)
    clock.now += 0.5
    p.advance(dialogues=1, turns=3)
    assert out.getvalue() == ""
    clock.now += 0.5
    p.advance(dialogues=1, turns=3)
    assert out.getvalue() == "[mtmcs gw0] 2/10 dialogues, 6.0 turns/s, ETA 0:00:04\n"
    clock.now += 0.9
    p.advance(dialogues=1, turns=3)
    assert out.getvalue().count("\n") == 1
    clock.now += 0.1
    p.advance(turns=1)
    assert out.getvalue().splitlines()[-1] == "[mtmcs gw0] 3/10 dialogues, 5.0 turns/s, ETA 0:00:05"
    clock.now += 2.0
    p.finish()
    p.finish()
    lines = out.getvalue().splitlines()
    assert (
        lines[-1] == "[mtmcs gw0] done: 3/10 dialogues, 10 dialogue turns in 0:00:04 (2.5 turns/s)"
    )
    assert len(lines) == 3
    assert "\r" not in out.getvalue()
    assert (p.done, p.turns) == (3, 10)


def test_progress_rewrites_in_place_on_a_terminal() -> None:
    clock = FakeClock()
    out = Tty()
    p = Progress(1000, "mtmcs", out, min_interval_s=0.5, clock=clock)
    clock.now += 1.0
    p.advance(dialogues=100, turns=100)
    first = "[mtmcs] 100/1000 dialogues, 100.0 turns/s, ETA 0:00:09"
    assert out.getvalue() == "\r" + first
    clock.now += 99.0
    p.advance(dialogues=900)
    second = "[mtmcs] 1000/1000 dialogues, 1.0 turns/s, ETA 0:00:00"
    # The shorter line blanks what is left of the longer one.
    assert len(second) < len(first)
    assert out.getvalue() == "\r" + first + "\r" + second + " " * (len(first) - len(second))
    p.finish()
    final = "[mtmcs] done: 1000/1000 dialogues, 100 dialogue turns in 0:01:40 (1.0 turns/s)"
    assert out.getvalue().endswith(second + " " * (len(first) - len(second)) + "\r" + final + "\n")
    assert out.getvalue().count("\n") == 1


def test_disabled_progress_prints_nothing_but_counts() -> None:
    clock = FakeClock()
    out = io.StringIO()
    p = Progress(5, "gw0", out, enabled=False, clock=clock)
    for _ in range(5):
        clock.now += 10
        p.advance(dialogues=1, turns=2)
    p.finish()
    assert out.getvalue() == ""
    assert (p.done, p.turns) == (5, 10)


def test_a_broken_stream_does_not_fail_the_run() -> None:
    clock = FakeClock()
    p = Progress(5, "gw0", Broken(), clock=clock)
    clock.now += 5
    p.advance(dialogues=1)
    p.finish()
    assert not p.enabled
    assert p.done == 1


def test_real_clock_default() -> None:
    out = io.StringIO()
    p = Progress(2, "gw0", out, min_interval_s=3600)
    p.advance(dialogues=2, turns=4)
    assert out.getvalue() == ""
    p.finish()
    assert out.getvalue().startswith("[mtmcs gw0] done: 2/2 dialogues, 4 dialogue turns in 0:00:00")
