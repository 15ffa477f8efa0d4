"""What ``pip install`` promises: the console script, and extras that add up to ``[all]``."""

from __future__ import annotations

import subprocess
import tomllib

from conftest import ROOT, WSPROXY


def test_all_extra_installs_every_optional_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    others = {dep for name, deps in extras.items() if name != "all" for dep in deps}
    assert others and set(extras["all"]) == others


def test_console_script_runs_from_the_install() -> None:
    result = subprocess.run([WSPROXY, "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("wsproxy ")
