"""Release metadata: one version everywhere, the licence, the citation file, the extras CI checks, and the
archive / environment checks of ``.ci/check_extras.py`` (which must be able to fail)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import io
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PACKAGES = ("hf_plugins", "diffusers_plugins", "tv_plugins")


def readme_arxiv_ids() -> set[str]:
    """The arXiv ids of the README's methods table (the independent list of the six papers)."""
    table = (ROOT / "README.md").read_text(encoding="utf-8").split("## The methods", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"\| \[arXiv (\d{4}\.\d{5})\]", table))


def load_check_extras():
    spec = importlib.util.spec_from_file_location("check_extras", ROOT / ".ci" / "check_extras.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_lists_six_papers():
    assert len(readme_arxiv_ids()) == 6


def test_one_version_read_by_all_three_packages():
    version = PYPROJECT["project"]["version"]
    assert importlib.metadata.version("distill-plugins") == version
    for name in PACKAGES:
        module = importlib.import_module(name)
        assert module.__version__ == version, name
    # single-sourced: no package file spells a version literal of its own
    literal = re.compile(r"__version__\s*=\s*['\"]")
    offenders = [str(p) for name in PACKAGES for p in (ROOT / name).rglob("*.py") if literal.search(p.read_text())]
    assert offenders == []
    assert "version" not in yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))


def test_apache_licence_declared_and_shipped():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX: How to apply the Apache License" in text
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert set(PYPROJECT["project"]["license-files"]) == {"LICENSE", "NOTICE"}
    assert importlib.metadata.metadata("distill-plugins")["License-Expression"] == "Apache-2.0"
    # PEP 639: a licence expression excludes licence classifiers
    assert not [c for c in PYPROJECT["project"]["classifiers"] if c.startswith("License ::")]
    notice = (ROOT / "NOTICE").read_text(encoding="utf-8")
    assert {f"arXiv:{i}" for i in readme_arxiv_ids()} <= set(re.findall(r"arXiv:\d{4}\.\d{5}", notice))
    assert "contains no code" in notice


def test_setuptools_floor_reads_pep639_fields():
    floor = next(r for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools"))
    major = int(re.match(r"setuptools>=(\d+)", floor).group(1))
    assert major >= 77  # setuptools 77.0 added `license` as an SPDX expression and `license-files`


def test_citation_file_lists_the_six_papers():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "Apache-2.0"
    assert cff["message"] and cff["title"] == "distill-plugins" and cff["authors"]
    references = cff["references"]
    ids = set()
    for ref in references:
        arxiv_id = re.fullmatch(r"https://arxiv\.org/abs/(\d{4}\.\d{5})", ref["url"]).group(1)
        ids.add(arxiv_id)
        assert ref["title"] and ref["authors"] and all(a["family-names"] and a["given-names"] for a in ref["authors"])
        assert ref["identifiers"] == [{"type": "doi", "value": f"10.48550/arXiv.{arxiv_id}",
                                       "description": f"arXiv {arxiv_id}"}]
        # published in or after the year of the arXiv submission (yymm.nnnnn)
        assert 2000 + int(arxiv_id[:2]) <= ref["year"] <= 2000 + int(arxiv_id[:2]) + 1
    assert len(references) == 6 and ids == readme_arxiv_ids()


def test_project_urls_are_the_papers_arxiv_pages():
    urls = PYPROJECT["project"]["urls"]
    assert {re.fullmatch(r"https://arxiv\.org/abs/(\d{4}\.\d{5})", u).group(1) for u in urls.values()} == readme_arxiv_ids()


def test_ci_checks_every_extra_and_all_covers_them():
    extras = PYPROJECT["project"]["optional-dependencies"]
    check_extras = load_check_extras()
    assert set(extras) - {"all", "dev"} == set(check_extras.EXTRAS)
    (spec,) = extras["all"]
    assert set(re.fullmatch(r"distill-plugins\[(.*)\]", spec).group(1).split(",")) == set(check_extras.EXTRAS)
    assert {package for package, _ in check_extras.EXTRAS.values()} == set(PACKAGES)


def test_py_typed_markers_exist():
    assert all((ROOT / name / "py.typed").is_file() for name in PACKAGES)


# --- the archive check of .ci/check_extras.py, on small hand-made archives --------------------------------

VERSION = "9.8.7"
TRACKED = {f"{p}/__init__.py" for p in PACKAGES} | {f"{p}/py.typed" for p in PACKAGES}


def make_wheel(path: Path, extra_files=(), drop=(), metadata_version=VERSION) -> Path:
    info = f"distill_plugins-{VERSION}.dist-info"
    files = {name: b"" for name in TRACKED if name not in drop}
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.4\nName: distill-plugins\nVersion: {metadata_version}\n" \
                                f"License-Expression: Apache-2.0\n".encode()
    files.update({f"{info}/licenses/LICENSE": b"", f"{info}/licenses/NOTICE": b""})
    files.update(dict.fromkeys(extra_files, b""))
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def make_sdist(path: Path, extra_files=()) -> Path:
    root = f"distill_plugins-{VERSION}"
    with tarfile.open(path, "w:gz") as archive:
        for name in sorted(TRACKED | {"LICENSE", "NOTICE", "pyproject.toml", "PKG-INFO", *extra_files}):
            info = tarfile.TarInfo(f"{root}/{name}")
            archive.addfile(info, io.BytesIO(b""))
    return path


def test_archive_check_accepts_packages_and_release_files(tmp_path):
    check = load_check_extras().check_archives
    assert check(make_wheel(tmp_path / "w.whl"), make_sdist(tmp_path / "s.tar.gz"), VERSION, TRACKED) == []


@pytest.mark.parametrize("wheel_kwargs, sdist_extra, expected", [
    ({"extra_files": ["tests/test_x.py"]}, (), "wheel holds more than the three packages: ['tests']"),
    ({"drop": ["tv_plugins/py.typed"]}, (), "wheel lacks tv_plugins/py.typed"),
    ({"metadata_version": "0.0.1"}, (), "wheel METADATA: Version '0.0.1'"),
    ({}, ["benchmarks/results/x.json"], "sdist holds more than the packages and release files: ['benchmarks']"),
    ({}, ["notebooks/01.ipynb"], "sdist holds more than the packages and release files: ['notebooks']"),
])
def test_archive_check_rejects(tmp_path, wheel_kwargs, sdist_extra, expected):
    check = load_check_extras().check_archives
    problems = check(make_wheel(tmp_path / "w.whl", **wheel_kwargs), make_sdist(tmp_path / "s.tar.gz", sdist_extra),
                     VERSION, TRACKED)
    assert any(p.startswith(expected) for p in problems), problems


def test_archive_check_finds_a_tracked_file_missing(tmp_path):
    check = load_check_extras().check_archives
    tracked = TRACKED | {"hf_plugins/data.json"}
    problems = check(make_wheel(tmp_path / "w.whl"), make_sdist(tmp_path / "s.tar.gz"), VERSION, tracked)
    assert problems == ["wheel lacks package files of the repository: ['hf_plugins/data.json']",
                        "sdist lacks package files of the repository: ['hf_plugins/data.json']"]


# --- the dependency closure of .ci/check_extras.py, on a hand-made site-packages -------------------------

def write_dist(site: Path, name: str, requires: list[str]) -> None:
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.1", f"Name: {name}", "Version: 1.0", *(f"Requires-Dist: {r}" for r in requires)]
    (info / "METADATA").write_text("\n".join(lines) + "\n")


def test_dependency_closure_follows_extras_and_markers(tmp_path):
    closure = load_check_extras().dependency_closure
    write_dist(tmp_path, "distill-plugins", ["core-dep>=1", 'heavy[fast]; extra == "x"', 'other; extra == "y"',
                                             'never; python_version < "3.0"'])
    write_dist(tmp_path, "core-dep", [])
    write_dist(tmp_path, "heavy", ['accel; extra == "fast"', 'docs-only; extra == "docs"'])
    write_dist(tmp_path, "accel", [])
    write_dist(tmp_path, "other", [])
    assert closure(tmp_path, set()) == ({"distill-plugins", "core-dep"}, set())
    assert closure(tmp_path, {"x"}) == ({"distill-plugins", "core-dep", "heavy", "accel"}, set())
    assert closure(tmp_path, {"x", "y"})[0] == {"distill-plugins", "core-dep", "heavy", "accel", "other"}
    write_dist(tmp_path / "bare", "distill-plugins", ['heavy; extra == "x"'])
    assert closure(tmp_path / "bare", {"x"}) == ({"distill-plugins", "heavy"}, {"heavy"})


def test_a_hung_command_is_stopped_and_its_output_kept(tmp_path, monkeypatch):
    import sys

    check_extras = load_check_extras()
    monkeypatch.setattr(check_extras, "TIMEOUT_S", 1)
    cmd = [sys.executable, "-c", "import time; print('step 1/2', flush=True); print('\\rbar', end='', flush=True); time.sleep(30)"]
    result = check_extras.run(cmd, tmp_path / "log")
    assert result.returncode == -9 and "timed out after 1 seconds" in result.stderr
    assert check_extras.tail(result).splitlines()[:2] == ["step 1/2", "bar"]
    assert "step 1/2" in (tmp_path / "log").read_text()


@pytest.mark.parametrize(
    ("statement", "missing", "extra"),
    [
        ("import hf_plugins; hf_plugins.AMiDTrainer", "trl", "hf"),
        ("import diffusers_plugins", "diffusers", "diffusers"),
        ("import diffusers_plugins", "transformers", "diffusers"),
    ],
)
def test_a_missing_host_library_names_the_extra_to_install(statement, missing, extra):
    # sys.modules[name] = None makes `import name` raise ModuleNotFoundError, as if it were not installed
    code = f"import sys; sys.modules[{missing!r}] = None\n{statement}"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("ImportError:"), result.stderr[-2000:]
    assert f"distill-plugins[{extra}]" in last_line and repr(missing) in last_line
