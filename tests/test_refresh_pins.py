"""tools/refresh_pins.py moves the base image's snapshot timestamp, package versions and base digest
together, prints the diff and writes only when asked. apt answers from a local archive
(tests/fakes/debian_archive.py), never the network.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.fakes.debian_archive import FakeDeb, LocalArchive
from tools import base_pins, refresh_pins
from tools.base_pins import PinRecord

ROOT = Path(__file__).resolve().parent.parent
NEW_BASE = "debian:bookworm-slim@sha256:" + "c" * 64
NEW_MANIFEST = "sha256:" + "d" * 64


@pytest.fixture
def repo(tmp_path) -> dict[str, Path]:
    """Copies of the real Dockerfile, record and preview workflow, which refresh_pins may rewrite."""
    paths = {
        "dockerfile": tmp_path / "Dockerfile",
        "record": tmp_path / "pins.json",
        "workflow": tmp_path / "preview.yml",
    }
    shutil.copy(base_pins.DOCKERFILE, paths["dockerfile"])
    shutil.copy(base_pins.PINS_RECORD, paths["record"])
    shutil.copy(refresh_pins.WORKFLOW, paths["workflow"])
    return paths


@pytest.fixture
def archive(tmp_path) -> LocalArchive:
    """An archive serving every pinned package at its pinned version, python3.11 at a newer one."""
    pins = PinRecord.read(base_pins.PINS_RECORD).packages
    local = LocalArchive(tmp_path / "debian")
    newer = {"python3.11": "3.11.2-6+deb12u10"}
    local.publish([FakeDeb(name, newer.get(name, version)) for name, version in pins.items()])
    return local


def _refresh(repo: dict[str, Path], archive: LocalArchive, *args: str) -> int:
    return refresh_pins.main(list(args), archive.apt, repo["dockerfile"], repo["record"], repo["workflow"])


def test_refresh_prints_the_diff_of_snapshot_and_moved_versions_and_writes_nothing(repo, archive, capsys):
    before = {name: path.read_text() for name, path in repo.items()}
    assert _refresh(repo, archive, "--snapshot", "20270105T120000Z") == 0
    out = capsys.readouterr().out
    diff_lines = {line for line in out.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")}
    old = PinRecord.read(repo["record"])
    assert diff_lines == {
        f"-ARG DEBIAN_SNAPSHOT={old.snapshot}",
        "+ARG DEBIAN_SNAPSHOT=20270105T120000Z",
        f"-        python3.11={old.packages['python3.11']} \\",
        "+        python3.11=3.11.2-6+deb12u10 \\",
        f'-  "snapshot": "{old.snapshot}",',
        '+  "snapshot": "20270105T120000Z",',
        f'-    "python3.11": "{old.packages["python3.11"]}",',
        '+    "python3.11": "3.11.2-6+deb12u10",',
    }
    assert {name: path.read_text() for name, path in repo.items()} == before
    assert archive.apt.updates == [1]


def test_refresh_writes_a_dockerfile_that_agrees_with_its_record(repo, archive):
    assert _refresh(repo, archive, "--snapshot", "20270105T120000Z", "--write") == 0
    text = repo["dockerfile"].read_text()
    record = PinRecord.read(repo["record"])
    base_pins.check_record(text, record)
    assert base_pins.dockerfile_snapshot(text) == "20270105T120000Z"
    assert base_pins.dockerfile_pins(text)["python3.11"] == "3.11.2-6+deb12u10"


def test_refresh_moves_the_base_digest_in_the_dockerfile_record_and_ci_container(repo, archive):
    old_base = base_pins.dockerfile_base(repo["dockerfile"].read_text())
    assert old_base in repo["workflow"].read_text()
    code = _refresh(repo, archive, "--snapshot", "20270105T120000Z", "--write", "--base-image", NEW_BASE,
                    "--base-amd64-manifest", NEW_MANIFEST, "--base-compressed-bytes", "29000000")
    assert code == 0
    assert base_pins.dockerfile_base(repo["dockerfile"].read_text()) == NEW_BASE
    base = PinRecord.read(repo["record"]).base_image
    assert (base.reference, base.amd64_manifest, base.compressed_bytes) == (NEW_BASE, NEW_MANIFEST, 29_000_000)
    assert old_base not in repo["workflow"].read_text()
    assert NEW_BASE in repo["workflow"].read_text()


def test_refresh_of_the_recorded_state_rewrites_the_dockerfile_unchanged():
    text = base_pins.DOCKERFILE.read_text()
    record = PinRecord.read(base_pins.PINS_RECORD)
    new_text, new_record = refresh_pins.refresh(text, record, record.packages, record.snapshot, None)
    assert (new_text, new_record) == (text, record)


def test_refresh_refuses_a_base_digest_without_its_manifest_and_size(repo, archive, capsys):
    before = repo["dockerfile"].read_text()
    assert _refresh(repo, archive, "--write", "--base-image", NEW_BASE) == 2
    assert capsys.readouterr().err == (
        "refresh_pins: --base-image, --base-amd64-manifest and --base-compressed-bytes go together\n")
    assert repo["dockerfile"].read_text() == before


def test_refresh_refuses_a_snapshot_that_is_not_a_timestamp(repo, archive, capsys):
    assert _refresh(repo, archive, "--write", "--snapshot", "2027-01-05") == 2
    assert "--snapshot '2027-01-05': want a snapshot.debian.org timestamp, YYYYMMDDTHHMMSSZ" in capsys.readouterr().err


def test_refresh_names_a_pinned_package_the_archive_does_not_have(repo, tmp_path, capsys):
    local = LocalArchive(tmp_path / "partial")
    local.publish([FakeDeb("git", "1:2.39.5-0+deb12u3")])
    assert _refresh(repo, local, "--write") == 2
    assert "Debian's archive has no package ca-certificates, libgl1" in capsys.readouterr().err
