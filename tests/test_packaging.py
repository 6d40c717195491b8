"""Packaging metadata that nothing else checks: the SPDX license and its file, the Python versions the
classifiers, cibuildwheel and CI agree on, the project URLs, and ``py.typed`` in the installed package.
(.ci/wheel_check.sh builds, repairs and installs the wheel itself; that takes minutes, so it is CI's.)"""
import os
import re
import sys

import pytest

import rnnfast

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest depends on tomli before 3.11
    tomllib = pytest.importorskip("tomli")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if not os.path.exists(os.path.join(ROOT, "pyproject.toml")):
    pytest.skip("needs the source tree (pyproject.toml)", allow_module_level=True)

SUPPORTED = ["3.10", "3.11", "3.12", "3.13"]


@pytest.fixture(scope="module")
def pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def test_spdx_license_and_license_file(pyproject):
    project = pyproject["project"]
    assert project["license"] == "BSD-3-Clause"
    assert project["license-files"] == ["LICENSE"]
    with open(os.path.join(ROOT, "LICENSE")) as f:
        text = f.read()
    assert text.startswith("BSD 3-Clause License")
    assert "Copyright (c) 2026, the rnnfast developers" in text
    # SPDX expressions in [project] need setuptools 77 (PEP 639)
    setuptools_req = [r for r in pyproject["build-system"]["requires"] if r.startswith("setuptools")]
    assert setuptools_req == ["setuptools>=77"]
    assert not any(c.startswith("License ::") for c in project["classifiers"])  # PEP 639: not with SPDX


def test_classifiers_cibuildwheel_and_ci_cover_the_same_pythons(pyproject):
    project = pyproject["project"]
    classified = sorted(c.rsplit(" :: ", 1)[1] for c in project["classifiers"]
                        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c))
    assert classified == SUPPORTED
    assert project["requires-python"] == f">={SUPPORTED[0]}"
    built = pyproject["tool"]["cibuildwheel"]["build"].split()
    assert built == [f"cp{v.replace('.', '')}-*" for v in SUPPORTED]
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        ci = f.read()
    loop = re.search(r"^for v in (.+); do$", ci, re.M)  # the Pythons after the main run's (python3, 3.11)
    assert loop, "no loop over Python versions in .ci/run"
    assert sorted(item.split(":")[0] for item in loop.group(1).split()) == ["3.10", "3.13"]


def test_cibuildwheel_smoke_test_exists(pyproject):
    command = pyproject["tool"]["cibuildwheel"]["test-command"]
    script = command.split("{project}/", 1)[1].split()[0]
    assert os.path.isfile(os.path.join(ROOT, script)), command


def test_project_urls_are_the_projects(pyproject):
    urls = pyproject["project"]["urls"]
    assert {"Homepage", "Source", "Issues"} <= set(urls)
    assert all(u.startswith("https://github.com/rnnfast/rnnfast") for u in urls.values()), urls


def test_installed_package_is_typed():
    pkg = os.path.dirname(os.path.abspath(rnnfast.__file__))
    assert os.path.isfile(os.path.join(pkg, "py.typed"))
    assert os.path.isfile(os.path.join(pkg, "_kernels", "_recurrent.pyi"))  # the compiled module's stub
