"""The container recipes install exactly containers/requirements.txt plus strokeperf (--no-deps),
run as a non-root user with the strokeperf entrypoint, and the pinned set agrees with pyproject.toml.

The slow test replays the Dockerfile's install steps in a fresh venv (about 30 s with a warm pip
cache; set STROKEPERF_SKIP_CONTAINER_TEST=1 to skip it).
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
CONTAINERS = ROOT / "containers"
DOCKERFILE = CONTAINERS / "Dockerfile"
DEFFILE = CONTAINERS / "strokeperf.def"
REQUIREMENTS = CONTAINERS / "requirements.txt"
BASE_IMAGE = "python:3.11-slim"


# ------------------------------------------------------------------ parsing helpers
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def pinned() -> dict[str, tuple[str, Version]]:
    """requirements.txt as {canonical name: (name as written, version)}; every line must be an == pin."""
    pins: dict[str, tuple[str, Version]] = {}
    for number, line in enumerate(REQUIREMENTS.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#=]+)", line)
        assert m, f"requirements.txt line {number} is not an exact 'name==version' pin: {line!r}"
        key = canonicalize_name(m[1])
        assert key not in pins, f"requirements.txt pins {m[1]} twice"
        pins[key] = (m[1], Version(m[2]))
    return pins


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    instructions, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, args = current.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        current = ""
    assert not current, "Dockerfile ends inside a continued line"
    return instructions


def def_sections() -> tuple[dict[str, str], dict[str, list[str]]]:
    """Apptainer definition: header keywords and the lines of each %section."""
    header: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    current = None
    for raw in DEFFILE.read_text().splitlines():
        line = raw.strip()
        if line.startswith("%"):
            current = line[1:].split()[0]
            sections[current] = []
        elif current is None:
            if line and not line.startswith("#"):
                key, _, value = line.partition(":")
                header[key.strip().lower()] = value.strip()
        elif line and not line.startswith("#"):
            sections[current].append(line)
    return header, sections


def pip_installs(commands: list[str]) -> list[list[str]]:
    """Argument lists of the 'pip install' commands among shell commands (split at &&)."""
    found = []
    for command in commands:
        for part in command.split("&&"):
            words = shlex.split(part)
            if words[:2] in (["pip", "install"], ["pip3", "install"]) or words[1:4] == ["-m", "pip", "install"]:
                found.append(words[words.index("install") + 1:])
    return found


def check_install_steps(installs: list[list[str]], requirements_dest: str, source_dest: str, recipe: str):
    assert len(installs) == 2, f"{recipe}: expected 2 pip installs (pinned set, then strokeperf), got {installs}"
    first, second = installs
    assert "--no-deps" in first and "-r" in first, f"{recipe}: first install must be --no-deps -r: {first}"
    assert first[first.index("-r") + 1] == requirements_dest, f"{recipe}: installs {first}, not {requirements_dest}"
    assert [a for a in first if not a.startswith("-")] == [requirements_dest], f"{recipe}: extra packages in {first}"
    assert "--no-deps" in second, f"{recipe}: strokeperf must be installed with --no-deps: {second}"
    assert [a for a in second if not a.startswith("-")] == [source_dest], (
        f"{recipe}: second install must be the strokeperf source copied to {source_dest}: {second}")


# ------------------------------------------------------------------ Dockerfile
def docker_copies() -> dict[str, str]:
    """COPY source -> destination file or folder (a folder destination ends with /)."""
    copies = {}
    for keyword, args in dockerfile_instructions():
        if keyword == "COPY":
            words = shlex.split(args)
            assert not any(w.startswith("--from") for w in words), "COPY --from is not expected"
            *sources, dest = words
            for source in sources:
                copies[source] = dest + Path(source).name if dest.endswith("/") else dest
    return copies


def docker_run_commands() -> list[str]:
    return [args for keyword, args in dockerfile_instructions() if keyword == "RUN"]


def test_dockerfile_base_image_and_labels():
    instructions = dockerfile_instructions()
    assert [a for k, a in instructions if k == "FROM"] == [BASE_IMAGE]
    labels = dict(re.findall(r'(\S+)="([^"]*)"', " ".join(a for k, a in instructions if k == "LABEL")))
    assert labels["org.opencontainers.image.version"] == pyproject()["version"]
    assert labels["org.opencontainers.image.title"] == "strokeperf"
    assert labels["org.opencontainers.image.licenses"] == pyproject()["license"]["text"]


def test_dockerfile_installs_exactly_the_pinned_set_then_strokeperf():
    copies = docker_copies()
    requirements_dest = copies["containers/requirements.txt"]
    source_dest = str(Path(copies["pyproject.toml"]).parent)
    assert str(Path(copies["strokeperf"]).parent) == source_dest, "package and pyproject.toml copied apart"
    assert str(Path(copies["README.md"]).parent) == source_dest, "README.md (pyproject's readme) not copied"
    check_install_steps(pip_installs(docker_run_commands()), requirements_dest, source_dest, "Dockerfile")


def test_dockerfile_runs_strokeperf_as_non_root():
    instructions = dockerfile_instructions()
    keywords = [k for k, _ in instructions]
    users = [a for k, a in instructions if k == "USER"]
    assert users, "Dockerfile has no USER: the image would run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN"), \
        "USER must come after the install steps"
    created = [a for k, a in instructions if k == "RUN" and "useradd" in a]
    assert created and users[-1] in shlex.split(created[-1]), f"user {users[-1]} is not created by useradd"
    entrypoint = [a for k, a in instructions if k == "ENTRYPOINT"]
    assert len(entrypoint) == 1 and json.loads(entrypoint[0]) == ["strokeperf"]


def test_dockerfile_needs_no_network_or_home_at_run_time():
    env = " ".join(a for k, a in dockerfile_instructions() if k == "ENV")
    values = dict(re.findall(r"(\w+)=(\S+)", env))
    assert values.get("NO_ET") == "1", "pydra's version check (etelemetry) would go online"
    for key in ("XDG_CACHE_HOME", "MPLCONFIGDIR", "NILEARN_DATA"):
        assert values.get(key, "").startswith("/tmp/"), f"{key} must point to a place any uid can write"


# ------------------------------------------------------------------ Apptainer definition
def test_def_base_image_and_labels():
    header, sections = def_sections()
    assert header["bootstrap"] == "docker" and header["from"] == BASE_IMAGE
    labels = dict(line.split(None, 1) for line in sections["labels"])
    assert labels["org.opencontainers.image.version"] == pyproject()["version"]
    assert labels["org.opencontainers.image.title"] == "strokeperf"


def test_def_installs_exactly_the_pinned_set_then_strokeperf():
    _, sections = def_sections()
    files = dict(line.split() for line in sections["files"])
    source_dest = str(Path(files["pyproject.toml"]).parent)
    assert str(Path(files["strokeperf"]).parent) == source_dest
    assert str(Path(files["README.md"]).parent) == source_dest
    check_install_steps(pip_installs(sections["post"]), files["containers/requirements.txt"], source_dest,
                        "strokeperf.def")


def test_def_runs_strokeperf_as_the_calling_user():
    # Apptainer has no USER: the image runs as whoever calls it, so it must not need root at run
    # time nor pin HOME to root's home; its entry point is strokeperf.
    _, sections = def_sections()
    assert sections["runscript"] == ['exec strokeperf "$@"']
    environment = "\n".join(sections["environment"])
    assert "/root" not in environment and not re.search(r"\bHOME=", environment)
    assert "export NO_ET=1" in sections["environment"]


# ------------------------------------------------------------------ requirements.txt vs pyproject
def test_requirements_pin_every_runtime_dependency_within_pyproject():
    pins = pinned()
    assert "strokeperf" not in pins, "requirements.txt must not contain strokeperf itself"
    for dependency in pyproject()["dependencies"]:
        requirement = Requirement(dependency)
        key = canonicalize_name(requirement.name)
        assert key in pins, f"runtime dependency {requirement.name} is not pinned in containers/requirements.txt"
        name, version = pins[key]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"containers/requirements.txt pins {name}=={version}, outside pyproject's {dependency!r}")


def test_requirements_agree_with_pyproject_exact_pins():
    pins = pinned()
    exact = [Requirement(d) for d in pyproject()["dependencies"]]
    exact = {canonicalize_name(r.name): str(s.version) for r in exact for s in r.specifier if s.operator == "=="}
    assert {"pydra": "1.0a12", "cloudpickle": "3.1.3"}.items() <= exact.items()
    for key, version in exact.items():
        assert str(pins[key][1]) == str(Version(version))


# ------------------------------------------------------------------ slow: replay the recipe
@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("STROKEPERF_SKIP_CONTAINER_TEST") == "1",
                    reason="STROKEPERF_SKIP_CONTAINER_TEST=1: container install replay skipped")
def test_recipe_installs_a_working_strokeperf(tmp_path):
    """Replay the Dockerfile's COPY and RUN steps in a fresh venv: stage the copied files under
    tmp_path, run its pip and strokeperf commands with the venv's executables."""
    root = tmp_path / "image"
    for source, dest in docker_copies().items():
        target = root / dest.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / source).is_dir():
            shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(ROOT / source, target)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    executables = {"pip": [str(venv / "bin" / "python"), "-m", "pip"], "strokeperf": [str(venv / "bin" / "strokeperf")]}
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env.update(PIP_NO_CACHE_DIR="1", PIP_DISABLE_PIP_VERSION_CHECK="1", NO_ET="1", PYTHONNOUSERSITE="1")
    ran = []
    for command in docker_run_commands():
        for part in command.split("&&"):
            words = shlex.split(part)
            if words[0] in {"rm", "useradd"}:  # image housekeeping, nothing to replay
                continue
            assert words[0] in executables, f"the replay does not know the recipe step {part.strip()!r}"
            words = [str(root / w.lstrip("/")) if w.startswith("/tmp/strokeperf-build") else w for w in words]
            proc = subprocess.run(executables[words[0]] + words[1:], capture_output=True, text=True, env=env,
                                  cwd=tmp_path)
            assert proc.returncode == 0, f"{part.strip()} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
            ran.append(words[:2])
    assert ["pip", "check"] in ran
    version = subprocess.run(executables["strokeperf"] + ["--version"], capture_output=True, text=True, env=env,
                             check=True)
    assert version.stdout.strip() == f"strokeperf {pyproject()['version']}"
    usage = subprocess.run(executables["strokeperf"] + ["--help"], capture_output=True, text=True, env=env, check=True)
    assert "participant" in usage.stdout and "--worker" in usage.stdout
    # the venv holds exactly the pinned set plus strokeperf (and the venv's own pip/setuptools)
    frozen = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"], capture_output=True,
                            text=True, env=env, check=True)
    installed = {canonicalize_name(p["name"]): Version(p["version"]) for p in json.loads(frozen.stdout)}
    installed = {k: v for k, v in installed.items() if k not in {"pip", "setuptools", "wheel", "strokeperf"}}
    assert installed == {k: v for k, (_, v) in pinned().items()}
