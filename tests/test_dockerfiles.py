"""The container images: every Dockerfile under images/ is lint-clean (hadolint) and passes checkov;
the base image is slim, pinned, non-root, without a CUDA runtime, and has the runtime's Python.

The size estimate resolves and downloads the real Debian packages, so it needs Debian bookworm's apt
(the development machines and CI); elsewhere those two tests say so and skip.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tools import checks, estimate_base_image

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "images"
BASE = IMAGES / "base" / "Dockerfile"
RECIPE = IMAGES / "runtime" / "recipe.yaml"
DOCKERFILES = sorted(p for p in IMAGES.rglob("*") if p.is_file() and re.fullmatch(r"(.+\.)?Dockerfile(\..+)?", p.name))

CUDA_PACKAGE = re.compile(r"cuda|cudnn|cublas|cufft|curand|cusolver|cusparse|nccl|nvjitlink|nvidia|libnv", re.I)


def _os_codename() -> str:
    release = Path("/etc/os-release")
    fields = dict(
        line.split("=", 1) for line in release.read_text().splitlines() if "=" in line
    ) if release.is_file() else {}
    return fields.get("VERSION_CODENAME", "").strip('"')


needs_bookworm_apt = pytest.mark.skipif(
    _os_codename() != "bookworm",
    reason=f"resolving the image's pinned Debian packages needs Debian bookworm's apt (this host: "
    f"{_os_codename() or 'not Debian'})",
)


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", dockerfile.read_text())
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in (raw.strip() for raw in joined.splitlines())
        if line and not line.startswith("#")
    ]


def _env(dockerfile: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, arguments in _instructions(dockerfile):
        if instruction == "ENV":
            env.update(pair.split("=", 1) for pair in arguments.split())
    return env


@pytest.fixture(scope="module")
def images_checkov() -> checks.CheckovReport:
    return checks.run_checkov(IMAGES)


@pytest.fixture(scope="module")
def base_estimate() -> estimate_base_image.Estimate:
    return estimate_base_image.estimate(BASE)


def test_images_holds_the_base_dockerfile():
    assert BASE in DOCKERFILES


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_dockerfile_has_no_hadolint_finding(dockerfile):
    findings = checks.run_hadolint(dockerfile)
    assert findings == [], "\n".join(map(str, findings))


def test_hadolint_reports_an_unpinned_apt_install(tmp_path):
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM debian:bookworm-slim\nRUN apt-get update && apt-get install -y curl\n")
    codes = {finding.code for finding in checks.run_hadolint(dockerfile)}
    assert {"DL3008", "DL3009", "DL3015"} <= codes


def test_checkov_finds_no_failed_check_in_the_images(images_checkov):
    assert images_checkov.resource_count >= len(DOCKERFILES)
    assert images_checkov.parsing_errors == ()
    assert images_checkov.failed == (), "\n".join(map(str, images_checkov.failed))


def test_every_checkov_skip_in_the_images_gives_a_reason(images_checkov):
    assert images_checkov.unexplained_skips == ()


def test_checkov_reports_failed_checks_and_skips_without_reason(tmp_path):
    (tmp_path / "Dockerfile").write_text(
        "# checkov:skip=CKV_DOCKER_2\nFROM debian:bookworm-slim\nRUN echo hello\n"
    )
    report = checks.run_checkov(tmp_path)
    assert "CKV_DOCKER_3" in {finding.check_id for finding in report.failed}  # no USER
    assert [skip.check_id for skip in report.unexplained_skips] == ["CKV_DOCKER_2"]


def test_base_image_is_pinned_by_digest():
    froms = [arguments for instruction, arguments in _instructions(BASE) if instruction == "FROM"]
    assert len(froms) == 1
    assert re.fullmatch(r"[a-z0-9./-]+(:[\w.-]+)?@sha256:[0-9a-f]{64}", froms[0]), froms[0]


def test_base_image_runs_as_a_non_root_user():
    users = [arguments for instruction, arguments in _instructions(BASE) if instruction == "USER"]
    assert users, "no USER instruction: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"last USER is {users[-1]!r}; want a numeric non-zero uid"


def test_base_image_installs_no_cuda_runtime():
    pins = estimate_base_image.dockerfile_pins(BASE.read_text())
    assert [name for name in pins if CUDA_PACKAGE.search(name)] == []


def test_base_image_removes_apt_lists_in_the_layer_that_installs():
    installs = [a for i, a in _instructions(BASE) if i == "RUN" and "apt-get install" in a]
    assert installs
    for run in installs:
        assert "--no-install-recommends" in run
        assert "rm -rf /var/lib/apt/lists/*" in run


def test_base_image_python_is_the_runtime_recipes_python():
    recipe_python = str(yaml.safe_load(RECIPE.read_text())["python"])
    label = re.search(r'io\.sd-gke\.python="([^"]+)"', BASE.read_text())
    pins = estimate_base_image.dockerfile_pins(BASE.read_text())
    interpreters = [name.removeprefix("python") for name in pins if re.fullmatch(r"python3\.\d+", name)]
    assert label and label.group(1) == recipe_python
    assert interpreters == [recipe_python]
    assert _env(BASE)["SD_PYTHON"] == f"/usr/bin/python{recipe_python}"


def test_base_image_preloads_an_allocator_the_image_installs():
    preload = _env(BASE)["LD_PRELOAD"]
    pins = estimate_base_image.dockerfile_pins(BASE.read_text())
    assert "libtcmalloc_minimal.so.4" in preload and "libtcmalloc-minimal4" in pins


@needs_bookworm_apt
def test_base_image_pins_resolve_in_the_debian_archive_without_cuda(base_estimate):
    resolved = {package.name: package.version for package in base_estimate.packages}
    pins = estimate_base_image.dockerfile_pins(BASE.read_text())
    assert {name: resolved.get(name) for name in pins} == pins
    assert [name for name in resolved if CUDA_PACKAGE.search(name)] == []


@needs_bookworm_apt
def test_base_image_is_estimated_under_its_compressed_size_target(base_estimate):
    assert base_estimate.compressed_estimate_bytes < estimate_base_image.TARGET_COMPRESSED_BYTES
    assert base_estimate.layer_gzip_bytes > 0


def test_estimate_reads_only_version_pinned_apt_arguments():
    text = (
        "FROM x@sha256:" + "0" * 64 + "\n"
        "RUN apt-get update \\\n    && apt-get install -y --no-install-recommends \\\n"
        "        git=1:2.39.5-0+deb12u3 \\\n        python3.11=3.11.2-6+deb12u9 \\\n"
        "    && rm -rf /var/lib/apt/lists/*\n"
        "ENV A=b\n"
    )
    assert estimate_base_image.dockerfile_pins(text) == {
        "git": "1:2.39.5-0+deb12u3",
        "python3.11": "3.11.2-6+deb12u9",
    }


def test_estimate_leaves_out_what_the_slim_image_does_not_unpack():
    assert estimate_base_image.excluded_by_slim("./usr/share/man/man1/git.1.gz")
    assert estimate_base_image.excluded_by_slim("./usr/share/doc/git/changelog.gz")
    assert not estimate_base_image.excluded_by_slim("./usr/share/doc/git/copyright")
    assert not estimate_base_image.excluded_by_slim("./usr/lib/python3.11/os.py")
