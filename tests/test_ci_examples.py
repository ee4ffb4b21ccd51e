"""The CI example files (docs/examples/) are complete and their commands parse.

- Structure: a shards matrix (or `parallel:`) whose size is the N of `--mtmcs-shard=K/N`; a merge
  job that needs the shards and always runs; the report folders as artifacts, also after a
  failure; JUnit XML per shard, published; the response cache at an explicit
  `--mtmcs-cache` path whose folder CI keeps between runs, keyed by the model and the suite files
  and saved after a failed run too; torch installed first and pinned on the GPU jobs, and kept
  out of the merge job's install.
- Commands: every `pytest` command of a `run:` / `script:` (CI variables replaced by placeholder
  values) parses with pytest's own parser and the installed plugins, every `pytest-mtmcs`
  command with `pytest_mtmcs.cli.main.build_parser()`: a typo in an option fails.
- The merge job's install is enough: a merge run with every dependency of the package that the
  job does not install made unimportable (torch, transformers, aiohttp...) gates as usual.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.command_lines import logical_lines, option_problem, split_comment, substitute, words

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"
GITHUB = ("github-actions.yml", "github-actions-shards.yml")
GITLAB = ("gitlab-ci-shards.yml",)
SCRIPTS = ("vllm-replicas.sh",)
TORCH_PIN = "pip install torch==2.14.1 torchvision==0.29.1"

# Values for the CI variables the commands use, as CI would set them.
PLACEHOLDERS = {"matrix.shard": "1", "CI_NODE_INDEX": "1", "CI_NODE_TOTAL": "4"}


def load(name: str) -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load((EXAMPLES / name).read_text(encoding="utf-8"))
    assert isinstance(doc, dict) and doc, f"{name}: not a YAML mapping"
    return doc


def script_lines(text: str) -> list[str]:
    """The shell command lines of a `run:` / `script:` string, comments dropped."""
    lines = []
    for _, line in logical_lines(text):
        cmd, _ = split_comment(line.strip())
        if cmd:
            lines.append(cmd)
    return lines


def variables_of(name: str, doc: dict[str, Any]) -> dict[str, str]:
    found = dict(PLACEHOLDERS)
    for key in ("env", "variables"):
        for k, v in (doc.get(key) or {}).items():
            found[k] = str(v)
            found[f"env.{k}"] = str(v)
    return found


def github_steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job.get("steps") or [])


def commands_of(name: str) -> list[str]:
    """Every command line of an example file, CI variables replaced."""
    path = EXAMPLES / name
    if name in SCRIPTS:
        text = path.read_text(encoding="utf-8")
        values = dict(re.findall(r"^([A-Z_]+)=(\S+)$", text, re.M))
        return [
            substitute(c, values)
            for c in script_lines(text)
            if not re.fullmatch(r"[A-Z_]+=\S+|set -euo pipefail", c)
        ]
    doc = load(name)
    values = variables_of(name, doc)
    texts: list[str] = []
    if name in GITHUB:
        for job in doc["jobs"].values():
            texts += [s["run"] for s in github_steps(job) if "run" in s]
    else:
        for job in doc.values():
            if isinstance(job, dict) and "script" in job:
                texts += list(job["script"])
    return [substitute(c, values) for t in texts for c in script_lines(t)]


def option_value(command: str, option: str) -> str | None:
    m = re.search(rf"(?:^|\s){re.escape(option)}=(\S+)", command)
    return m.group(1) if m else None


def pytest_commands(commands: list[str]) -> list[str]:
    return [c for c in commands if c.startswith("pytest ")]


# ---------------------------------------------------------------------------------------------
# Structure


def install_problems(where: str, commands: list[str], gpu: bool) -> list[str]:
    problems = []
    installs = [i for i, c in enumerate(commands) if c.startswith("pip install")]
    if gpu:
        pins = [i for i in installs if commands[i] == TORCH_PIN]
        package = [i for i in installs if re.search(r"pip install (-e|--editable) \.", commands[i])]
        if not pins or not package or pins[0] > package[0]:
            problems.append(f"{where}: `{TORCH_PIN}` must come before `pip install -e .`")
    else:
        if not any("--no-deps" in commands[i] for i in installs):
            problems.append(f"{where}: the merge job installs the package with --no-deps")
        if any("torch" in commands[i] for i in installs):
            problems.append(f"{where}: the merge job installs torch")
    return problems


def run_command_problems(where: str, command: str, cache_dir: str) -> list[str]:
    problems = []
    report = option_value(command, "--mtmcs-report")
    junit = option_value(command, "--junitxml")
    cache = option_value(command, "--mtmcs-cache")
    if not report:
        problems.append(f"{where}: no --mtmcs-report")
    if not junit or (report and not junit.startswith(report.rstrip("/") + "/")):
        problems.append(f"{where}: --junitxml must write into the report folder ({report})")
    if not cache or not cache.startswith(cache_dir.rstrip("/") + "/"):
        problems.append(f"{where}: --mtmcs-cache must be a file in the cached folder {cache_dir}")
    return problems


def comment_problems(name: str, commands: list[str]) -> list[str]:
    """A comment that says `-n X` where the commands run another -n."""
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    used = {m for c in commands for m in re.findall(r"(?:^|\s)-n (\S+)", c)}
    said = {m for line in text.splitlines() for m in re.findall(r"#.*?-n (\S+)", line)}
    return [f"{name}: a comment says -n {s}, the commands run -n {used}" for s in said - used]


def github_problems(name: str, doc: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    jobs = doc.get("jobs") or {}
    env = doc.get("env") or {}
    cache_dir = str(env.get("CACHE_DIR", ""))
    if doc.get("permissions", {}).get("checks") != "write":
        problems.append(f"{name}: permissions.checks: write (the JUnit report action needs it)")
    runners = [
        j for j in jobs.values() if any(TORCH_PIN in s.get("run", "") for s in github_steps(j))
    ]
    if not runners:
        return [*problems, f"{name}: no job installs torch pinned and runs pytest"]
    for job_name, job in jobs.items():
        steps = github_steps(job)
        runs = [c for s in steps if "run" in s for c in script_lines(s["run"])]
        uses = {s.get("uses", "").split("@")[0]: s for s in steps if "uses" in s}
        where = f"{name}: job {job_name}"
        is_runner = job in runners
        problems += install_problems(where, runs, gpu=is_runner)
        if is_runner:
            values = variables_of(name, doc)
            command = substitute(next((c for c in pytest_commands(runs)), ""), values)
            problems += run_command_problems(where, command, cache_dir)
            restore, save = uses.get("actions/cache/restore"), uses.get("actions/cache/save")
            if not restore or not save:
                problems.append(f"{where}: actions/cache/restore and actions/cache/save")
            else:
                for step in (restore, save):
                    key = step["with"]["key"]
                    if "env.MODEL" not in key or "hashFiles('suites/**')" not in key:
                        problems.append(f"{where}: cache key without the model or suite hash")
                    if step["with"]["path"] != "${{ env.CACHE_DIR }}":
                        problems.append(f"{where}: the cache must keep the CACHE_DIR folder")
                if save.get("if") != "always()":
                    problems.append(f"{where}: save the cache with if: always()")
                if save["with"]["key"] != restore["with"]["key"]:
                    problems.append(f"{where}: restore and save under one key")
            upload = uses.get("actions/upload-artifact")
            report = option_value(command, "--mtmcs-report") or ""
            if not upload or upload.get("if") != "always()":
                problems.append(f"{where}: upload the report folder with if: always()")
            elif substitute(upload["with"]["path"], values).rstrip("/") != report.rstrip("/"):
                problems.append(f"{where}: the artifact is not the report folder {report}")
    shard_jobs = [n for n, j in jobs.items() if "matrix" in (j.get("strategy") or {})]
    if name.endswith("-shards.yml"):
        if len(shard_jobs) != 1:
            return [*problems, f"{name}: one job with a shards matrix"]
        shard = jobs[shard_jobs[0]]
        matrix = shard["strategy"]["matrix"]["shard"]
        n = len(matrix)
        if matrix != list(range(1, n + 1)) or shard["strategy"].get("fail-fast") is not False:
            problems.append(f"{name}: matrix shard 1..N with fail-fast: false")
        runs = [c for s in github_steps(shard) if "run" in s for c in script_lines(s["run"])]
        if f"--mtmcs-shard=${{{{ matrix.shard }}}}/{n}" not in " ".join(runs):
            problems.append(f"{name}: --mtmcs-shard=${{{{ matrix.shard }}}}/{n}")
        merges = [n_ for n_, j in jobs.items() if n_ not in shard_jobs]
        if len(merges) != 1:
            return [*problems, f"{name}: one merge job"]
        merge = jobs[merges[0]]
        needs = merge.get("needs")
        if shard_jobs[0] not in ([needs] if isinstance(needs, str) else needs or []):
            problems.append(f"{name}: the merge job needs the shards")
        if merge.get("if") != "always()":
            problems.append(f"{name}: the merge job runs with if: always()")
        steps = github_steps(merge)
        runs = [c for s in steps if "run" in s for c in script_lines(s["run"])]
        if not any(c.startswith("pytest-mtmcs merge ") for c in runs):
            problems.append(f"{name}: the merge job runs pytest-mtmcs merge")
        uses = {s.get("uses", "").split("@")[0]: s for s in steps if "uses" in s}
        download = uses.get("actions/download-artifact")
        upload = uses.get("actions/upload-artifact")
        junit = uses.get("mikepenz/action-junit-report") or uses.get("dorny/test-reporter")
        if not download:
            problems.append(f"{name}: the merge job downloads the shards' artifacts")
        if not upload or upload.get("if") != "always()":
            problems.append(f"{name}: the merge job uploads the merged report with if: always()")
        if not junit or junit.get("if") != "always()":
            problems.append(f"{name}: the merge job publishes the shards' JUnit with if: always()")
        elif download and not junit["with"]["report_paths"].startswith(
            download["with"]["path"] + "/"
        ):
            problems.append(f"{name}: the JUnit report reads the downloaded shards")
    else:
        job = runners[0]
        used = {s.get("uses", "").split("@")[0]: s for s in github_steps(job) if "uses" in s}
        junit = used.get("mikepenz/action-junit-report") or used.get("dorny/test-reporter")
        if not junit or junit.get("if") != "always()":
            problems.append(f"{name}: publish the JUnit XML with if: always()")
    return problems


def gitlab_problems(name: str, doc: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    stages = doc.get("stages") or []
    variables = doc.get("variables") or {}
    cache_dir = str(variables.get("CACHE_DIR", ""))
    jobs = {k: v for k, v in doc.items() if isinstance(v, dict) and "script" in v}
    shards = [k for k, v in jobs.items() if isinstance(v.get("parallel"), int)]
    if len(shards) != 1 or len(jobs) != 2:
        return [f"{name}: one job with parallel: N and one merge job"]
    shard = jobs[shards[0]]
    merge_name = next(k for k in jobs if k not in shards)
    merge = jobs[merge_name]
    lines = [c for s in shard["script"] for c in script_lines(s)]
    problems += install_problems(f"{name}: job {shards[0]}", lines, gpu=True)
    command = next((c for c in pytest_commands(lines)), "")
    if "--mtmcs-shard=env" not in command:
        problems.append(f"{name}: --mtmcs-shard=env (CI_NODE_INDEX/CI_NODE_TOTAL)")
    problems += run_command_problems(f"{name}: job {shards[0]}", command, "$CACHE_DIR")
    report = option_value(command, "--mtmcs-report") or ""
    artifacts = shard.get("artifacts") or {}
    if artifacts.get("when") != "always" or [p.rstrip("/") for p in artifacts.get("paths", [])] != [
        report.rstrip("/")
    ]:
        problems.append(f"{name}: the shard's artifacts are its report folder, when: always")
    if (artifacts.get("reports") or {}).get("junit") != option_value(command, "--junitxml"):
        problems.append(f"{name}: artifacts:reports:junit is the shard's --junitxml file")
    cache = shard.get("cache") or {}
    key = cache.get("key") or {}
    if (
        not isinstance(key, dict)
        or not key.get("files")
        or "$MODEL_KEY" not in key.get("prefix", "")
        or "$CI_NODE_INDEX" not in key.get("prefix", "")
    ):
        problems.append(f"{name}: cache key from the suite files, prefixed by model and shard")
    if cache.get("paths") != ["$CACHE_DIR/"] or cache.get("when") != "always" or not cache_dir:
        problems.append(f"{name}: cache the $CACHE_DIR folder, when: always")
    for f in key.get("files", []) if isinstance(key, dict) else []:
        if not (ROOT / f).is_file():
            problems.append(f"{name}: cache key file {f} does not exist")
    if "/" in str(variables.get("MODEL_KEY", "/")):
        problems.append(f"{name}: a GitLab cache key may not hold '/'")
    # The merge job.
    if stages.index(merge["stage"]) <= stages.index(shard["stage"]):
        problems.append(f"{name}: the merge job's stage comes after the shards'")
    if shards[0] not in (merge.get("needs") or []):
        problems.append(f"{name}: the merge job needs the shards")
    if merge.get("when") != "always":
        problems.append(f"{name}: the merge job runs when: always")
    merge_lines = [c for s in merge["script"] for c in script_lines(s)]
    problems += install_problems(f"{name}: job {merge_name}", merge_lines, gpu=False)
    if not any(c.startswith("pytest-mtmcs merge ") for c in merge_lines):
        problems.append(f"{name}: the merge job runs pytest-mtmcs merge")
    if (merge.get("artifacts") or {}).get("when") != "always":
        problems.append(f"{name}: the merged report as an artifact, when: always")
    return problems


def structure_problems(name: str, doc: dict[str, Any]) -> list[str]:
    found = github_problems(name, doc) if name in GITHUB else gitlab_problems(name, doc)
    return found + comment_problems(name, commands_of(name))


def test_the_example_files_are_all_there() -> None:
    names = {p.name for p in EXAMPLES.iterdir()}
    assert names == {*GITHUB, *GITLAB, *SCRIPTS}, "a new example file: add it to this test"


@pytest.mark.parametrize("name", [*GITHUB, *GITLAB])
def test_the_structure_is_complete(name: str) -> None:
    problems = structure_problems(name, load(name))
    assert not problems, "\n".join(problems)


def test_the_structure_check_catches_what_is_missing() -> None:
    gh = load("github-actions-shards.yml")
    gh["jobs"]["merge"].pop("if")
    for step in gh["jobs"]["shard"]["steps"]:
        if step.get("uses", "").startswith("actions/cache/save"):
            step["with"]["key"] = "mtmcs-${{ github.run_id }}"
    problems = github_problems("github-actions-shards.yml", gh)
    assert any("if: always()" in p for p in problems)
    assert any("model or suite hash" in p for p in problems)
    gl = load("gitlab-ci-shards.yml")
    gl["merge"]["when"] = "on_success"
    gl["shard"]["artifacts"]["reports"] = {}
    gl["merge"]["script"].insert(0, "pip install torch")
    problems = gitlab_problems("gitlab-ci-shards.yml", gl)
    assert any("when: always" in p for p in problems)
    assert any("reports:junit" in p for p in problems)
    assert any("installs torch" in p for p in problems)
    assert comment_problems("github-actions-shards.yml", ["pytest suites -n 4"])


def test_the_replicas_script_is_a_whole_run() -> None:
    commands = commands_of("vllm-replicas.sh")
    assert commands.index(TORCH_PIN) < commands.index("pip install -e .")
    (command,) = pytest_commands(commands)
    assert "," in (option_value(command, "--mtmcs-base-url") or "")
    assert not run_command_problems("vllm-replicas.sh", command, ".mtmcs-cache")


# ---------------------------------------------------------------------------------------------
# Commands


def test_every_command_parses(pytester: pytest.Pytester) -> None:
    parsed = {"pytest": 0, "pytest-mtmcs": 0}
    problems = []
    for name in (*GITHUB, *GITLAB, *SCRIPTS):
        for command in commands_of(name):
            ws = words(command)
            if ws[0] not in parsed:
                continue
            assert "$" not in command, f"{name}: a CI variable without a placeholder: {command}"
            parsed[ws[0]] += 1
            problem = option_problem(ws, pytester.parseconfig)
            if problem:
                problems.append(f"{name}: `{command}`: {problem}")
    assert not problems, "\n".join(problems)
    assert parsed["pytest"] == 4 and parsed["pytest-mtmcs"] == 2, parsed


def test_a_typo_in_an_option_fails(pytester: pytest.Pytester) -> None:
    (command,) = pytest_commands(commands_of("github-actions-shards.yml"))
    assert option_problem(words(command), pytester.parseconfig) is None
    typo = command.replace("--mtmcs-shard=", "--mtmcs-shards=")
    assert "--mtmcs-shards" in (option_problem(words(typo), pytester.parseconfig) or "")
    merge = next(c for c in commands_of("gitlab-ci-shards.yml") if c.startswith("pytest-mtmcs"))
    assert option_problem(words(merge), pytester.parseconfig) is None
    typo = merge.replace("--baseline ", "--baselines ")
    assert "--baselines" in (option_problem(words(typo), pytester.parseconfig) or "")


# ---------------------------------------------------------------------------------------------
# The merge job's install


IMPORT_NAMES = {"pillow": "PIL", "pytest-xdist": "xdist"}

BLOCKER = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not installed in the merge job")
        return None
sys.meta_path.insert(0, Blocker())
from pytest_mtmcs.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


def requirement_names(specs: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", s, maxsplit=1)[0].strip().lower() for s in specs}


def test_the_merge_job_needs_no_torch(pytester: pytest.Pytester) -> None:
    """The merge, with every dependency of the package that the merge jobs do not install made
    unimportable (torch, torchvision, transformers, aiohttp, ...), merges and gates as usual."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    needed = requirement_names(project["project"]["dependencies"])
    installed: set[str] | None = None
    for name in ("github-actions-shards.yml", "gitlab-ci-shards.yml"):
        lines = commands_of(name)
        merge_at = max(i for i, c in enumerate(lines) if "--no-deps" in c)
        specs = words(lines[merge_at + 1])[2:]
        assert lines[merge_at + 1].startswith("pip install ") and specs, name
        names = requirement_names(specs)
        assert installed is None or names == installed, "the two merge jobs install the same"
        installed = names
    assert installed is not None and installed <= needed
    blocked = {IMPORT_NAMES.get(n, n.replace("-", "_")) for n in needed - installed}
    assert {"torch", "torchvision", "transformers"} <= blocked

    import shutil

    shutil.copytree(ROOT / "suites", pytester.path / "suites")
    shutil.copytree(ROOT / "baselines", pytester.path / "baselines")
    for k in (1, 2):
        result = pytester.runpytest_subprocess(
            "suites", "-p", "no:cacheprovider", "--mtmcs-no-cache",
            "--mtmcs-model=scripted:comply-from=6", "--mtmcs-baseline=tiny-qwen2-vl",
            f"--mtmcs-shard={k}/2", f"--mtmcs-report=shard-{k}", f"--junitxml=shard-{k}/junit.xml",
        )  # fmt: skip
        assert result.ret == 0, result.stdout.str()
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKER, ",".join(sorted(blocked)), "merge", "shard-1", "shard-2",
         "--baseline", "tiny-qwen2-vl", "--out", "merged"],
        cwd=pytester.path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    # comply-from=6 regresses bucket 6+ against the prior release: the merged gate fails.
    assert proc.returncode == 1, out
    assert "gate: FAILED: 6+ safety regressed against tiny-qwen2-vl" in out, out
    assert "not installed in the merge job" not in out
    assert (pytester.path / "merged" / "report.html").is_file()
