"""The shard split (`--mtmcs-shard=K/N`): parsing, determinism, twins together, balance, and the
usage errors of a shard run."""

from __future__ import annotations

import random

import pytest

from pytest_mtmcs.errors import ConfigError
from pytest_mtmcs.outcome.shards import Shard, dialogue_cost, parse_shard, split_items
from pytest_mtmcs.records import Dialogue, Question, Turn


def dialogue(i: int, label: str, turns: int, questions: int, suite: str = "s") -> Dialogue:
    return Dialogue(
        suite=suite,
        id=f"{i:04d}/{label}",
        label=label,  # type: ignore[arg-type]
        setting="escalation",
        modality="text",
        category="c",
        turns=tuple(Turn("user", f"t{k}") for k in range(turns)),
        pair=f"p{i:04d}",
        questions=tuple(Question("tf", "q", "true") for _ in range(questions)),
    )


def suite(n_pairs: int = 60, seed: int = 1) -> list[Dialogue]:
    rng = random.Random(seed)
    out: list[Dialogue] = []
    for i in range(n_pairs):
        turns, questions = rng.choice([1, 2, 3, 4, 6, 8]), rng.choice([0, 2, 6])
        out += [dialogue(i, "safe", turns, questions), dialogue(i, "unsafe", turns, questions)]
    # A dialogue without a twin, and a second suite whose ids repeat the first one's.
    out.append(
        Dialogue("s", "solo", "unsafe", "scripted", "text", "c", (Turn("user", "x"),), pair=None)
    )
    out += [dialogue(i, "safe", 3, 2, suite="other") for i in range(5)]
    return out


def assignment(dialogues: list[Dialogue], n: int) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for k in range(1, n + 1):
        mine, _ = split_items(dialogues, Shard(k, n))
        for d, keep in zip(dialogues, mine, strict=True):
            if keep:
                assert (d.suite, d.id) not in out, f"{d.id} in two shards"
                out[(d.suite, d.id)] = k
    return out


@pytest.mark.parametrize("n", [2, 3, 4, 7])
def test_every_dialogue_in_exactly_one_shard_twins_together(n: int) -> None:
    ds = suite()
    where = assignment(ds, n)
    assert set(where) == {(d.suite, d.id) for d in ds}
    for d in ds:
        if d.pair:
            twins = [x for x in ds if x.suite == d.suite and x.pair == d.pair]
            assert {where[(x.suite, x.id)] for x in twins} == {where[(d.suite, d.id)]}


def test_split_does_not_depend_on_collection_order() -> None:
    ds = suite()
    shuffled = list(ds)
    random.Random(7).shuffle(shuffled)
    assert assignment(ds, 4) == assignment(shuffled, 4)
    infos = [split_items(x, Shard(2, 4))[1] for x in (ds, shuffled)]
    assert infos[0] == infos[1]


def test_shards_are_balanced_by_cost() -> None:
    ds = suite(n_pairs=200)
    where = assignment(ds, 4)
    load = dict.fromkeys(range(1, 5), 0)
    for d in ds:
        load[where[(d.suite, d.id)]] += dialogue_cost(d.user_turns, len(d.questions))
    biggest_unit = max(2 * dialogue_cost(d.user_turns, len(d.questions)) for d in ds)
    assert max(load.values()) - min(load.values()) <= biggest_unit
    # Far better than a split by count alone would be on these mixed lengths.
    assert max(load.values()) <= 1.02 * sum(load.values()) / 4 + biggest_unit


def test_split_record_names_the_partition() -> None:
    ds = suite()
    _, a = split_items(ds, Shard(1, 3))
    _, b = split_items(ds, Shard(3, 3))
    _, other = split_items(ds[:-1], Shard(1, 3))
    assert a["partition"] == b["partition"] != other["partition"]
    assert a["collected"] == {"other": 5, "s": 121}
    assert sum(len(v) for v in a["assigned"].values()) < len(ds)


def test_parse_shard() -> None:
    assert parse_shard("2/4") == Shard(2, 4)
    assert parse_shard(" 3 / 3 ") == Shard(3, 3)
    assert parse_shard("1/1") is None
    env = {"CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "5"}
    assert parse_shard("env", environ=env) == Shard(2, 5)
    for bad in ("0/4", "5/4", "x", "2", "1/0"):
        with pytest.raises(ConfigError, match="--mtmcs-shard"):
            parse_shard(bad)
    with pytest.raises(ConfigError, match="CI_NODE_INDEX and CI_NODE_TOTAL"):
        parse_shard("env", environ={})
    with pytest.raises(ConfigError, match=r"env \(CI_NODE_INDEX/CI_NODE_TOTAL\)=.*1 <= K <= N"):
        parse_shard("env", environ={"CI_NODE_INDEX": "0", "CI_NODE_TOTAL": "2"})


SUITE_TOML = '[suite]\nname = "mini"\nversion = "1"\n'


def test_shard_with_snapshot_update_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", suite=SUITE_TOML)
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--mtmcs-model=scripted:refuse-all", "--mtmcs-shard=1/2",
        "--mtmcs-report=out", "--mtmcs-baseline=b", "--snapshot-update",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mtmcs-shard=1/2 with --snapshot-update*merge*"])


def test_shard_without_report_folder_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--mtmcs-model=scripted:refuse-all", "--mtmcs-shard=2/3"
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mtmcs-shard=2/3 needs --mtmcs-report=DIR*"])


def test_bad_shard_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("-p", "no:cacheprovider", "--mtmcs-shard=4/3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mtmcs-shard='4/3': expected 1 <= K <= N*"])
