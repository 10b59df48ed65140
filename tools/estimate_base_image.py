"""Estimate the compressed size of images/base/Dockerfile without a Docker engine.

No engine runs on the development machines or in CI, so the image is never built here. Its size is
the base image's published compressed size plus the layer its one RUN adds. apt resolves the pinned
packages against bookworm-slim's package set (a private dpkg status file, so this machine's own
packages do not hide dependencies); the .deb files of exactly those versions are downloaded and
their file trees, less what the slim image's dpkg excludes (docs, man pages, locales), are tarred
and gzip-compressed at the level image builders use: the sum is the layer's transfer size. Files
that maintainer scripts generate (byte-compiled stdlib, dpkg database, CA bundle) are a measured
allowance. The .deb sum (xz-compressed) and the installed size are reported alongside.

The image installs from Debian's snapshot archive at the Dockerfile's DEBIAN_SNAPSHOT; this estimate
reads the archive this machine's apt is configured with (the live one), which serves only the newest
version of each package. A pin Debian has superseded since is measured at the archive's current
version of the same package, and the report lists pinned and estimated version side by side: a
stable update moves a package by kilobytes, not the verdict, so the estimate does not depend on the
day it runs. Real drift fails, naming `make refresh` (tools/refresh_pins.py): a Dockerfile that
disagrees with images/base/pins.json (the record refresh_pins writes), a pinned package the archive
does not have, or a pin newer than anything the archive has. apt's lists may be as old as the
machine's image: when there are none, or a pin or a download is not found, `apt-get update` runs
once and the estimate starts again.

Usage: .venv/bin/python tools/estimate_base_image.py [--dockerfile PATH] [--record PATH] [--output PATH]
Writes build/bench/base_image.json and prints a summary. Needs apt and dpkg-deb with Debian bookworm
sources (the development machines, and CI's bookworm container) and reaches the Debian archive;
downloaded .debs are kept in build/cache/debs.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import fnmatch
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO_ROOT / "images" / "base" / "Dockerfile"
OUTPUT = REPO_ROOT / "build" / "bench" / "base_image.json"
DEB_CACHE = REPO_ROOT / "build" / "cache" / "debs"

# What refresh_pins moves together: the snapshot timestamp, the base image (digest, and the
# compressed size docker-library/repo-info publishes for it) and the package versions.
PINS_RECORD = REPO_ROOT / "images" / "base" / "pins.json"
REFRESH_HINT = "run `make refresh` (tools/refresh_pins.py) to move the snapshot, the pins and the record together"

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

# debuerreotype scripts/.slimify-excludes and .slimify-includes, written into the slim image's
# /etc/dpkg/dpkg.cfg.d/docker: paths dpkg does not unpack, and the exceptions it keeps.
SLIM_PATH_EXCLUDES = (
    "./usr/share/doc/*", "./usr/share/groff/*", "./usr/share/info/*", "./usr/share/linda/*",
    "./usr/share/lintian/overrides/*", "./usr/share/locale/*", "./usr/share/man/*",
)
SLIM_PATH_INCLUDES = (
    "./usr/share/doc/*/copyright", "./usr/share/doc/kde/HTML/C/*", "./usr/share/gnome/help/*/C/*",
    "./usr/share/locale/all_languages", "./usr/share/locale/currency/*",
    "./usr/share/locale/l10n/*", "./usr/share/locale/languages", "./usr/share/locale/locale.alias",
    "./usr/share/omf/*/*-C.emf",
)

# Files maintainer scripts create, not in any .deb: gzip of /usr/lib/python3.11/**/__pycache__ on a
# bookworm host with the same python3.11 was 4.8 MB; dpkg's database, ld.so.cache and the CA bundle
# add under 1 MB.
GENERATED_FILES_ALLOWANCE_BYTES = 6_000_000

# Image builders (BuildKit, docker push) compress layers with gzip at its default level.
LAYER_GZIP_LEVEL = 6

TARGET_COMPRESSED_BYTES = 300_000_000  # issue 3: under 0.3 GB compressed
PUBLISHED_SLIM_BYTES = 2_000_000_000  # REFERENCE.md section 1: the published slim image, 2 GB

PIN = re.compile(r"^([a-z0-9][a-z0-9+.-]+)=(\S+)$")
INST = re.compile(r"^Inst (\S+) \((\S+) .*\[(\S+)\]\)")
SNAPSHOT_ARG = re.compile(r"^ARG DEBIAN_SNAPSHOT=(\S*)$", re.M)
SNAPSHOT_TIMESTAMP = re.compile(r"^\d{8}T\d{6}Z$")
POLICY_VERSION = re.compile(r"^ (?:\*\*\*|   ) (\S+) -?\d+$")


class EstimateError(Exception):
    """A problem the user fixes (Dockerfile content, apt state); printed without a traceback."""


class StaleAptLists(EstimateError):
    """What apt's lists say, which `apt-get update` may change: the estimate updates them once and retries."""


@dataclass(frozen=True)
class BaseImage:
    reference: str
    amd64_manifest: str
    compressed_bytes: int
    source: str


@dataclass(frozen=True)
class PinRecord:
    """images/base/pins.json: what refresh_pins resolved, and what the Dockerfile must say."""

    snapshot: str
    base_image: BaseImage
    packages: dict[str, str]

    @classmethod
    def read(cls, path: Path) -> PinRecord:
        try:
            data = json.loads(path.read_text())
            return cls(data["snapshot"], BaseImage(**data["base_image"]), dict(data["packages"]))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise EstimateError(f"cannot read the pin record {path}: {error!r}; {REFRESH_HINT}") from None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


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
class PinnedPackage:
    """A Dockerfile pin and the version the estimate measured for it."""

    name: str
    pinned: str
    estimated: str

    @property
    def superseded(self) -> bool:
        return self.pinned != self.estimated


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


@dataclass(frozen=True)
class Estimate:
    snapshot: str
    pins: list[PinnedPackage]
    base_image: str
    base_compressed_bytes: int
    base_size_source: str
    packages: list[Package]
    deb_bytes: int
    installed_bytes: int
    layer_gzip_bytes: int
    generated_files_allowance_bytes: int
    compressed_estimate_bytes: int
    target_bytes: int
    published_slim_bytes: int
    meets_target: bool
    method: list[str]


def dockerfile_base(text: str) -> str:
    """The image of the Dockerfile's single FROM."""
    froms = [line.split()[1] for line in text.splitlines() if line.upper().startswith("FROM ")]
    if len(froms) != 1:
        raise EstimateError(f"expected exactly one FROM line, found {len(froms)}: {froms}")
    return froms[0]


def dockerfile_pins(text: str) -> dict[str, str]:
    """The `name=version` arguments of the Dockerfile's apt-get install, in order."""
    joined = re.sub(r"\\\n", " ", text)
    pins: dict[str, str] = {}
    for line in joined.splitlines():
        if line.startswith("RUN ") and "apt-get install" in line:
            for token in line.split():
                match = PIN.match(token)
                if match:
                    pins[match.group(1)] = match.group(2)
    if not pins:
        raise EstimateError("no pinned `name=version` package in any `RUN ... apt-get install` line")
    return pins


def dockerfile_snapshot(text: str) -> str:
    """The default of the Dockerfile's `ARG DEBIAN_SNAPSHOT`: the snapshot archive's timestamp."""
    found = SNAPSHOT_ARG.findall(text)
    if len(found) != 1 or not SNAPSHOT_TIMESTAMP.match(found[0]):
        raise EstimateError(
            f"expected one `ARG DEBIAN_SNAPSHOT=<YYYYMMDDTHHMMSSZ>` line, found {found}; {REFRESH_HINT}"
        )
    return found[0]


def check_record(text: str, record: PinRecord) -> None:
    """The Dockerfile says what refresh_pins recorded: a hand edit of one without the other is drift."""
    said = {
        "snapshot": dockerfile_snapshot(text),
        "base image": dockerfile_base(text),
        "packages": dockerfile_pins(text),
    }
    recorded = {"snapshot": record.snapshot, "base image": record.base_image.reference, "packages": record.packages}
    differences = [f"{key}: Dockerfile {said[key]!r}, record {recorded[key]!r}" for key in said if said[key] != recorded[key]]
    if differences:
        raise EstimateError(
            "images/base/Dockerfile disagrees with images/base/pins.json: " + "; ".join(differences) + f"; {REFRESH_HINT}"
        )


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


def choose_versions(pins: dict[str, str], archive: dict[str, ArchiveVersions]) -> list[PinnedPackage]:
    """The version to measure for each pin: the pinned one if the archive has it, else the archive's
    newer version of the same package. A package the archive lacks, or a pin newer than the archive's
    newest, is not something Debian's updates do: after one `apt-get update` it is drift."""
    chosen: list[PinnedPackage] = []
    unknown: list[str] = []
    ahead: list[str] = []
    for name, pinned in pins.items():
        known = archive.get(name, ArchiveVersions(None, ()))
        if pinned in known.versions:
            chosen.append(PinnedPackage(name, pinned, pinned))
        elif known.candidate is None:
            unknown.append(name)
        elif version_older(pinned, known.candidate):
            chosen.append(PinnedPackage(name, pinned, known.candidate))
        else:
            ahead.append(f"{name}={pinned} (archive: {known.candidate})")
    problems = [f"Debian's archive has no package {', '.join(unknown)}"] if unknown else []
    problems += [f"pinned versions newer than any in Debian's archive: {', '.join(ahead)}"] if ahead else []
    if problems:
        raise StaleAptLists("; ".join(problems) + f"; {REFRESH_HINT}")
    return chosen


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


def excluded_by_slim(path: str) -> bool:
    """Whether bookworm-slim's dpkg configuration leaves this package path out of the image."""
    if any(fnmatch.fnmatchcase(path, pattern) for pattern in SLIM_PATH_INCLUDES):
        return False
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in SLIM_PATH_EXCLUDES)


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


class _ByteCounter:
    """A write-only sink that keeps only the number of bytes written."""

    def __init__(self) -> None:
        self.count = 0

    def write(self, data: bytes) -> int:
        self.count += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def deb_layer_gzip_bytes(deb: Path) -> int:
    """gzip size of a tar of the files this package unpacks into the slim image."""
    sink = _ByteCounter()
    tree = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert tree.stdout is not None
    with (
        gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=LAYER_GZIP_LEVEL, mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w|", format=tarfile.PAX_FORMAT) as layer,
        tarfile.open(fileobj=tree.stdout, mode="r|") as files,
    ):
        for member in files:
            if not excluded_by_slim(member.name):
                layer.addfile(member, files.extractfile(member) if member.isfile() else None)
    if tree.wait() != 0:
        raise EstimateError(f"dpkg-deb cannot read {deb}")
    return sink.count


def _measurement_key() -> str:
    """Changes whenever the way a package is measured changes, so cached sizes are not reused."""
    rules = repr((SLIM_PATH_EXCLUDES, SLIM_PATH_INCLUDES, LAYER_GZIP_LEVEL)).encode()
    return hashlib.sha256(rules).hexdigest()[:12]


def layer_gzip_bytes(debs: list[Path]) -> int:
    """The apt layer's gzip size: the sum over packages (one stream each, on every core).

    Per-package streams differ from one stream by a few bytes of gzip header and tar trailer each;
    the result for each .deb is cached beside it.
    """
    key = _measurement_key()
    cached = {deb: deb.with_name(f"{deb.name}.layer-gzip-{key}") for deb in debs}
    todo = [deb for deb, path in cached.items() if not path.is_file()]
    with concurrent.futures.ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for deb, size in zip(todo, pool.map(deb_layer_gzip_bytes, todo), strict=True):
            cached[deb].write_text(str(size))
    return sum(int(path.read_text()) for path in cached.values())


def estimate(
    dockerfile: Path = DOCKERFILE, record: Path = PINS_RECORD, cache: Path = DEB_CACHE, apt: Apt = Apt()
) -> Estimate:
    text = dockerfile.read_text()
    pins = PinRecord.read(record)
    check_record(text, pins)
    updated = not apt.has_lists()
    if updated:
        apt.update()
    while True:
        try:
            return _measure(pins, cache, apt)
        except StaleAptLists as error:
            if updated:
                raise EstimateError(str(error)) from None
        apt.update()
        updated = True


def _measure(record: PinRecord, cache: Path, apt: Apt) -> Estimate:
    pinned = choose_versions(record.packages, archive_versions(apt, list(record.packages)))
    packages = package_sizes(apt, resolve(apt, {p.name: p.estimated for p in pinned}), record.packages)
    layer = layer_gzip_bytes(download(apt, packages, cache))
    base = record.base_image
    compressed = base.compressed_bytes + layer + GENERATED_FILES_ALLOWANCE_BYTES
    return Estimate(
        snapshot=record.snapshot,
        pins=pinned,
        base_image=base.reference,
        base_compressed_bytes=base.compressed_bytes,
        base_size_source=base.source,
        packages=packages,
        deb_bytes=sum(p.deb_bytes for p in packages),
        installed_bytes=sum(p.installed_bytes for p in packages),
        layer_gzip_bytes=layer,
        generated_files_allowance_bytes=GENERATED_FILES_ALLOWANCE_BYTES,
        compressed_estimate_bytes=compressed,
        target_bytes=TARGET_COMPRESSED_BYTES,
        published_slim_bytes=PUBLISHED_SLIM_BYTES,
        meets_target=compressed < TARGET_COMPRESSED_BYTES,
        method=[
            f"base layer: {base.compressed_bytes} bytes compressed ({base.source}, amd64 manifest {base.amd64_manifest})",
            (
                f"apt layer: the image installs from snapshot {record.snapshot}; apt resolves the same pins "
                "against bookworm-slim's package list in the archive this machine reads, measuring a pin "
                "the archive has superseded at its current version (see pins); the exact .debs are "
                f"unpacked, slim's dpkg path-excludes applied, each package's files tarred and compressed "
                f"with gzip level {LAYER_GZIP_LEVEL}; the layer is the sum"
            ),
            f"plus {GENERATED_FILES_ALLOWANCE_BYTES} bytes for files maintainer scripts generate",
            "the user, ENV and label layers add a few kilobytes; not counted",
        ],
    )


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def main(argv: list[str] | None = None, apt: Apt | None = None, cache: Path = DEB_CACHE) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dockerfile", type=Path, default=DOCKERFILE)
    parser.add_argument("--record", type=Path, default=PINS_RECORD)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    try:
        result = estimate(args.dockerfile, args.record, cache, apt or Apt())
    except EstimateError as error:
        print(f"estimate_base_image: {error}", file=sys.stderr)
        return 2
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(asdict(result), indent=2) + "\n")
    print(f"base {result.base_image}: {_mb(result.base_compressed_bytes)} compressed")
    print(f"{len(result.packages)} Debian packages: {_mb(result.deb_bytes)} as .deb, "
          f"{_mb(result.installed_bytes)} installed, {_mb(result.layer_gzip_bytes)} as a gzip layer")
    for package in result.packages[:8]:
        print(f"  {package.name} {package.version}: {_mb(package.deb_bytes)} .deb")
    superseded = [pin for pin in result.pins if pin.superseded]
    print(f"pins of snapshot {result.snapshot}: {len(result.pins) - len(superseded)} measured as pinned, "
          f"{len(superseded)} superseded in the archive since and measured at its current version")
    for pin in superseded:
        print(f"  {pin.name}: pinned {pin.pinned}, estimated {pin.estimated}")
    print(f"estimate {_mb(result.compressed_estimate_bytes)} compressed; target "
          f"{_mb(result.target_bytes)}, published slim image {_mb(result.published_slim_bytes)}: "
          f"{'meets' if result.meets_target else 'MISSES'} the target")
    print(f"wrote {args.output}")
    return 0 if result.meets_target else 1


if __name__ == "__main__":
    sys.exit(main())
