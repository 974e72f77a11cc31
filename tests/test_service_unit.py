"""packaging/calico-libnetwork.service: systemd accepts it, and what it
starts is the command the quick start installs, with arguments the CLI
takes and the settings file the quick start writes."""

import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from plugin.cli.main import cmd_run, parser
from plugin.config import DEFAULT_PLUGIN_DIR

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "packaging" / "calico-libnetwork.service"
QUICKSTART = (REPO / "scripts" / "quickstart.sh").read_text()


def setting(key) -> str:
    (value,) = re.findall(rf"^{key}=(.*)$", UNIT.read_text(), re.M)
    return value


def test_systemd_accepts_the_unit(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (scripts/deps.sh installs systemd)")
    # The program as installed here: verify checks that it is executable.
    program, *args = shlex.split(setting("ExecStart"))
    installed = shutil.which(Path(program).name, path=str(REPO / ".venv" / "bin"))
    assert installed, "the console script is missing from .venv (bash scripts/deps.sh)"
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(program, installed))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)
    # Only our unit's lines: the units it names (docker.service) are the machine's.
    ours = [line for line in (result.stdout + result.stderr).splitlines() if UNIT.name in line]
    assert result.returncode == 0 and ours == [], result.stdout + result.stderr


def test_exec_start_is_the_installed_cli_running_the_plugin():
    program, *args = shlex.split(setting("ExecStart"))
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert Path(program).name in scripts
    assert f"ln -sf \"$PREFIX/venv/bin/{Path(program).name}\" {program}\n" in QUICKSTART
    parsed = parser().parse_args(args)
    assert parsed.func is cmd_run
    assert parsed.plugin_dir == DEFAULT_PLUGIN_DIR and not parsed.no_agent


def test_environment_file_is_the_one_the_quick_start_writes():
    path = setting("EnvironmentFile").removeprefix("-")  # "-": may be missing
    folder = re.search(r"^ETC=(.*)$", QUICKSTART, re.M).group(1)
    assert path == f"{folder}/env"
    assert '> "$ETC/env"' in QUICKSTART
