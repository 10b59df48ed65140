"""A local Debian archive that apt really reads: .deb files built by dpkg-deb, a Packages index
written here, served as a flat repository through apt's copy: method (file: may symlink an
uncompressed index into the lists, which then could never be stale). apt runs against it through
private directories (sources, lists, cache), so this machine's own apt state is neither read nor
changed.

`publish` replaces what the archive serves, deleting the .deb files it no longer lists, as Debian's
archive does when an update supersedes a version: apt lists fetched before a `publish` are then stale.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tools.apt_archive import Apt


@dataclass(frozen=True)
class FakeDeb:
    name: str
    version: str
    depends: tuple[str, ...] = ()
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def filename(self) -> str:
        return f"{self.name}_{self.version.replace(':', '%3a')}_all.deb"

    def control(self, *extra: str) -> str:
        """The package's control fields (DEBIAN/control), with `extra` fields (the index's) after them."""
        fields = [f"Package: {self.name}", f"Version: {self.version}", "Architecture: all",
                  "Maintainer: sd-gke tests <tests@example.com>", f"Description: {self.name} for tests"]
        if self.depends:
            fields.append(f"Depends: {', '.join(self.depends)}")
        return "\n".join([*fields, *extra]) + "\n"


@dataclass(frozen=True)
class CountingApt(Apt):
    """The estimator's apt, counting `apt-get update` runs."""

    updates: list[int] = field(default_factory=list)

    def update(self) -> None:
        self.updates.append(1)
        super().update()


class LocalArchive:
    def __init__(self, root: Path, base_packages: tuple[str, ...] = ("fake-base",)) -> None:
        self.root = root
        self.served = root / "archive"
        self.builds = root / "builds"
        self.state = root / "apt"
        for directory in (self.served / "pool", self.builds, self.state / "lists" / "partial",
                          self.state / "sources.list.d", self.state / "preferences.d", self.state / "cache"):
            directory.mkdir(parents=True, exist_ok=True)
        (self.state / "sources.list").write_text(f"deb [trusted=yes] copy:{self.served} ./\n")
        self.base_packages = base_packages
        self.apt = CountingApt(
            options=(
                "-o", f"Dir::Etc::SourceList={self.state / 'sources.list'}",
                "-o", f"Dir::Etc::SourceParts={self.state / 'sources.list.d'}",
                "-o", f"Dir::Etc::PreferencesParts={self.state / 'preferences.d'}",
                "-o", f"Dir::Etc::Preferences={self.state / 'preferences'}",
                "-o", f"Dir::State::Lists={self.state / 'lists'}",
                "-o", f"Dir::Cache={self.state / 'cache'}",
                "-o", "Acquire::Languages=none",
                "-o", "APT::Sandbox::User=root",
            ),
            lists=self.state / "lists",
            base_packages=base_packages,
        )

    def build(self, deb: FakeDeb) -> Path:
        tree = self.builds / f"{deb.name}-{deb.version}"
        (tree / "DEBIAN").mkdir(parents=True, exist_ok=True)
        for path, data in deb.files.items():
            (tree / path).parent.mkdir(parents=True, exist_ok=True)
            (tree / path).write_bytes(data)
        (tree / "DEBIAN" / "control").write_text(deb.control())
        built = self.builds / deb.filename
        subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(built)],
                       check=True, capture_output=True)
        return built

    def publish(self, debs: list[FakeDeb]) -> None:
        """Serve exactly these packages: their .deb files and a Packages index naming them."""
        pool = self.served / "pool"
        for stale in pool.iterdir():
            stale.unlink()
        stanzas = []
        for deb in debs:
            data = self.build(deb).read_bytes()
            (pool / deb.filename).write_bytes(data)
            installed_kib = max(1, sum(len(d) for d in deb.files.values()) // 1024)
            stanzas.append(deb.control(f"Installed-Size: {installed_kib}", f"Filename: pool/{deb.filename}",
                                       f"Size: {len(data)}", f"SHA256: {hashlib.sha256(data).hexdigest()}"))
        (self.served / "Packages").write_text("\n".join(stanzas))
