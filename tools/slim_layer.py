"""The apt layer's compressed size: each .deb's files as bookworm-slim's dpkg unpacks them, tarred and
compressed as image builders compress layers.

Measuring gzips every file of every package: about 25 s of CPU for the base image's 93 packages. Each
size is a function of the .deb's bytes and the rules below, so images/base/layer_sizes.json records it
by the .deb's sha256 under the rules' key: a package whose file is byte for byte one recorded is not
measured again, a new one (an archive update, a new pin) is, and a change of the rules makes every
recorded size unused. `python -m tools.estimate_base_image` writes the record.
"""

from __future__ import annotations

import concurrent.futures
import fnmatch
import gzip
import hashlib
import json
import os
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from tools.base_pins import REPO_ROOT, EstimateError

LAYER_SIZES = REPO_ROOT / "images" / "base" / "layer_sizes.json"

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

# Image builders (BuildKit, docker push) compress layers with gzip at its default level.
LAYER_GZIP_LEVEL = 6


def excluded_by_slim(path: str) -> bool:
    """Whether bookworm-slim's dpkg configuration leaves this package path out of the image."""
    if any(fnmatch.fnmatchcase(path, pattern) for pattern in SLIM_PATH_INCLUDES):
        return False
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in SLIM_PATH_EXCLUDES)


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


def measurement_key() -> str:
    """Changes whenever the way a package is measured changes, so recorded sizes are not reused."""
    rules = repr((SLIM_PATH_EXCLUDES, SLIM_PATH_INCLUDES, LAYER_GZIP_LEVEL)).encode()
    return hashlib.sha256(rules).hexdigest()[:12]


@dataclass
class Measured:
    deb: str
    """The file's name, for a reader: the sha256 is what identifies it."""
    layer_gzip_bytes: int


@dataclass
class LayerSizes:
    """Measured sizes by the .deb's sha256, all under the rules `rules` names."""

    rules: str = field(default_factory=measurement_key)
    sizes: dict[str, Measured] = field(default_factory=dict)
    measured: int = 0
    """How many packages this process measured (the rest were recorded)."""

    @classmethod
    def read(cls, path: Path = LAYER_SIZES) -> LayerSizes:
        """The record at `path`; an empty one when there is none or it was measured under other rules."""
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text())
        if data.get("rules") != measurement_key():
            return cls()
        return cls(data["rules"], {digest: Measured(**entry) for digest, entry in data["sizes"].items()})

    def write(self, path: Path, debs: list[Path]) -> None:
        """Record the sizes of exactly these packages (the image's, as just measured)."""
        kept = {digest: self.sizes[digest] for digest in sorted(map(_sha256, debs))}
        path.write_text(json.dumps({
            "rules": self.rules,
            "about": "each .deb's layer size by its sha256: tools/slim_layer.py; written by "
                     "`python -m tools.estimate_base_image`",
            "sizes": {digest: vars(entry) for digest, entry in kept.items()},
        }, indent=2) + "\n")


def _sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def layer_gzip_bytes(debs: list[Path], known: LayerSizes) -> int:
    """The apt layer's gzip size: the sum over packages (one stream each, on every core).

    Per-package streams differ from one stream by a few bytes of gzip header and tar trailer each. A package
    `known` holds is not measured; what is measured is added to `known`.
    """
    digests = {deb: _sha256(deb) for deb in debs}
    todo = [deb for deb in debs if digests[deb] not in known.sizes]
    if todo:
        with concurrent.futures.ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            for deb, size in zip(todo, pool.map(deb_layer_gzip_bytes, todo), strict=True):
                known.sizes[digests[deb]] = Measured(deb.name, size)
        known.measured += len(todo)
    return sum(known.sizes[digests[deb]].layer_gzip_bytes for deb in debs)
