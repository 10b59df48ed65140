"""apt run against a Debian archive (this machine's sources, or a local one in the tests): what the archive
has of a package, what installing pins on bookworm-slim adds, and the exact .deb files.

Every apt call runs with LC_ALL=C, so its output parses the same on every machine.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tools.base_pins import EstimateError

# debuerreotype/docker-debian-artifacts, bookworm/slim/rootfs.manifest: the packages bookworm-slim
# ships (the same names on every architecture).
SLIM_PACKAGES = (
    "adduser", "apt", "base-files", "base-passwd", "bash", "bsdutils", "coreutils", "dash",
    "debconf", "debian-archive-keyring", "debianutils", "diffutils", "dpkg", "e2fsprogs",
    "findutils", "gcc-12-base", "gpgv", "grep", "gzip", "hostname", "init-system-helpers",
    "libacl1", "libapt-pkg6.0", "libattr1", "libaudit-common", "libaudit1", "libblkid1",
    "libbz2-1.0", "libc-bin", "libc6", "libcap-ng0", "libcap2", "libcom-err2", "libcrypt1",
    "libdb5.3", "libdebconfclient0", "libext2fs2", "libffi8", "libgcc-s1", "libgcrypt20",
    "libgmp10", "libgnutls30", "libgpg-error0", "libhogweed6", "libidn2-0", "liblz4-1", "liblzma5",
    "libmd0", "libmount1", "libnettle8", "libp11-kit0", "libpam-modules", "libpam-modules-bin",
    "libpam-runtime", "libpam0g", "libpcre2-8-0", "libseccomp2", "libselinux1",
    "libsemanage-common", "libsemanage2", "libsepol2", "libsmartcols1", "libss2", "libstdc++6",
    "libsystemd0", "libtasn1-6", "libtinfo6", "libudev1", "libunistring2", "libuuid1", "libxxhash0",
    "libzstd1", "login", "logsave", "mawk", "mount", "ncurses-base", "ncurses-bin", "passwd",
    "perl-base", "sed", "sysvinit-utils", "tar", "tzdata", "usr-is-merged", "util-linux",
    "util-linux-extra", "zlib1g",
)

INST = re.compile(r"^Inst (\S+) \((\S+) .*\[(\S+)\]\)")
POLICY_VERSION = re.compile(r"^ (?:\*\*\*|   ) (\S+) -?\d+$")


class StaleAptLists(EstimateError):
    """What apt's lists say, which `apt-get update` may change: the estimate updates them once and retries."""


@dataclass(frozen=True)
class Apt:
    """How apt runs: this machine's sources and lists by default; tests point it at a local archive."""

    options: tuple[str, ...] = ()
    lists: Path = Path("/var/lib/apt/lists")
    base_packages: tuple[str, ...] = SLIM_PACKAGES

    def run(self, tool: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return _run([tool, *self.options, *args], cwd=cwd)

    def has_lists(self) -> bool:
        return any(self.lists.glob("*_Packages*"))

    def update(self) -> None:
        updated = self.run("apt-get", "update")
        if updated.returncode != 0:
            raise EstimateError(f"`apt-get update` failed: {updated.stderr.strip()}")


@dataclass(frozen=True)
class ArchiveVersions:
    """What `apt-cache policy` says of one package: the version apt would install and all it knows."""

    candidate: str | None
    versions: tuple[str, ...]


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    architecture: str
    deb_bytes: int
    installed_bytes: int
    pinned_in_dockerfile: bool

    @property
    def deb_filename(self) -> str:
        """The name `apt-get download` gives the file (an epoch's colon is escaped)."""
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.architecture}.deb"


def parse_policy(output: str) -> dict[str, ArchiveVersions]:
    """Package name -> its candidate and known versions, from `apt-cache policy NAME...` (unknown names are absent)."""
    found: dict[str, ArchiveVersions] = {}
    name = None
    for line in output.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            name = line[:-1]
            found[name] = ArchiveVersions(None, ())
        elif name is not None and line.startswith("  Candidate: "):
            candidate = line.removeprefix("  Candidate: ").strip()
            found[name] = ArchiveVersions(None if candidate == "(none)" else candidate, found[name].versions)
        elif name is not None and (match := POLICY_VERSION.match(line)):
            found[name] = ArchiveVersions(found[name].candidate, (*found[name].versions, match.group(1)))
    return found


def version_older(version: str, than: str) -> bool:
    """Debian's version order (deb-version(7)), as dpkg compares."""
    return _run(["dpkg", "--compare-versions", version, "lt", than]).returncode == 0


def archive_versions(apt: Apt, names: list[str]) -> dict[str, ArchiveVersions]:
    """What the archive has of these packages, this machine's installed packages left out."""
    with tempfile.TemporaryDirectory() as tmp:
        empty_status = Path(tmp) / "status"
        empty_status.touch()
        policy = apt.run("apt-cache", "-o", f"Dir::State::status={empty_status}", "policy", *names)
    if policy.returncode != 0:
        raise EstimateError(f"`apt-cache policy` failed: {policy.stderr.strip()}")
    return parse_policy(policy.stdout)


def parse_simulation(output: str) -> dict[str, tuple[str, str]]:
    """Package name -> (version, architecture) of every `Inst` line of `apt-get install --simulate`."""
    return {m.group(1): (m.group(2), m.group(3)) for m in map(INST.match, output.splitlines()) if m}


def parse_stanzas(output: str) -> list[dict[str, str]]:
    """The top-level fields of each `apt-cache show` stanza."""
    return [
        dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line[0].isspace())
        for stanza in output.strip().split("\n\n")
        if stanza.strip()
    ]


def _run(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, check=False, cwd=cwd, env={**os.environ, "LC_ALL": "C"}
    )


def slim_status_file(apt: Apt, directory: Path) -> Path:
    """A dpkg status file saying exactly bookworm-slim's packages (archive versions) are installed."""
    shown = apt.run("apt-cache", "show", "--no-all-versions", *apt.base_packages)
    stanzas = {}
    for stanza in shown.stdout.strip().split("\n\n"):
        name = stanza.split("\n", 1)[0].removeprefix("Package: ")
        stanzas.setdefault(name, stanza)
    missing = sorted(set(apt.base_packages) - set(stanzas))
    if missing:
        raise EstimateError(f"apt knows no bookworm-slim package {missing} (are apt's sources Debian bookworm?)")
    status = directory / "status"
    status.write_text(
        "\n\n".join(
            stanza.replace("\n", "\nStatus: install ok installed\n", 1) for stanza in stanzas.values()
        )
        + "\n"
    )
    return status


def resolve(apt: Apt, versions: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Every package (version, architecture) apt adds to bookworm-slim to install these versions."""
    with tempfile.TemporaryDirectory() as tmp:
        status = slim_status_file(apt, Path(tmp))
        simulated = apt.run(
            "apt-get", "install", "--simulate", "--no-install-recommends",
            "-o", f"Dir::State::status={status}",
            "-o", f"Dir::State::extended_states={Path(tmp) / 'extended_states'}",
            *(f"{name}={version}" for name, version in versions.items()),
        )
    if simulated.returncode != 0:
        raise StaleAptLists(f"apt cannot install {versions} on bookworm-slim: {simulated.stderr.strip()}")
    return parse_simulation(simulated.stdout)


def package_sizes(apt: Apt, installs: dict[str, tuple[str, str]], pins: dict[str, str]) -> list[Package]:
    """The .deb and installed sizes apt records for exactly these versions, largest first."""
    shown = apt.run("apt-cache", "show", *(f"{n}={v}" for n, (v, _) in installs.items()))
    if shown.returncode != 0:
        raise EstimateError(f"apt-cache show failed: {shown.stderr.strip()}")
    fields = {(f["Package"], f["Version"]): f for f in reversed(parse_stanzas(shown.stdout))}
    packages = [
        Package(
            name=name,
            version=version,
            architecture=architecture,
            deb_bytes=int(fields[(name, version)]["Size"]),
            installed_bytes=int(fields[(name, version)]["Installed-Size"]) * 1024,
            pinned_in_dockerfile=name in pins,
        )
        for name, (version, architecture) in installs.items()
    ]
    return sorted(packages, key=lambda p: -p.deb_bytes)


def download(apt: Apt, packages: list[Package], cache: Path) -> list[Path]:
    """The .deb files, fetched once into the cache and checked against the archive's sizes.

    Lists older than the archive name files it has since deleted: the download then fails (HTTP 404)."""
    cache.mkdir(parents=True, exist_ok=True)
    wanted = [p for p in packages if not (cache / p.deb_filename).is_file()]
    if wanted:
        fetched = apt.run(
            "apt-get", "download", "-o", "APT::Sandbox::User=root",
            *(f"{p.name}={p.version}" for p in wanted),
            cwd=cache,
        )
        if fetched.returncode != 0:
            raise StaleAptLists(f"apt-get download failed: {fetched.stderr.strip()}")
    paths = []
    for package in packages:
        path = cache / package.deb_filename
        if not path.is_file() or path.stat().st_size != package.deb_bytes:
            raise EstimateError(f"{path} is missing or not {package.deb_bytes} bytes as the archive says")
        paths.append(path)
    return paths
