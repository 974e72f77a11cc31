"""pyproject.toml lists every package of the project: a non-editable install
(the managed plugin's image, the quick start) gets only what is listed."""

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Folders of Python that are not installed: the tests, benchmarks and
# scripts run from a checkout.
NOT_PACKAGED = {"tests", "bench", "scripts"}


def code_folders(folder=REPO, parts=()):
    """Every folder below the repository holding Python, as a dotted name,
    wherever it is (a new top-level package too), with or without an
    __init__.py; hidden folders, build output and caches aside."""
    for child in sorted(folder.iterdir()):
        if (not child.is_dir() or child.name.startswith((".", "_"))
                or child.name in ("build", "dist") or child.name.endswith(".egg-info")
                or (not parts and child.name in NOT_PACKAGED)):
            continue
        name = (*parts, child.name)
        if any(child.glob("*.py")):
            yield ".".join(name)
        yield from code_folders(child, name)


def test_every_package_is_listed():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())
                 ["tool"]["setuptools"]["packages"])
    found = set(code_folders())
    assert found - listed == set(), f"add {sorted(found - listed)} to [tool.setuptools] packages"
    assert listed - found == set(), f"{sorted(listed - found)} are listed but hold no code"
    # A listed folder without __init__.py installs, but not as a regular package.
    assert [p for p in listed if not (REPO / p.replace(".", "/") / "__init__.py").exists()] == []
