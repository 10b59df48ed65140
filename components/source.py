"""Loading a module of the project from its file: code that ships in images (the bake, the agent's
permission table) is read by the program from its source, so the two can never drift apart."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_source(path: Path, name: str) -> ModuleType:
    """Execute `path` as module `name`, registered in sys.modules (its dataclasses look it up there)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
