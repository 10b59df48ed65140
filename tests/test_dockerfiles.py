"""The container images: every Dockerfile under images/ is lint-clean (hadolint) and passes checkov;
the base image is slim, pinned to a Debian snapshot, non-root, without a CUDA runtime, and has the
runtime's Python.

The size estimate resolves and downloads the real Debian packages with apt (the development machines
and CI's bookworm container). Its handling of Debian's updates is shown without the network, against
a local archive apt really reads (tests/fakes/debian_archive.py) that publishes a newer version.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.fakes.debian_archive import FakeDeb, LocalArchive
from tools import apt_archive, base_pins, checks, estimate_base_image, slim_layer
from tools.base_pins import BaseImage, EstimateError, PinRecord
from tools.estimate_base_image import PinnedPackage

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "images"
BASE = IMAGES / "base" / "Dockerfile"
RECIPE = IMAGES / "runtime" / "recipe.yaml"
DOCKERFILES = sorted(p for p in IMAGES.rglob("*") if p.is_file() and re.fullmatch(r"(.+\.)?Dockerfile(\..+)?", p.name))

CUDA_PACKAGE = re.compile(r"cuda|cudnn|cublas|cufft|curand|cusolver|cusparse|nccl|nvjitlink|nvidia|libnv", re.I)


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


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(IMAGES)))
def test_every_pip_install_checks_hashes_of_a_locked_requirements_file(dockerfile):
    """--require-hashes refuses any package the lock does not pin with a hash; without it pip checks hashes
    only while every line has one, and a requirements.txt edited by hand would install unchecked."""
    installs = [args for instruction, args in _instructions(dockerfile)
                if instruction == "RUN" and re.search(r"\bpip3? install\b", args)]
    for args in installs:
        assert "--require-hashes" in args.split() and re.search(r"-r \S*requirements\.txt\b", args), args


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
    pins = base_pins.dockerfile_pins(BASE.read_text())
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
    pins = base_pins.dockerfile_pins(BASE.read_text())
    interpreters = [name.removeprefix("python") for name in pins if re.fullmatch(r"python3\.\d+", name)]
    assert label and label.group(1) == recipe_python
    assert interpreters == [recipe_python]
    assert _env(BASE)["SD_PYTHON"] == f"/usr/bin/python{recipe_python}"


def test_base_image_preloads_an_allocator_the_image_installs():
    preload = _env(BASE)["LD_PRELOAD"]
    pins = base_pins.dockerfile_pins(BASE.read_text())
    assert "libtcmalloc_minimal.so.4" in preload and "libtcmalloc-minimal4" in pins


def test_base_image_pins_resolve_in_the_debian_archive_without_cuda(base_estimate):
    resolved = {package.name: package.version for package in base_estimate.packages}
    pins = base_pins.dockerfile_pins(BASE.read_text())
    assert {pin.name: pin.pinned for pin in base_estimate.pins} == pins
    assert {pin.name: resolved.get(pin.name) for pin in base_estimate.pins} == {
        pin.name: pin.estimated for pin in base_estimate.pins
    }
    assert [name for name in resolved if CUDA_PACKAGE.search(name)] == []


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
    assert base_pins.dockerfile_pins(text) == {
        "git": "1:2.39.5-0+deb12u3",
        "python3.11": "3.11.2-6+deb12u9",
    }


def test_estimate_leaves_out_what_the_slim_image_does_not_unpack():
    assert slim_layer.excluded_by_slim("./usr/share/man/man1/git.1.gz")
    assert slim_layer.excluded_by_slim("./usr/share/doc/git/changelog.gz")
    assert not slim_layer.excluded_by_slim("./usr/share/doc/git/copyright")
    assert not slim_layer.excluded_by_slim("./usr/lib/python3.11/os.py")


# --- the Debian snapshot the base image installs from ----------------------------------------

def _snapshot_sources_command() -> str:
    """The shell of the base image's RUN that writes apt's sources, up to its redirection."""
    (run,) = [a for i, a in _instructions(BASE) if i == "RUN" and "apt-get install" in a]
    return run.split(" > /etc/apt/sources.list.d/debian.sources", 1)[0]


def test_base_image_dockerfile_says_what_refresh_pins_recorded():
    base_pins.check_record(BASE.read_text(), PinRecord.read(base_pins.PINS_RECORD))


def test_base_image_apt_reads_only_the_snapshot_of_its_timestamp(tmp_path):
    """apt itself reads the sources the RUN writes: every index it would fetch is the snapshot's."""
    snapshot = base_pins.dockerfile_snapshot(BASE.read_text())
    parts = tmp_path / "sources.list.d"
    (tmp_path / "lists" / "partial").mkdir(parents=True)
    parts.mkdir()
    written = subprocess.run(["sh", "-c", _snapshot_sources_command()], env={"DEBIAN_SNAPSHOT": snapshot},
                             capture_output=True, text=True, check=True).stdout
    (parts / "debian.sources").write_text(written)
    uris = subprocess.run(
        ["apt-get", "-o", "Dir::Etc::SourceList=/dev/null", "-o", f"Dir::Etc::SourceParts={parts}",
         "-o", f"Dir::State::Lists={tmp_path / 'lists'}", "update", "--print-uris"],
        capture_output=True, text=True, check=True).stdout
    releases = sorted(re.findall(r"^'(\S+/InRelease)'", uris, re.M))
    assert releases == [
        f"http://snapshot.debian.org/archive/debian-security/{snapshot}/dists/bookworm-security/InRelease",
        f"http://snapshot.debian.org/archive/debian/{snapshot}/dists/bookworm-updates/InRelease",
        f"http://snapshot.debian.org/archive/debian/{snapshot}/dists/bookworm/InRelease",
    ]
    assert "deb.debian.org" not in uris
    assert written.count("Check-Valid-Until: no") == 2  # snapshot Release files are long expired
    assert written.count("Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg") == 2


# --- the estimate when Debian's archive moves on (a local archive apt really reads) -----------

FAKE_BASE = FakeDeb("fake-base", "1")
FAKE_LIB = FakeDeb("fake-lib", "1.0", files={"usr/lib/fake/libfake.so.1": b"\x7fELF" + bytes(range(256)) * 64})
FAKE_APP_1 = FakeDeb("fake-app", "1.0", ("fake-lib",), {"usr/bin/fake-app": b"one" * 4000,
                                                          "usr/share/man/man1/fake-app.1": b"m" * 9000})
FAKE_APP_2 = FakeDeb("fake-app", "2.0", ("fake-lib",), {"usr/bin/fake-app": b"two" * 5000})
FAKE_BASE_IMAGE = BaseImage("registry.example/slim@sha256:" + "a" * 64, "sha256:" + "b" * 64, 1_000_000, "tests")


def _pinned_image(directory: Path, pins: dict[str, str], recorded: dict[str, str] | None = None) -> tuple[Path, Path]:
    """A Dockerfile pinning `pins` and its record (the same pins unless `recorded` says otherwise)."""
    dockerfile = directory / "Dockerfile"
    dockerfile.write_text(
        f"FROM {FAKE_BASE_IMAGE.reference}\nARG DEBIAN_SNAPSHOT=20260101T000000Z\n"
        "RUN apt-get update \\\n    && apt-get install -y --no-install-recommends \\\n"
        + "".join(f"        {name}={version} \\\n" for name, version in pins.items())
        + "    && rm -rf /var/lib/apt/lists/*\n"
    )
    record = directory / "pins.json"
    record.write_text(PinRecord("20260101T000000Z", FAKE_BASE_IMAGE, recorded or pins).to_json())
    return dockerfile, record


@pytest.fixture
def archive(tmp_path) -> LocalArchive:
    local = LocalArchive(tmp_path / "debian")
    local.publish([FAKE_BASE, FAKE_LIB, FAKE_APP_1])
    return local


def test_estimate_measures_the_pinned_versions_when_the_archive_has_them(archive, tmp_path):
    dockerfile, record = _pinned_image(tmp_path, {"fake-app": "1.0"})
    result = estimate_base_image.estimate(dockerfile, record, tmp_path / "debs", archive.apt)
    assert result.pins == [PinnedPackage("fake-app", "1.0", "1.0")]
    assert {(p.name, p.version, p.pinned_in_dockerfile) for p in result.packages} == {
        ("fake-app", "1.0", True), ("fake-lib", "1.0", False)}
    assert result.compressed_estimate_bytes == (
        FAKE_BASE_IMAGE.compressed_bytes + result.layer_gzip_bytes + estimate_base_image.GENERATED_FILES_ALLOWANCE_BYTES)
    assert archive.apt.updates == [1]  # the lists did not exist yet


def test_estimate_measures_a_superseded_pin_at_the_archives_current_version(archive, tmp_path):
    """Debian publishes 2.0 and deletes 1.0 after apt's lists were fetched: the stale lists' download
    fails, apt updates once, and the estimate measures 2.0 and says it did."""
    dockerfile, record = _pinned_image(tmp_path, {"fake-app": "1.0"})
    archive.apt.update()
    archive.publish([FAKE_BASE, FAKE_LIB, FAKE_APP_2])
    result = estimate_base_image.estimate(dockerfile, record, tmp_path / "debs", archive.apt)
    assert result.pins == [PinnedPackage("fake-app", "1.0", "2.0")]
    assert [pin.superseded for pin in result.pins] == [True]
    assert ("fake-app", "2.0") in {(p.name, p.version) for p in result.packages}
    assert result.meets_target
    assert archive.apt.updates == [1, 1]


def test_estimate_of_a_superseded_pin_prints_pinned_and_estimated_version(archive, tmp_path, capsys):
    dockerfile, record = _pinned_image(tmp_path, {"fake-app": "1.0"})
    archive.publish([FAKE_BASE, FAKE_LIB, FAKE_APP_2])
    code = estimate_base_image.main(["--dockerfile", str(dockerfile), "--record", str(record),
                                     "--output", str(tmp_path / "estimate.json"), "--sizes", str(tmp_path / "sizes.json")],
                                    archive.apt, tmp_path / "debs")
    assert code == 0
    assert "  fake-app: pinned 1.0, estimated 2.0\n" in capsys.readouterr().out


# --- recorded layer sizes (tools/slim_layer.py LayerSizes) ----------------------------------------------------

def test_a_second_estimate_measures_no_package_the_first_measured(archive, tmp_path):
    dockerfile, record = _pinned_image(tmp_path, {"fake-app": "1.0"})
    sizes = slim_layer.LayerSizes()
    first = estimate_base_image.estimate(dockerfile, record, tmp_path / "debs", archive.apt, sizes)
    again = estimate_base_image.estimate(dockerfile, record, tmp_path / "debs", archive.apt, sizes)
    assert sizes.measured == 2 and len(sizes.sizes) == 2
    assert again.layer_gzip_bytes == first.layer_gzip_bytes > 0


def test_a_recorded_size_is_used_for_the_file_with_that_sha256(archive, tmp_path):
    dockerfile, record = _pinned_image(tmp_path, {"fake-app": "1.0"})
    sizes = slim_layer.LayerSizes()
    estimate_base_image.estimate(dockerfile, record, tmp_path / "debs", archive.apt, sizes)
    for entry in sizes.sizes.values():
        entry.layer_gzip_bytes = 1000
    result = estimate_base_image.estimate(dockerfile, record, tmp_path / "debs", archive.apt, sizes)
    assert result.layer_gzip_bytes == 2000


def test_a_package_file_that_changed_is_measured_again(archive, tmp_path):
    """Debian rebuilds a package under the same name: its sha256 is new, so its recorded size is not used."""
    deb = tmp_path / "fake-app_1.0_all.deb"
    archive.build(FAKE_APP_1).replace(deb)
    sizes = slim_layer.LayerSizes()
    first = slim_layer.layer_gzip_bytes([deb], sizes)
    archive.build(FAKE_APP_2).replace(deb)
    second = slim_layer.layer_gzip_bytes([deb], sizes)
    assert sizes.measured == 2 and len(sizes.sizes) == 2 and second != first


def test_estimate_records_the_sizes_of_exactly_the_packages_it_measured(archive, tmp_path, capsys):
    dockerfile, record = _pinned_image(tmp_path, {"fake-app": "1.0"})
    path = tmp_path / "sizes.json"
    gone = {"0" * 64: {"deb": "gone_1_all.deb", "layer_gzip_bytes": 5}}
    path.write_text(json.dumps({"rules": slim_layer.measurement_key(), "sizes": gone}))
    argv = ["--dockerfile", str(dockerfile), "--record", str(record), "--output", str(tmp_path / "e.json"),
            "--sizes", str(path)]
    assert estimate_base_image.main(argv, archive.apt, tmp_path / "debs") == 0
    written = json.loads(path.read_text())
    assert sorted(e["deb"].split("_")[0] for e in written["sizes"].values()) == ["fake-app", "fake-lib"]
    assert "2 of 2 packages measured" in capsys.readouterr().out
    assert estimate_base_image.main(argv, archive.apt, tmp_path / "debs") == 0
    assert "0 of 2 packages measured" in capsys.readouterr().out


def test_sizes_recorded_under_other_rules_are_not_used(tmp_path):
    path = tmp_path / "sizes.json"
    path.write_text(json.dumps({"rules": "measured-otherwise", "sizes": {"a" * 64: {"deb": "x.deb", "layer_gzip_bytes": 1}}}))
    assert slim_layer.LayerSizes.read(path).sizes == {}


def test_the_rules_key_changes_with_the_gzip_level(monkeypatch):
    before = slim_layer.measurement_key()
    monkeypatch.setattr(slim_layer, "LAYER_GZIP_LEVEL", 9)
    assert slim_layer.measurement_key() != before


def test_the_recorded_size_of_the_smallest_base_package_is_what_measuring_it_gives(base_estimate):
    """The record is only a memory: measuring a recorded file again gives the recorded size."""
    recorded = slim_layer.LayerSizes.read()
    debs = sorted((Path(deb) for deb in base_estimate.debs), key=lambda deb: deb.stat().st_size)
    smallest = next(deb for deb in debs if slim_layer._sha256(deb) in recorded.sizes)
    assert slim_layer.deb_layer_gzip_bytes(smallest) == recorded.sizes[slim_layer._sha256(smallest)].layer_gzip_bytes


def test_estimate_fails_naming_make_refresh_when_a_pinned_package_is_not_in_the_archive(archive, tmp_path):
    dockerfile, record = _pinned_image(tmp_path, {"fake-app": "1.0", "fake-gone": "1.0"})
    with pytest.raises(EstimateError, match=r"archive has no package fake-gone; run `make refresh`"):
        estimate_base_image.estimate(dockerfile, record, tmp_path / "debs", archive.apt)
    assert archive.apt.updates == [1]  # concluded only from lists it had just fetched


def test_estimate_fails_naming_make_refresh_when_a_pin_is_newer_than_the_archive(archive, tmp_path):
    dockerfile, record = _pinned_image(tmp_path, {"fake-app": "3.0"})
    archive.apt.update()
    with pytest.raises(EstimateError, match=r"newer than any in Debian's archive: fake-app=3.0 \(archive: 1.0\); "
                                            r"run `make refresh`"):
        estimate_base_image.estimate(dockerfile, record, tmp_path / "debs", archive.apt)
    assert archive.apt.updates == [1, 1]  # once more before calling it drift


def test_estimate_fails_naming_make_refresh_when_the_dockerfile_disagrees_with_the_record(archive, tmp_path):
    dockerfile, record = _pinned_image(tmp_path, {"fake-app": "1.0"}, recorded={"fake-app": "2.0"})
    with pytest.raises(EstimateError, match=r"disagrees with images/base/pins.json: packages: .*run `make refresh`"):
        estimate_base_image.estimate(dockerfile, record, tmp_path / "debs", archive.apt)
    assert archive.apt.updates == []


def test_policy_parsing_keeps_every_archive_version_and_the_candidate():
    output = (
        "python3.11:\n  Installed: (none)\n  Candidate: 3.11.2-6+deb12u9\n  Version table:\n"
        "     3.11.2-6+deb12u9 500\n        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages\n"
        "     3.11.2-6+deb12u8 500\n        500 http://deb.debian.org/debian bookworm/main amd64 Packages\n"
        "git:\n  Installed: 1:2.39.5-0+deb12u3\n  Candidate: 1:2.39.5-0+deb12u3\n  Version table:\n"
        " *** 1:2.39.5-0+deb12u3 500\n        500 http://deb.debian.org/debian bookworm/main amd64 Packages\n"
    )
    assert apt_archive.parse_policy(output) == {
        "python3.11": apt_archive.ArchiveVersions("3.11.2-6+deb12u9", ("3.11.2-6+deb12u9", "3.11.2-6+deb12u8")),
        "git": apt_archive.ArchiveVersions("1:2.39.5-0+deb12u3", ("1:2.39.5-0+deb12u3",)),
    }
