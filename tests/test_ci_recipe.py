"""The GitHub Actions recipe in ``docs/github-actions.yml`` is a valid workflow that installs
innaudit the way it can be installed and runs a command innaudit accepts.

Valid: it passes GitHub's workflow schema (the SchemaStore copy that check-jsonschema ships,
``vendor.github-workflows``). Installable: innaudit comes from its repository (a checkout and
``pip install ./PATH``), never ``pip install innaudit`` from an index that does not serve it,
on the pinned CPU torch. Its run sets ``--budget`` and the HTML report is uploaded.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import invoke_cli

RECIPE = Path(__file__).resolve().parents[1] / "docs" / "github-actions.yml"


def _steps() -> list[dict]:
    workflow = yaml.safe_load(RECIPE.read_text())
    return workflow["jobs"]["audit"]["steps"]


def test_the_recipe_passes_the_github_workflow_schema() -> None:
    pytest.importorskip("check_jsonschema")
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(RECIPE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_catches_a_broken_workflow(tmp_path: Path) -> None:
    """The check above can fail: a step with both ``uses`` and ``run`` is not a workflow."""
    pytest.importorskip("check_jsonschema")
    broken = tmp_path / "broken.yml"
    broken.write_text(
        RECIPE.read_text().replace("      - name: Job summary\n", "      - uses: x/y@v1\n        name: Job summary\n")
    )
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1


def test_it_installs_from_the_repository_on_the_cpu_torch() -> None:
    steps = _steps()
    script = "\n".join(s.get("run", "") for s in steps)
    checkouts = [s for s in steps if s.get("uses", "").startswith("actions/checkout@")]
    source = next(s for s in checkouts if "repository" in s.get("with", {}))
    assert f'"./{source["with"]["path"]}[formats,images]"' in script
    assert not re.search(r"pip install\s+(-U\s+)?[\"']?innaudit\b", script)  # no index serves it
    assert 'pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu' in script
    assert script.index("torch==2.13.0") < script.index("./.innaudit")  # the CPU build first


def test_the_audit_step_sets_a_budget_and_the_html_report_is_uploaded() -> None:
    steps = _steps()
    run = next(s["run"] for s in steps if s.get("id") == "audit")
    command = " ".join(line.strip().rstrip("\\") for line in run.splitlines() if line.strip())
    args = command[command.index("innaudit run") :].split("echo")[0].split()
    assert "--budget" in args and "html=innaudit.html" in args
    flags = {a for a in args if a.startswith("--")}
    help_text = invoke_cli("run", "--help").stdout
    assert all(f in help_text for f in flags), flags
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert "innaudit.html" in upload["with"]["path"].split()
    assert upload.get("if") == "always()"
