"""The apt layer's compressed size: each .deb's files as bookworm-slim's dpkg unpacks them, tarred and
compressed as image builders compress layers."""

from __future__ import annotations

import concurrent.futures
import fnmatch
import gzip
import hashlib
import os
import subprocess
import tarfile
from pathlib import Path

from tools.base_pins import EstimateError

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
