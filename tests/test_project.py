"""The set-up files agree with each other (conda cannot be reached here, so we check by reading)."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"torch": "pytorch"}


def _split(req: str) -> tuple[str, str]:
    m = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(.*)", req)
    return m.group(1).lower(), m.group(2).replace(" ", "")


def test_environment_yml_agrees_with_pyproject():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(_split(r) for r in pyproject["dependencies"] + pyproject["optional-dependencies"]["test"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    conda = dict(_split(d) for d in env["dependencies"] if isinstance(d, str) and d not in ("pip", "python=3.11"))
    pip_section = [d for d in env["dependencies"] if isinstance(d, dict)]
    assert pip_section == [{"pip": ["-e .[test]"]}], "environment.yml must pip-install the package, editable"
    for name, spec in wanted.items():
        cname = CONDA_NAMES.get(name, name)
        assert cname in conda, f"{name} is in pyproject.toml but not in environment.yml"
        assert conda[cname] == spec, f"{name}: pyproject says {spec!r}, environment.yml says {conda[cname]!r}"
    extra = set(conda) - {CONDA_NAMES.get(n, n) for n in wanted}
    assert not extra, f"environment.yml has packages pyproject.toml lacks: {extra}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^\s*(make \w+)\s*$", readme, flags=re.M)
    assert commands[:2] == ["make demo", "make test"], commands
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(), flags=re.M)


def test_torch_installed_first_and_pinned():
    makefile = (ROOT / "Makefile").read_text()
    assert makefile.index("pip install -q torch==2.13.0") < makefile.index("pip install -q -e")


def test_installs_follow_the_lock():
    """Every dependency is pinned in requirements.lock, which make installs as constraints."""
    lock = dict(line.split("==") for line in (ROOT / "requirements.lock").read_text().splitlines()
                if line and not line.startswith("#"))
    lock = {k.lower().replace("_", "-"): v for k, v in lock.items()}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for req in pyproject["dependencies"] + pyproject["optional-dependencies"]["test"]:
        name = _split(req)[0].replace("_", "-")
        assert name in lock, f"{name} is not pinned in requirements.lock (refresh it: make lock)"
    makefile = (ROOT / "Makefile").read_text()
    assert "-c $(LOCK) -e '.[test]'" in makefile and "LOCK   := requirements.lock" in makefile
