"""Move the base image's pins on purpose: the snapshot timestamp, the package versions, the base digest.

    .venv/bin/python -m tools.refresh_pins [--snapshot YYYYMMDDTHHMMSSZ] [--write]
        [--base-image REF@sha256:... --base-amd64-manifest sha256:... --base-compressed-bytes N]
    make refresh [REFRESH_ARGS="..."]      (writes)

The packages are the names images/base/Dockerfile pins (add one by adding its line, with any
version); their versions become what apt resolves for those names after `apt-get update`: the live
archive's newest in bookworm, bookworm-updates and bookworm-security. The snapshot timestamp
defaults to now, so the snapshot archive serves exactly those versions at it. snapshot.debian.org
imports the archive a few times a day: right after Debian publishes, the newest version may not be
in the snapshot yet, and `docker build` says so; refresh again some hours later.

The base image cannot be looked up here (no registry access): pass the digest and the amd64
manifest's compressed size as docker-library/repo-info publishes them (repos/debian/remote/
bookworm-slim.md); all three base options go together. The CI test job runs in that same image, so
its workflow moves with it.

Prints a unified diff of every file it changes (the Dockerfile, images/base/pins.json, the preview
workflow); --write writes them.
"""

from __future__ import annotations

import argparse
import datetime
import difflib
import re
import sys
from pathlib import Path

from tools.apt_archive import Apt, archive_versions
from tools.base_pins import (
    DOCKERFILE,
    PINS_RECORD,
    REPO_ROOT,
    SNAPSHOT_ARG,
    SNAPSHOT_TIMESTAMP,
    BaseImage,
    EstimateError,
    PinRecord,
    dockerfile_base,
    dockerfile_pins,
)

WORKFLOW = REPO_ROOT / ".github" / "workflows" / "preview.yml"
PIN_LINE = re.compile(r"^(\s+)([a-z0-9][a-z0-9+.-]+)=(\S+)( \\)?$")
IMAGE_REFERENCE = re.compile(r"^[a-z0-9./-]+(:[\w.-]+)?@sha256:[0-9a-f]{64}$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def now_snapshot() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")


def current_versions(apt: Apt, names: list[str]) -> dict[str, str]:
    """The version apt installs today for each name, after updating its lists."""
    apt.update()
    archive = archive_versions(apt, names)
    missing = [name for name in names if archive.get(name) is None or archive[name].candidate is None]
    if missing:
        raise EstimateError(f"Debian's archive has no package {', '.join(missing)}: remove or rename its Dockerfile line")
    return {name: str(archive[name].candidate) for name in names}


def refreshed_dockerfile(text: str, snapshot: str, base: str, versions: dict[str, str]) -> str:
    """The Dockerfile with this snapshot default, this FROM and these pinned versions; nothing else moves."""
    text, count = SNAPSHOT_ARG.subn(f"ARG DEBIAN_SNAPSHOT={snapshot}", text)
    if count != 1:
        raise EstimateError(f"expected one `ARG DEBIAN_SNAPSHOT=` line in the Dockerfile, found {count}")
    lines = []
    replaced: list[str] = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\n")
        if body.upper().startswith("FROM "):
            line = f"FROM {base}\n"
        elif (match := PIN_LINE.match(body)) and match.group(2) in versions:
            indent, name, _, continuation = match.groups()
            line = f"{indent}{name}={versions[name]}{continuation or ''}\n"
            replaced.append(name)
        lines.append(line)
    if sorted(replaced) != sorted(versions):
        raise EstimateError(f"expected one pin line per package {sorted(versions)}, replaced {sorted(replaced)}")
    return "".join(lines)


def refresh(
    dockerfile: str, record: PinRecord, versions: dict[str, str], snapshot: str, base: BaseImage | None
) -> tuple[str, PinRecord]:
    """The new Dockerfile text and record: what refresh_pins writes, computed without apt."""
    if not SNAPSHOT_TIMESTAMP.match(snapshot):
        raise EstimateError(f"--snapshot {snapshot!r}: want a snapshot.debian.org timestamp, YYYYMMDDTHHMMSSZ")
    new_base = base or record.base_image
    new_record = PinRecord(snapshot, new_base, versions)
    return refreshed_dockerfile(dockerfile, snapshot, new_base.reference, versions), new_record


def unified_diff(path: Path, old: str, new: str) -> str:
    name = str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)
    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"a/{name}", f"b/{name}"))


def base_image_argument(args: argparse.Namespace) -> BaseImage | None:
    given = [args.base_image, args.base_amd64_manifest, args.base_compressed_bytes]
    if not any(given):
        return None
    if not all(given):
        raise EstimateError("--base-image, --base-amd64-manifest and --base-compressed-bytes go together")
    if not IMAGE_REFERENCE.match(args.base_image):
        raise EstimateError(f"--base-image {args.base_image!r}: want name[:tag]@sha256:<64 hex>")
    if not DIGEST.match(args.base_amd64_manifest):
        raise EstimateError(f"--base-amd64-manifest {args.base_amd64_manifest!r}: want sha256:<64 hex>")
    if args.base_compressed_bytes <= 0:
        raise EstimateError(f"--base-compressed-bytes {args.base_compressed_bytes}: want a positive byte count")
    return BaseImage(
        args.base_image, args.base_amd64_manifest, args.base_compressed_bytes,
        "docker-library/repo-info repos/debian/remote/bookworm-slim.md (linux; amd64)",
    )


def main(argv: list[str] | None = None, apt: Apt | None = None,
         dockerfile: Path = DOCKERFILE, record: Path = PINS_RECORD, workflow: Path = WORKFLOW) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.refresh_pins", description=__doc__.splitlines()[0])
    parser.add_argument("--snapshot", default=None, help="snapshot.debian.org timestamp (default: now, UTC)")
    parser.add_argument("--base-image")
    parser.add_argument("--base-amd64-manifest")
    parser.add_argument("--base-compressed-bytes", type=int)
    parser.add_argument("--write", action="store_true", help="write the files (default: print the diff only)")
    args = parser.parse_args(argv)
    try:
        old_text, old_workflow = dockerfile.read_text(), workflow.read_text()
        old_record = PinRecord.read(record)
        base = base_image_argument(args)
        names = list(dockerfile_pins(old_text))
        versions = current_versions(apt or Apt(), names)
        new_text, new_record = refresh(old_text, old_record, versions, args.snapshot or now_snapshot(), base)
    except EstimateError as error:
        print(f"refresh_pins: {error}", file=sys.stderr)
        return 2
    new_workflow = old_workflow.replace(dockerfile_base(old_text), new_record.base_image.reference)
    changes = [
        (dockerfile, old_text, new_text),
        (record, old_record.to_json(), new_record.to_json()),
        (workflow, old_workflow, new_workflow),
    ]
    for path, old, new in changes:
        sys.stdout.write(unified_diff(path, old, new))
        if args.write and old != new:
            path.write_text(new)
    moved = [name for name, version in versions.items() if old_record.packages.get(name) != version]
    print(f"snapshot {old_record.snapshot} -> {new_record.snapshot}; {len(moved)} package version(s) moved"
          + ("" if args.write else " (dry run: --write to apply)"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

