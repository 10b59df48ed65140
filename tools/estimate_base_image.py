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

Usage: .venv/bin/python -m tools.estimate_base_image [--dockerfile PATH] [--record PATH] [--output PATH]
Writes build/bench/base_image.json and prints a summary. Needs apt and dpkg-deb with Debian bookworm
sources (the development machines, and CI's bookworm container) and reaches the Debian archive;
downloaded .debs are kept in build/cache/debs.
"""


from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from tools.apt_archive import (
    Apt,
    ArchiveVersions,
    Package,
    StaleAptLists,
    archive_versions,
    download,
    package_sizes,
    resolve,
    version_older,
)
from tools.base_pins import DOCKERFILE, PINS_RECORD, REFRESH_HINT, REPO_ROOT, EstimateError, PinRecord, check_record
from tools.slim_layer import LAYER_GZIP_LEVEL, LAYER_SIZES, LayerSizes, layer_gzip_bytes

OUTPUT = REPO_ROOT / "build" / "bench" / "base_image.json"
DEB_CACHE = REPO_ROOT / "build" / "cache" / "debs"

# Files maintainer scripts create, not in any .deb: gzip of /usr/lib/python3.11/**/__pycache__ on a
# bookworm host with the same python3.11 was 4.8 MB; dpkg's database, ld.so.cache and the CA bundle
# add under 1 MB.
GENERATED_FILES_ALLOWANCE_BYTES = 6_000_000

TARGET_COMPRESSED_BYTES = 300_000_000  # issue 3: under 0.3 GB compressed
PUBLISHED_SLIM_BYTES = 2_000_000_000  # REFERENCE.md section 1: the published slim image, 2 GB


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
    debs: list[str]
    """The .deb files measured (in the cache), whose sizes `main` records."""
    generated_files_allowance_bytes: int
    compressed_estimate_bytes: int
    target_bytes: int
    published_slim_bytes: int
    meets_target: bool
    method: list[str]


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


def estimate(
    dockerfile: Path = DOCKERFILE, record: Path = PINS_RECORD, cache: Path = DEB_CACHE,
    apt: Apt = Apt(),  # noqa: B008 - a frozen dataclass, never mutated
    sizes: LayerSizes | None = None,
) -> Estimate:
    """`sizes`: the packages' recorded layer sizes (tools/slim_layer.py), which gain what is measured here;
    by default images/base/layer_sizes.json's, read and left unwritten."""
    sizes = LayerSizes.read() if sizes is None else sizes
    text = dockerfile.read_text()
    pins = PinRecord.read(record)
    check_record(text, pins)
    updated = not apt.has_lists()
    if updated:
        apt.update()
    while True:
        try:
            return _measure(pins, cache, apt, sizes)
        except StaleAptLists as error:
            if updated:
                raise EstimateError(str(error)) from None
        apt.update()
        updated = True


def _measure(record: PinRecord, cache: Path, apt: Apt, sizes: LayerSizes) -> Estimate:
    pinned = choose_versions(record.packages, archive_versions(apt, list(record.packages)))
    packages = package_sizes(apt, resolve(apt, {p.name: p.estimated for p in pinned}), record.packages)
    debs = download(apt, packages, cache)
    layer = layer_gzip_bytes(debs, sizes)
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
        debs=[str(deb) for deb in debs],
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
    parser.add_argument("--sizes", type=Path, default=LAYER_SIZES,
                        help="the packages' recorded layer sizes, read and rewritten (default %(default)s)")
    args = parser.parse_args(argv)
    sizes = LayerSizes.read(args.sizes)
    try:
        result = estimate(args.dockerfile, args.record, cache, apt or Apt(), sizes)
    except EstimateError as error:
        print(f"estimate_base_image: {error}", file=sys.stderr)
        return 2
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(asdict(result), indent=2) + "\n")
    sizes.write(args.sizes, [Path(deb) for deb in result.debs])
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
    print(f"{sizes.measured} of {len(result.debs)} packages measured, the rest recorded in {args.sizes}")
    print(f"wrote {args.output} and {args.sizes}")
    return 0 if result.meets_target else 1


if __name__ == "__main__":
    sys.exit(main())
