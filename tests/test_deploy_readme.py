"""README's "Deploy on Google Cloud" runs as written from a fresh clone: every repository file its
commands name exists (or an earlier command makes it), the package is installed before the
first `dropbatch` command, the project is set before the application-default credentials (and
their quota project), the Cloud Build config builds a Dockerfile and target that exist, and the
quota list names every quota a first GPU VM needs. Each check is also run on a mutated copy."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CLOUDBUILD = "infra/cloudbuild.yaml"
# Made by the commands themselves, not shipped: the function build and Terraform's own files.
GENERATED = ("build/", "infra/.terraform", "infra/.build")
COMMANDS = ("gcloud", "terraform", "docker", "python", "dropbatch", "gsutil", "cp", "cat", "packer")


def deploy_section(readme: str) -> str:
    start = readme.index("## Deploy on Google Cloud")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end != -1 else len(readme)]


def commands(section: str) -> list[str]:
    """The shell commands of the section, in reading order: the lines of its code blocks and
    the inline code spans that open a line with a command (a step's command, not a mention
    in the prose)."""
    found: list[tuple[int, str]] = []
    for block in re.finditer(r"```\n(.*?)```", section, re.S):
        offset = block.start(1)
        # A line ending in a backslash goes on on the next one: one command.
        for line in block.group(1).replace("\\\n", " ").splitlines():
            if line.strip():
                found.append((offset, line.strip()))
            offset += len(line) + 1
    without_blocks = re.sub(r"```\n.*?```", lambda m: " " * len(m.group(0)), section, flags=re.S)
    for span in re.finditer(r"^[ \t]*`([^`\n]+)`", without_blocks, re.M):
        text = span.group(1).strip()
        if text.split(" ", 1)[0] in COMMANDS:
            found.append((span.start(), text))
    return [text for _, text in sorted(found)]


def words(command: str) -> list[str]:
    """The command's words, with `$(…)` substitutions and heredoc bodies left as they are."""
    try:
        return shlex.split(command, comments=False)
    except ValueError:
        return command.split()


def named_paths(command: str) -> list[str]:
    """Repository paths a command names: flag values and arguments inside the checkout."""
    found = []
    for word in words(command):
        value = word.split("=", 1)[1] if "=" in word else word  # --file=X, -var "name=X"
        if "$" in value or value.startswith(("gs://", "http")):
            continue
        if re.fullmatch(r"(infra|manifests|tests|bench|docs)(/[\w.-]+)*/?|Dockerfile[\w.]*", value):
            found.append(value.rstrip("/"))
    return found


def made_by(command: str) -> list[str]:
    """Files this command creates in the checkout (cp's target, `cat > X`, `-chdir` init)."""
    parts = words(command)
    if parts[:1] == ["cp"] and len(parts) == 3:
        return [parts[2]]
    if parts[:2] == ["cat", ">"]:
        return [parts[2]]
    return []


def check_files(section: str, root: Path) -> None:
    made: set[str] = set()
    for command in commands(section):
        made.update(made_by(command))
        for path in named_paths(command):
            if path in made or path.startswith(GENERATED):
                continue
            assert (root / path).exists(), f"{command!r} names {path}, which the checkout lacks"
        parts = words(command)
        for flag in ("--manifest", "-f", "--file", "--config"):
            if flag in parts[:-1]:
                value = parts[parts.index(flag) + 1]
                assert value in made or (root / value).is_file(), f"{command!r}: no {value}"
        if parts[:2] == ["python", "-m"] and "." in parts[2]:
            module = parts[2].replace(".", "/")
            assert (root / f"{module}.py").is_file(), f"{command!r}: no module {parts[2]}"


def check_order(section: str) -> None:
    lines = commands(section)

    def first(pattern: str) -> int:
        hits = [n for n, line in enumerate(lines) if re.search(pattern, line)]
        assert hits, f"no deploy command matches {pattern!r}"
        return hits[0]

    installed = first(r"pip install \.")
    assert installed < first(r"^dropbatch "), "dropbatch runs before it is installed"
    project = first(r"^gcloud config set project ")
    adc = first(r"^gcloud auth application-default login")
    assert project < adc, "the project must be set before the application-default login"
    assert adc < first(r"^gcloud auth application-default set-quota-project ")


def check_cloud_build(section: str, root: Path) -> None:
    """The README's Cloud Build command names the config, whose build uses a Dockerfile and a
    target that exist and pushes what it built."""
    [submit] = [c for c in commands(section) if c.startswith("gcloud builds submit")]
    parts = words(submit)
    config = parts[parts.index("--config") + 1]
    assert config == CLOUDBUILD and parts[-1] == "."  # the checkout is the build's source
    build = yaml.safe_load((root / config).read_text())
    [step] = build["steps"]
    args = step["args"]
    dockerfile = next(a.split("=", 1)[1] for a in args if a.startswith("--file="))
    target = next(a.split("=", 1)[1] for a in args if a.startswith("--target="))
    tag = next(a.split("=", 1)[1] for a in args if a.startswith("--tag="))
    stages = set(re.findall(r"^FROM \S+ AS (\S+)$", (root / dockerfile).read_text(), re.M))
    substituted = dict(
        pair.split("=", 1) for pair in parts[parts.index("--substitutions") + 1].split(",")
    )
    targets = {build["substitutions"]["_TARGET"], substituted["_TARGET"]}
    assert target == "${_TARGET}" and targets <= stages, (targets, stages)
    assert build["images"] == [tag]


def check_quotas(section: str) -> None:
    for quota in ("GPUS_ALL_REGIONS", "NVIDIA_L4_GPUS", "PREEMPTIBLE_NVIDIA_L4_GPUS", "G2_CPUS"):
        assert f"`{quota}`" in section, f"the quota list lacks {quota}"


def check_all(readme: str, root: Path) -> None:
    section = deploy_section(readme)
    check_files(section, root)
    check_order(section)
    check_cloud_build(section, root)
    check_quotas(section)


def test_the_deploy_section_runs_from_a_fresh_clone() -> None:
    check_all(README.read_text(), ROOT)


MUTATIONS = {
    "a manifest the repository lacks": (
        "--manifest manifests/examples/01-crop-vertical.yaml",
        "--manifest manifest.yaml",
    ),
    "no install before doctor": (
        "python -m venv .venv && . .venv/bin/activate && python -m pip install .\n",
        "",
    ),
    "credentials before the project": (
        '   gcloud config set project "$PROJECT"\n   gcloud auth application-default login\n',
        '   gcloud auth application-default login\n   gcloud config set project "$PROJECT"\n',
    ),
    "no quota project": ('   gcloud auth application-default set-quota-project "$PROJECT"\n', ""),
    "a Cloud Build config that is not there": (
        "--config infra/cloudbuild.yaml",
        "--config cloudbuild.yaml",
    ),
    "a target Dockerfile.gpu lacks": ("_TARGET=slim", "_TARGET=fat"),
    "no all-regions GPU quota": ("`GPUS_ALL_REGIONS`", "the global GPU quota"),
    "no G2 CPU quota": ("`G2_CPUS`", "the CPU quota"),
    "a Dockerfile the repository lacks": (
        "docker build --platform linux/amd64 -f Dockerfile.gpu",
        "docker build --platform linux/amd64 -f Dockerfile",
    ),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_the_check_fails_on_a_broken_deploy_section(mutation: str) -> None:
    before, after = MUTATIONS[mutation]
    readme = README.read_text()
    assert before in readme
    with pytest.raises((AssertionError, ValueError, KeyError)):
        check_all(readme.replace(before, after, 1), ROOT)


def test_the_check_fails_when_doctor_runs_before_the_install() -> None:
    install = "   python -m venv .venv && . .venv/bin/activate && python -m pip install .\n"
    doctor = re.search(r"^   dropbatch doctor --inbox .*\n", README.read_text(), re.M)
    assert doctor is not None and install in README.read_text()
    moved = (
        README.read_text()
        .replace(install, "", 1)
        .replace(doctor.group(0), doctor.group(0) + install, 1)
    )
    with pytest.raises(AssertionError, match="before it is installed"):
        check_order(deploy_section(moved))


def test_the_check_fails_when_the_cloud_build_config_builds_another_dockerfile(
    tmp_path: Path,
) -> None:
    (tmp_path / "infra").mkdir()
    text = (ROOT / CLOUDBUILD).read_text()
    assert "--file=Dockerfile.gpu" in text
    (tmp_path / CLOUDBUILD).write_text(text.replace("--file=Dockerfile.gpu", "--file=Dockerfile"))
    with pytest.raises((AssertionError, OSError)):
        check_cloud_build(deploy_section(README.read_text()), tmp_path)


@pytest.mark.parametrize("broken", [False, True])
def test_the_boot_image_readme_names_files_the_checkout_has(broken: bool) -> None:
    text = (ROOT / "infra/boot-image/README.md").read_text()
    assert "  infra/boot-image\n" in text
    if broken:
        with pytest.raises(AssertionError, match="infra/bootimage"):
            check_files(text.replace("  infra/boot-image\n", "  infra/bootimage\n"), ROOT)
    else:
        check_files(text, ROOT)
