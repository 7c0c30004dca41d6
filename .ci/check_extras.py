"""Each extra works alone, installed from the wheel a user would get.

Builds the sdist and, from it, the wheel once (``python -m build``) and checks what they hold. Then installs
the wheel into fresh virtual environments: one with the core dependencies only (``pip install <wheel>``)
and one per extra (``pip install <wheel>[<extra>]``). In each it checks that the environment holds exactly
the declared dependency closure (nothing from another extra), that the package imports with
``__version__`` equal to the wheel's version and every name in its ``__all__`` resolves, and runs the
demo command of ``EXTRAS``. In the core-only environment each package must import (with its public names)
or fail with an ImportError naming the extra to install (``distill-plugins[<extra>]``), never with a bare
ModuleNotFoundError from deep inside.

Torch with its CUDA wheels makes each environment ~5.5 GB, so only the core environment is installed from
scratch; each extra's environment is a hard-linked copy of it (``cp -al``) into which pip installs the
extra. pip writes new files and unlinks before it replaces one, so the core environment stays as it was:
the script checks that (inode, size and mtime of every file, before and after) as well as the closure.
The distributions the extras add are resolved against the core environment and fetched once into a local
wheelhouse; each extra's install then resolves offline from it (``--no-index``), so the package indexes
are queried once rather than once per extra. pip installs with ``--no-compile`` and the checks run with
bytecode writing on, so only the modules that are imported get compiled (torch's ~40 s of compileall
is the largest part of a fresh install). The environments live in memory (tmpfs) when there is room:
on a disk mounted with online discard, deleting 5.5 GB takes ~75 s, in tmpfs ~1 s. ``--jobs N`` checks
N extras at a time.

Run by ``.ci/run`` with the project's virtualenv (which has ``build``):
``.venv/bin/python .ci/check_extras.py [--workdir DIR] [--keep]``. Exit status 1 if any check failed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import email
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import venv
import zipfile
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("hf_plugins", "diffusers_plugins", "tv_plugins")

# The one place for the per-extra checks: extra -> (package, command run as `python -m <package> ...`
# in that extra's environment).
EXTRAS: dict[str, tuple[str, list[str]]] = {
    "hf": ("hf_plugins", ["demo", "--quick"]),
    "diffusers": ("diffusers_plugins", ["demo", "--quick"]),
    "tv": ("tv_plugins", ["demo", "--quick"]),
}

# What a source distribution may hold besides the packages.
SDIST_FILES = {"LICENSE", "NOTICE", "CITATION.cff", "CHANGELOG.md", "README.md", "MANIFEST.in", "pyproject.toml",
               "PKG-INFO", "setup.cfg", "distill_plugins.egg-info"}
SEEDED = {"pip", "setuptools", "wheel"}  # what `python -m venv` may install by itself
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg"}
IMPORT_CHECK = ("import sys, {pkg}; [getattr({pkg}, name) for name in {pkg}.__all__]; "
                "sys.exit(0 if {pkg}.__version__ == {version!r} else '{pkg}.__version__ = ' + {pkg}.__version__)")


PIP_INSTALL = ["-m", "pip", "install", "--quiet", "--no-input", "--no-compile"]
TIMEOUT_S = 1800  # any one command (a pip install, a demo); a hung step fails instead of holding CI
TMPFS, TMPFS_NEEDED_GB = Path("/dev/shm"), 14  # ~7 GB of environments + the demos' memory, with margin


class Report:
    """Failures collected over the run; each step's wall time is printed as it ends."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def fail(self, message: str) -> None:
        self.failures.append(message)
        print(f"FAIL: {message}", flush=True)

    def step(self, name: str, started: float) -> None:
        print(f"-- {name}: {time.perf_counter() - started:.1f} s", flush=True)


def run(cmd: list[str], log: Path, **kwargs) -> subprocess.CompletedProcess:
    """Run ``cmd`` with stdin closed and a time limit, its output kept in ``log``."""
    try:
        result = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TIMEOUT_S,
                                **kwargs)
    except subprocess.TimeoutExpired as error:  # its output comes as bytes, whatever `text` says
        out, err = (b.decode(errors="replace") if isinstance(b, bytes) else b or "" for b in (error.stdout, error.stderr))
        result = subprocess.CompletedProcess(cmd, -9, out, f"{err}\n{error}")
    log.write_text(f"$ {' '.join(cmd)}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
    return result


def tail(result: subprocess.CompletedProcess, lines: int = 25) -> str:
    """The last non-empty lines of the output (progress-bar redraws count as lines), at most 4000 characters."""
    kept = [line for line in (result.stdout + result.stderr).replace("\r", "\n").splitlines() if line.strip()]
    return "\n".join(kept[-lines:])[-4000:]


def wheel_problems(wheel: Path, version: str, tracked: set[str]) -> list[str]:
    """What the wheel holds beyond the three packages and its dist-info, what it lacks (licence files,
    ``py.typed``, the repository's package files ``tracked``), and its metadata."""
    info = f"distill_plugins-{version}.dist-info"
    with zipfile.ZipFile(wheel) as archive:
        names = {n for n in archive.namelist() if not n.endswith("/")}
        metadata = email.message_from_bytes(archive.read(f"{info}/METADATA")) if f"{info}/METADATA" in names else {}
    problems = []
    extra = sorted({n.split("/")[0] for n in names} - set(PACKAGES) - {info})
    if extra:
        problems.append(f"wheel holds more than the three packages: {extra}")
    for name in (f"{info}/licenses/LICENSE", f"{info}/licenses/NOTICE", *(f"{p}/py.typed" for p in PACKAGES)):
        if name not in names:
            problems.append(f"wheel lacks {name}")
    if tracked - names:
        problems.append(f"wheel lacks package files of the repository: {sorted(tracked - names)[:10]}")
    if metadata.get("Version") != version or metadata.get("License-Expression") != "Apache-2.0":
        problems.append(f"wheel METADATA: Version {metadata.get('Version')!r} (expected {version!r}), "
                        f"License-Expression {metadata.get('License-Expression')!r} (expected 'Apache-2.0')")
    return problems


def sdist_problems(sdist: Path, version: str, tracked: set[str]) -> list[str]:
    """What the sdist holds beyond the packages and the release files, and the package files it lacks."""
    root = f"distill_plugins-{version}/"
    with tarfile.open(sdist) as archive:
        names = [m.name for m in archive.getmembers() if m.isfile()]
    inside = {n[len(root):] for n in names if n.startswith(root)}
    extra = sorted({n.split("/")[0] for n in inside} - set(PACKAGES) - SDIST_FILES)
    extra += sorted(n for n in names if not n.startswith(root))
    problems = [f"sdist holds more than the packages and release files: {extra}"] if extra else []
    if tracked - inside:
        problems.append(f"sdist lacks package files of the repository: {sorted(tracked - inside)[:10]}")
    return problems


def check_archives(wheel: Path, sdist: Path, version: str, tracked: set[str]) -> list[str]:
    """Problems with the built archives (``tracked``: the repository's files under the package folders)."""
    problems = wheel_problems(wheel, version, tracked) + sdist_problems(sdist, version, tracked)
    with zipfile.ZipFile(wheel) as w, tarfile.open(sdist) as s:
        if any(n.endswith(".ipynb") for n in w.namelist() + s.getnames()):
            problems.append("an archive holds a notebook")
    return problems


def tracked_package_files() -> set[str]:
    """Files git tracks under the package folders (what the archives must ship)."""
    out = subprocess.run(["git", "ls-files", *PACKAGES], cwd=REPO, capture_output=True, text=True, check=True)
    return {line for line in out.stdout.splitlines() if line}


def dependency_closure(site: Path, extras: set[str]) -> tuple[set[str], set[str]]:
    """``(needed, missing)``: the distributions ``distill-plugins[extras]`` requires, directly or through
    its dependencies (markers evaluated with each requested extra), and those of them not installed in
    ``site``."""
    dists = {canonicalize_name(d.metadata["Name"]): d for d in importlib.metadata.distributions(path=[str(site)])}
    wanted: dict[str, set[str]] = {}
    todo = [("distill-plugins", set(extras))]
    while todo:
        name, name_extras = todo.pop()
        if name in wanted and name_extras <= wanted[name]:
            continue
        wanted.setdefault(name, set()).update(name_extras)
        if name not in dists:
            continue
        for line in dists[name].requires or []:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in wanted[name] | {""}):
                todo.append((canonicalize_name(req.name), set(req.extras)))
    return set(wanted), set(wanted) - set(dists)


def check_environment(label: str, env: Path, extras: set[str], report: Report) -> None:
    """The environment holds exactly the closure of ``distill-plugins[extras]`` (plus pip's seed)."""
    where = [str(env / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
    site = Path(subprocess.run(where, capture_output=True, text=True, check=True).stdout.strip())
    installed = {canonicalize_name(d.metadata["Name"]) for d in importlib.metadata.distributions(path=[str(site)])}
    needed, missing = dependency_closure(site, extras)
    unexpected = sorted(installed - needed - SEEDED)
    if missing or unexpected:
        report.fail(f"{label}: environment is not the declared closure (missing {sorted(missing)}, "
                    f"not required {unexpected})")
    else:
        print(f"{label}: {len(installed)} distributions, exactly the declared closure", flush=True)


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """``{relative path: (inode, size, mtime_ns)}`` of every file and link under ``root``."""
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            stat = os.lstat(path)
            files[os.path.relpath(path, root)] = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    return files


def demo_env(work: Path, extra: str) -> dict[str, str]:
    """The environment of a user's shell, offline and with caches of its own; no PYTHONPATH, so only
    the installed wheel is importable."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
    env.update(OFFLINE, HF_HOME=str(work / f"hf-home-{extra}"), DISTILL_PLUGINS_CACHE=str(work / f"cache-{extra}"))
    return env


def check_bare_imports(base: Path, version: str, work: Path, report: Report) -> None:
    """With the core dependencies only, each package imports or names the extra it needs."""
    for extra, (package, _) in EXTRAS.items():
        result = run([str(base / "bin" / "python"), "-c", IMPORT_CHECK.format(pkg=package, version=version)],
                     work / f"bare-import-{package}.log", cwd=work, env=demo_env(work, "bare"))
        last = (result.stderr.strip().splitlines() or [""])[-1]
        if result.returncode == 0:
            print(f"core only: import {package} works", flush=True)
        elif re.match(r"(ImportError|ModuleNotFoundError): ", last) and f"distill-plugins[{extra}]" in last:
            print(f"core only: import {package} -> {last}", flush=True)
        else:
            report.fail(f"core only: import {package} fails without naming 'distill-plugins[{extra}]':\n"
                        f"{tail(result, 6)}")


def check_extra(extra: str, base: Path, wheel: Path, version: str, work: Path, report: Report) -> None:
    """Install ``wheel[extra]`` into a hard-linked copy of ``base``; check the closure, the import and
    the demo."""
    package, command = EXTRAS[extra]
    env_dir, cwd = work / f"env-{extra}", work / f"run-{extra}"
    python, started = str(env_dir / "bin" / "python"), time.perf_counter()
    subprocess.run(["cp", "-al", str(base), str(env_dir)], check=True)
    result = run([python, *PIP_INSTALL, "--no-index", "--find-links", str(work / "wheelhouse"), f"{wheel}[{extra}]"],
                 work / f"pip-{extra}.log")
    report.step(f"[{extra}] pip install (into a hard-linked copy)", started)
    if result.returncode != 0:
        return report.fail(f"[{extra}] pip install failed:\n{tail(result)}")
    check_environment(f"[{extra}]", env_dir, {extra}, report)
    cwd.mkdir()
    env = demo_env(work, extra)
    result = run([python, "-c", IMPORT_CHECK.format(pkg=package, version=version)], work / f"import-{extra}.log",
                 cwd=cwd, env=env)
    if result.returncode != 0:
        report.fail(f"[{extra}] import {package} with its public names failed:\n{tail(result)}")
    started = time.perf_counter()
    help_result = run([python, "-m", package, command[0], "--help"], work / f"help-{extra}.log", cwd=cwd, env=env)
    if help_result.returncode != 0:
        return report.fail(f"[{extra}] python -m {package} {command[0]} --help failed:\n{tail(help_result)}")
    result = run([python, "-m", package, *command], work / f"demo-{extra}.log", cwd=cwd, env=env)
    report.step(f"[{extra}] python -m {package} {' '.join(command)}", started)
    if result.returncode != 0:
        report.fail(f"[{extra}] python -m {package} {' '.join(command)} failed:\n{tail(result)}")


def build(work: Path, report: Report) -> tuple[Path, Path, str] | None:
    """Build the sdist and, from it, the wheel; check both. ``(wheel, sdist, version)``, or None."""
    started = time.perf_counter()
    result = run([sys.executable, "-m", "build", "--outdir", str(work / "dist"), str(REPO)], work / "build.log")
    report.step("python -m build (sdist, then the wheel from it)", started)
    if result.returncode != 0:
        report.fail(f"python -m build failed:\n{tail(result)}")
        return None
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    dist = work / "dist"
    wheel, sdist = dist / f"distill_plugins-{version}-py3-none-any.whl", dist / f"distill_plugins-{version}.tar.gz"
    if not (wheel.is_file() and sdist.is_file()):
        report.fail(f"build did not produce {wheel.name} and {sdist.name}: {sorted(p.name for p in dist.iterdir())}")
        return None
    for problem in check_archives(wheel, sdist, version, tracked_package_files()):
        report.fail(problem)
    return wheel, sdist, version


def fetch_wheelhouse(base: Path, wheel: Path, work: Path, report: Report) -> bool:
    """Resolve ``wheel[every extra]`` against the core environment and put the wheels of what it adds
    into ``work/wheelhouse`` (building the few that ship only as sdists)."""
    started, resolution = time.perf_counter(), work / "extras-resolution.json"
    pip = [str(base / "bin" / "python"), "-m", "pip"]
    result = run([*pip, "install", "--dry-run", "--quiet", "--no-input", "--report", str(resolution),
                  f"{wheel}[{','.join(EXTRAS)}]"], work / "pip-resolve-extras.log")
    if result.returncode != 0:
        report.fail(f"resolving the extras failed:\n{tail(result)}")
        return False
    urls = [item["download_info"]["url"] for item in json.loads(resolution.read_text())["install"]
            if canonicalize_name(item["metadata"]["name"]) != "distill-plugins"]
    result = run([*pip, "wheel", "--quiet", "--no-input", "--no-deps", "--wheel-dir", str(work / "wheelhouse"),
                  *urls], work / "pip-wheelhouse.log")
    report.step(f"resolve the extras once, fetch {len(urls)} wheels", started)
    if result.returncode != 0:
        report.fail(f"fetching the extras' wheels failed:\n{tail(result)}")
        return False
    return True


def check_all(work: Path, report: Report, jobs: int) -> None:
    built = build(work, report)
    if built is None:
        return
    wheel, _, version = built
    base, started = work / "env-core", time.perf_counter()
    venv.EnvBuilder(with_pip=True, symlinks=True).create(base)
    result = run([str(base / "bin" / "python"), *PIP_INSTALL, str(wheel)], work / "pip-core.log")
    report.step("fresh virtualenv + pip install <wheel> (core dependencies)", started)
    if result.returncode != 0:
        return report.fail(f"pip install <wheel> failed:\n{tail(result)}")
    check_environment("core only", base, set(), report)
    started = time.perf_counter()
    check_bare_imports(base, version, work, report)
    report.step("core only: import each package", started)
    before = snapshot(base)
    if not fetch_wheelhouse(base, wheel, work, report):
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        for future in [pool.submit(check_extra, extra, base, wheel, version, work, report) for extra in EXTRAS]:
            future.result()
    changed = sorted(path for path, stat in snapshot(base).items() if before.get(path) != stat)
    changed += sorted(set(before) - set(snapshot(base)))
    if changed:
        report.fail(f"the core environment changed while the extras were installed into its copies: {changed[:10]}")
    else:
        print(f"core environment unchanged by the extras' installs ({len(before)} files)", flush=True)


def default_workdir() -> Path:
    """tmpfs when it and the available memory have room for the environments, else the temporary dir."""
    try:
        meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        available_gb = int(meminfo["MemAvailable"].split()[0]) / 2**20
        if available_gb >= TMPFS_NEEDED_GB and shutil.disk_usage(TMPFS).free / 2**30 >= TMPFS_NEEDED_GB:
            return TMPFS
    except (OSError, KeyError, ValueError):
        pass
    return Path(tempfile.gettempdir())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where to make the scratch folder (default: tmpfs if it has room, else the temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (environments, logs)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="extras checked at the same time (on 2 cores the CPU-bound demos gain nothing from more)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="distill-plugins-extras-", dir=args.workdir or default_workdir())).resolve()
    print(f"scratch folder: {work}", flush=True)
    report, started = Report(), time.perf_counter()
    try:
        check_all(work, report, args.jobs)
    finally:
        if not args.keep:
            cleanup = time.perf_counter()
            shutil.rmtree(work, ignore_errors=True)
            report.step("delete the scratch folder", cleanup)
    report.step("total", started)
    print(f"== extras: {len(report.failures)} failed check(s)" + (f"; logs in {work}" if args.keep else ""))
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
