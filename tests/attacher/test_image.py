"""The attacher image: its pins are requirements.lock's (what the tests run with) and the whole closure; a clean Dockerfile."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
from pathlib import Path

from packaging.requirements import Requirement

from tests.attacher.conftest import ATTACHER_ROOT
from tools import lock

VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"


def pins() -> dict[str, str]:
    return {name: pin.version for name, pin in lock.read_pins(ATTACHER_ROOT / "requirements.txt").items()}


def test_every_pin_is_the_locked_version():
    """Compared with the lock, never with what a registry serves today (tests/test_lock.py: .venv is the lock)."""
    assert lock.drift(lock.ATTACHER) == ""


def test_the_pins_are_the_whole_dependency_closure():
    """Read from the metadata of .venv, which holds requirements.lock's versions."""
    pinned = pins()
    env = {"python_version": "3.11", "python_full_version": "3.11.7", "platform_python_implementation": "CPython",
           "sys_platform": "linux", "platform_system": "Linux", "extra": ""}
    missing = set()
    for name in pinned:
        extras = {"grpc"} if name == "google-api-core" else set()
        for raw in importlib.metadata.requires(name) or []:
            requirement = Requirement(raw)
            if requirement.marker and not any(requirement.marker.evaluate({**env, "extra": e}) for e in {"", *extras}):
                continue
            if requirement.name.lower().replace("_", "-") not in pinned:
                missing.add(f"{name} -> {raw}")
    assert not missing


def test_the_base_image_is_pinned_by_digest_and_the_user_is_not_root():
    dockerfile = (ATTACHER_ROOT / "Dockerfile").read_text()

    assert re.search(r"^FROM python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}$", dockerfile, re.M)
    assert re.findall(r"^USER (\S+)$", dockerfile, re.M) == ["65532:65532"]
    assert 'ENTRYPOINT ["python", "-m", "attacher"]' in dockerfile


def test_hadolint_is_clean():
    result = subprocess.run([str(VENV_BIN / "hadolint"), str(ATTACHER_ROOT / "Dockerfile")],
                            capture_output=True, text=True, timeout=60, check=False)

    assert (result.returncode, result.stdout) == (0, "")
