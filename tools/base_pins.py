"""The base image's pins: what images/base/Dockerfile says, what images/base/pins.json records, and that they agree.

tools/refresh_pins.py moves them together; tools/estimate_base_image.py measures what they pin.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO_ROOT / "images" / "base" / "Dockerfile"

# What refresh_pins moves together: the snapshot timestamp, the base image (digest, and the
# compressed size docker-library/repo-info publishes for it) and the package versions.
PINS_RECORD = REPO_ROOT / "images" / "base" / "pins.json"
REFRESH_HINT = "run `make refresh` (tools/refresh_pins.py) to move the snapshot, the pins and the record together"

PIN = re.compile(r"^([a-z0-9][a-z0-9+.-]+)=(\S+)$")
SNAPSHOT_ARG = re.compile(r"^ARG DEBIAN_SNAPSHOT=(\S*)$", re.M)
SNAPSHOT_TIMESTAMP = re.compile(r"^\d{8}T\d{6}Z$")


class EstimateError(Exception):
    """A problem the user fixes (Dockerfile content, apt state); printed without a traceback."""


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
