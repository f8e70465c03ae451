"""polyarch ci github: the workflow it writes is valid by GitHub's schema (check-jsonschema
ships it), has no zizmor finding (default and pedantic), and runs the commands of a
distributed build in the order docs/SCALE.md gives."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import write_project
from workflow_judges import BIN, schema_check, tool

from polyarch.workflows.ci_github import ACTIONS, WORKFLOW_PATH

Cli = Callable[..., tuple[int, str, str]]
REPO_ROOT = Path(__file__).resolve().parents[2]
CONTAINERS = '[containers.fd]\npackage = "fd-find"\ncommand = "fdfind"\n'


def git_repository(path: Path) -> Path:
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    return path


def written(cli: Cli, project: Path, *args: str) -> tuple[Path, dict[str, Any]]:
    code, out, err = cli("-f", project, "ci", "github", *args)
    assert code == 0, err
    path = Path(out.split()[1].rstrip(":"))
    return path, yaml.safe_load(path.read_text())


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = git_repository(tmp_path / "repo")
    return write_project(root, "http://127.0.0.1:9/debian", root / "keyring.gpg", CONTAINERS)


def test_the_workflow_is_valid_by_githubs_workflow_schema(cli: Cli, project: Path) -> None:
    path, _ = written(cli, project)
    assert path == project.parent / WORKFLOW_PATH
    result = schema_check(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok -- validation done" in result.stdout


@pytest.mark.parametrize("persona", ["regular", "pedantic"])
def test_zizmor_finds_nothing_offline(cli: Cli, project: Path, persona: str) -> None:
    path, _ = written(cli, project)
    result = subprocess.run(
        [tool("zizmor"), "--offline", "--persona", persona, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": str(BIN), "HOME": str(project.parent)},  # no GH_TOKEN: offline audits only
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout + result.stderr


def test_the_checks_catch_a_broken_workflow(cli: Cli, project: Path, tmp_path: Path) -> None:
    path, _ = written(cli, project)
    text = path.read_text()
    # Injection: what a pull request controls, expanded inside a shell script.
    injected = tmp_path / "injected.yml"
    injected.write_text(text.replace('pull "$CACHE"', 'pull "${{ github.head_ref }}"', 1))
    assert injected.read_text() != text
    found = subprocess.run(
        [tool("zizmor"), "--offline", str(injected)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": str(BIN), "HOME": str(tmp_path)},
    )
    assert found.returncode != 0 and "template-injection" in found.stdout + found.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text(text.replace("runs-on: ubuntu-24.04\n", "runs_on: ubuntu-24.04\n", 1))
    result = schema_check(broken)
    assert result.returncode == 1 and "'runs-on' is a required property" in result.stdout


def test_plan_shards_assemble_and_a_scheduled_rebuild(cli: Cli, project: Path) -> None:
    _, workflow = written(cli, project, "--shards", "4", "--schedule", "5 3 * * 1")
    jobs = workflow["jobs"]
    assert list(jobs) == ["plan", "build", "assemble"]
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert triggers["schedule"] == [{"cron": "5 3 * * 1"}]
    assert set(triggers) == {"push", "pull_request", "schedule", "workflow_dispatch"}
    assert workflow["env"]["SHARDS"] == "4"

    def runs(job: str) -> str:
        return "\n".join(step.get("run", "") for step in jobs[job]["steps"])

    plan = runs("plan")
    assert "polyarch outdated" in plan and "100) polyarch lock --update" in plan
    assert 'polyarch plan --all --locked --shards "$SHARDS" --cache "$CACHE" --json' in plan
    build = jobs["build"]
    assert build["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    assert build["runs-on"] == "${{ matrix.runner }}"
    order = [
        "polyarch cache pull",
        "polyarch build $CONTAINERS",
        '--push "$IMAGES"',
        "polyarch test",
        "polyarch cache push",
    ]
    text = runs("build")
    assert [text.index(step) for step in order] == sorted(text.index(step) for step in order)
    assembly = runs("assemble")
    assert 'polyarch manifest --assemble --all --to "$IMAGES" --digests shards --test' in assembly
    assert 'polyarch cache push "$CACHE" --compact' in assembly
    for job in jobs.values():
        logins = [s for s in job["steps"] if s.get("uses", "").startswith("docker/login-action")]
        assert logins and logins[0]["with"]["password"] == "${{ secrets.GITHUB_TOKEN }}"


def test_every_action_is_pinned_to_a_release_commit_and_the_projects_ci_agrees(
    cli: Cli, project: Path
) -> None:
    _, workflow = written(cli, project)
    pinned = {repo: sha for repo, sha, _release in ACTIONS.values()}
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            if "uses" in step:
                repo, sha = step["uses"].split("@")
                assert pinned[repo] == sha and re.fullmatch(r"[0-9a-f]{40}", sha)
    ours = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "ci.yml").read_text())
    for job in ours["jobs"].values():
        for step in job["steps"]:
            if "uses" in step:
                repo, sha = step["uses"].split("@")
                assert pinned[repo] == sha, f"{repo}: ci.yml and ci github disagree"


def test_a_project_in_a_subdirectory_works_there(cli: Cli, tmp_path: Path) -> None:
    root = git_repository(tmp_path / "repo")
    project = write_project(root / "tools", "http://127.0.0.1:9/debian", root / "k.gpg", CONTAINERS)
    path, workflow = written(cli, project)
    assert path == root / WORKFLOW_PATH
    assert workflow["defaults"]["run"]["working-directory"] == "tools"
    uploads = [
        s["with"]["path"]
        for s in workflow["jobs"]["plan"]["steps"]
        if s.get("uses", "").startswith("actions/upload-artifact")
    ]
    assert uploads == ["tools/containers.lock\ntools/plan.json\n"]


def test_an_edited_workflow_is_not_replaced_without_force(cli: Cli, project: Path) -> None:
    path, _ = written(cli, project)
    path.write_text(path.read_text() + "# mine\n")
    code, _out, err = cli("-f", project, "ci", "github")
    assert code == 2 and "--force" in err
    code, _out, err = cli("-f", project, "ci", "github", "--force")
    assert code == 0 and "# mine" not in path.read_text()


def test_bad_options_are_one_line_errors(cli: Cli, project: Path) -> None:
    for args in (("--schedule", "daily"), ("--install", 'x"; rm -rf /'), ("--shards", "0")):
        code, _out, err = cli("-f", project, "ci", "github", *args)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
