"""The runtime recipe: what the bake puts on the runtime disk image, read once and validated.

A recipe pins everything that lands under /runtime (Python packages, git sources at exact commits,
models by sha256, Hugging Face files at a commit), so that its canonical JSON form, together with
the bake script and the base image digest, identifies the image: `sd-runtime-<hash12>`.
Every problem is collected and reported together, as for stack configuration.
Only the standard library and PyYAML: the program and the tests import it, never the builder VM
(the bake reads the canonical JSON instead).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from components.source import load_source

IMAGE_PREFIX = "sd-runtime-"
BAKE_SCRIPT = Path(__file__).resolve().parent.parent / "images" / "runtime" / "bake.py"
"""Mixed into every identity hash: changing how the hash is formed must change every hash."""

_PYTHON = re.compile(r"^3\.[0-9]{1,2}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_DIST = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_PIN = re.compile(rf"^({_DIST})==([0-9][0-9A-Za-z.!+_-]*)$")
_URL_REQUIREMENT = re.compile(rf"^({_DIST}) @ (\S+)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HF_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_PATH_PART = re.compile(r"^[A-Za-z0-9_+-][A-Za-z0-9._+-]*$")
RESERVED_TOP_LEVEL = ("venv", "webui", "cache", "MANIFEST.json")
"""Destinations must stay out of what the bake itself writes (WebUI's own models dir included:
the WebUI step replaces that tree)."""

_ABSENT = object()
"""A required key that is not there: reported once as missing, not again as a bad value."""

PIN_TEXT = "an exact pin NAME==VERSION such as numpy==1.26.2"
COMMIT_TEXT = "a full commit id: 40 lowercase hex digits"


class RecipeError(Exception):
    """All problems found in one recipe."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(
            f"{len(problems)} problem(s) in the runtime recipe:\n" + "\n".join(f"  - {p}" for p in problems)
        )


@dataclass(frozen=True)
class TorchSet:
    index_url: str
    packages: tuple[str, ...]


@dataclass(frozen=True)
class PipSet:
    index_url: str
    requirements: tuple[str, ...]
    constraints: tuple[str, ...]
    """Pins for everything the requirements pull in, so nothing the bake installs floats."""


@dataclass(frozen=True)
class GitSource:
    name: str
    repository: str
    commit: str


@dataclass(frozen=True)
class WebUI:
    repository: str
    commit: str
    repositories: tuple[GitSource, ...]
    """Cloned into webui/repositories/<name>, as WebUI's own environment preparation would."""


@dataclass(frozen=True)
class Model:
    url: str
    sha256: str
    destination: str


@dataclass(frozen=True)
class HuggingFaceFiles:
    repo: str
    revision: str
    files: tuple[str, ...]


@dataclass(frozen=True)
class Recipe:
    python: str
    torch: TorchSet
    pip: PipSet
    webui: WebUI
    extensions: tuple[GitSource, ...]
    models: tuple[Model, ...]
    huggingface: tuple[HuggingFaceFiles, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain data with every key present, the form the bake reads."""

        def source(s: GitSource) -> dict[str, str]:
            return {"name": s.name, "repository": s.repository, "commit": s.commit}

        return {
            "python": self.python,
            "torch": {"index_url": self.torch.index_url, "packages": list(self.torch.packages)},
            "pip": {
                "index_url": self.pip.index_url,
                "requirements": list(self.pip.requirements),
                "constraints": list(self.pip.constraints),
            },
            "webui": {
                "repository": self.webui.repository,
                "commit": self.webui.commit,
                "repositories": [source(s) for s in self.webui.repositories],
            },
            "extensions": [source(s) for s in self.extensions],
            "models": [{"url": m.url, "sha256": m.sha256, "destination": m.destination} for m in self.models],
            "huggingface": [
                {"repo": h.repo, "revision": h.revision, "files": list(h.files)} for h in self.huggingface
            ],
        }

    def canonical_json(self) -> str:
        """Sorted keys, no whitespace: equal recipes give equal bytes, whatever the YAML looked like."""
        return canonical_json(self.to_dict())


# The bake hashes on the builder, so the program hashes with the bake's own code.
_bake = load_source(BAKE_SCRIPT, "sdgke_bake_script")
canonical_json = _bake.canonical_json
identity_hash = _bake.identity_hash


def recipe_hash(recipe: Recipe, bake_script_bytes: bytes, base_image_digest: str) -> str:
    """The runtime image's identity: a new hash means a new image, and nothing else does."""
    if not isinstance(base_image_digest, str) or not _DIGEST.match(base_image_digest):
        raise RecipeError([
            f"base_image_digest: {_show(base_image_digest)} is not allowed; expected sha256: and 64 lowercase hex digits"
        ])
    return identity_hash(recipe.canonical_json(), bake_script_bytes, base_image_digest)


def image_name(identity: str) -> str:
    return f"{IMAGE_PREFIX}{identity[:12]}"


def normalize_name(name: str) -> str:
    """PEP 503 form, so NumPy, numpy and num_py are one distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


# --- reading -------------------------------------------------------------------------------


def load_recipe(path: Path | str, *, allow_local: bool = False) -> Recipe:
    """Read and validate a recipe file (YAML, or the canonical JSON, which is YAML too)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise RecipeError([f"{path}: cannot be read ({e.strerror}); expected a readable recipe file"]) from None
    except yaml.YAMLError as e:
        raise RecipeError([f"{path}: is not valid YAML ({_one_line(e)}); expected a YAML mapping"]) from None
    return parse_recipe(raw, allow_local=allow_local)


def parse_recipe(raw: Any, *, allow_local: bool = False) -> Recipe:
    """Validate plain data; `allow_local` admits file:// URLs, for tests that bake offline."""
    r = _Reader(allow_local)
    top = r.mapping("recipe", raw, required=("python", "torch", "pip", "webui"),
                    optional=("extensions", "models", "huggingface"))
    python = r.string("python", top.get("python", _ABSENT), _PYTHON,
                      'a Python minor version as a string, such as "3.11"')

    torch_raw = r.mapping("torch", top.get("torch", _ABSENT), required=("index_url", "packages"))
    torch = TorchSet(
        index_url=r.url("torch.index_url", torch_raw.get("index_url", _ABSENT), "a package index URL"),
        packages=r.items("torch.packages", torch_raw.get("packages", _ABSENT), r.pin,
                         "a non-empty list of exact pins", non_empty=True),
    )

    pip_raw = r.mapping("pip", top.get("pip", _ABSENT), required=("index_url", "requirements"),
                        optional=("constraints",))
    pip = PipSet(
        index_url=r.url("pip.index_url", pip_raw.get("index_url", _ABSENT), "a package index URL"),
        requirements=r.items("pip.requirements", pip_raw.get("requirements", _ABSENT), r.requirement,
                             "a list of requirements"),
        constraints=r.items("pip.constraints", pip_raw.get("constraints", []), r.pin, "a list of exact pins"),
    )
    r.unique_distributions([("torch.packages", torch.packages), ("pip.requirements", pip.requirements),
                            ("pip.constraints", pip.constraints)])

    webui_raw = r.mapping("webui", top.get("webui", _ABSENT), required=("repository", "commit"),
                          optional=("repositories",))
    webui = WebUI(
        repository=r.url("webui.repository", webui_raw.get("repository", _ABSENT), "a git repository URL"),
        commit=r.string("webui.commit", webui_raw.get("commit", _ABSENT), _COMMIT, COMMIT_TEXT),
        repositories=r.sources("webui.repositories", webui_raw.get("repositories", [])),
    )
    extensions = r.sources("extensions", top.get("extensions", []))
    models = r.items("models", top.get("models", []), r.model, "a list of models")
    r.unique("models", [(f"models[{i}].destination", m.destination) for i, m in enumerate(models)])
    huggingface = r.items("huggingface", top.get("huggingface", []), r.hf_files, "a list of Hugging Face repos")
    r.unique("huggingface", [(f"huggingface[{i}].repo", h.repo) for i, h in enumerate(huggingface)])

    if r.problems:
        raise RecipeError(r.problems)
    return Recipe(python=python, torch=torch, pip=pip, webui=webui, extensions=extensions, models=models,
                  huggingface=huggingface)


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 200 else text[:197] + "..."


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


class _Reader:
    def __init__(self, allow_local: bool) -> None:
        self.allow_local = allow_local
        self.problems: list[str] = []

    def fail(self, key: str, value: Any, allowed: str) -> None:
        if value is _ABSENT:
            return
        self.problems.append(f"{key}: {_show(value)} is not allowed; expected {allowed}")

    def mapping(self, key: str, raw: Any, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
        allowed = sorted(required + optional)
        if raw is _ABSENT:
            return {}
        if not isinstance(raw, dict):
            self.fail(key, raw, "a mapping with keys " + ", ".join(allowed))
            return {}
        for name, value in raw.items():
            if name not in allowed:
                self.problems.append(
                    f"{_join(key, name)}: unknown key (value {_show(value)}); allowed keys are " + ", ".join(allowed)
                )
        for name in required:
            if name not in raw:
                self.problems.append(f"{_join(key, name)}: missing; it is required")
        return {k: v for k, v in raw.items() if k in allowed}

    def string(self, key: str, value: Any, pattern: re.Pattern, allowed: str) -> str:
        if not isinstance(value, str) or not pattern.match(value):
            self.fail(key, value, allowed)
            return ""
        return value

    def url(self, key: str, value: Any, what: str) -> str:
        schemes = ("https", "file") if self.allow_local else ("https",)
        allowed = f"{what} starting with " + " or ".join(f"{s}://" for s in schemes)
        if not isinstance(value, str) or any(c.isspace() for c in value):
            self.fail(key, value, allowed)
            return ""
        parts = urlsplit(value)
        ok = parts.scheme in schemes and (bool(parts.netloc) if parts.scheme == "https" else parts.path.startswith("/"))
        if not ok:
            self.fail(key, value, allowed)
            return ""
        return value

    def items(self, key: str, value: Any, check: Callable[[str, Any], Any], what: str,
              non_empty: bool = False) -> tuple:
        if not isinstance(value, list) or (non_empty and not value):
            self.fail(key, value, what)
            return ()
        return tuple(check(f"{key}[{i}]", v) for i, v in enumerate(value))

    def pin(self, key: str, value: Any) -> str:
        return self.string(key, value, _PIN, PIN_TEXT)

    def requirement(self, key: str, value: Any) -> str:
        if isinstance(value, str) and _PIN.match(value):
            return value
        m = _URL_REQUIREMENT.match(value) if isinstance(value, str) else None
        if not m:
            self.fail(key, value, f"{PIN_TEXT}, or NAME @ URL of an archive pinned by commit")
            return ""
        return value if self.url(key, m.group(2), "a pinned archive URL") else ""

    def unique_distributions(self, groups: list[tuple[str, tuple[str, ...]]]) -> None:
        """One pin per distribution: a second would be ignored or conflict, depending on pip's mood."""
        seen: dict[str, str] = {}
        for key, entries in groups:
            for i, entry in enumerate(entries):
                m = _PIN.match(entry) or _URL_REQUIREMENT.match(entry)
                if not m:
                    continue
                name = normalize_name(m.group(1))
                if name in seen:
                    self.fail(f"{key}[{i}]", entry,
                              f"each distribution pinned once; {name} is already pinned at {seen[name]}")
                else:
                    seen[name] = f"{key}[{i}]"

    def unique(self, scope: str, entries: list[tuple[str, str]]) -> None:
        seen: set[str] = set()
        for key, value in entries:
            if value and value in seen:
                self.fail(key, value, f"a value not used by another entry of {scope}")
            seen.add(value)

    def sources(self, key: str, value: Any) -> tuple[GitSource, ...]:
        sources = self.items(key, value, self.source, "a list of git sources (name, repository, commit)")
        self.unique(key, [(f"{key}[{i}].name", s.name) for i, s in enumerate(sources)])
        return sources

    def source(self, key: str, value: Any) -> GitSource:
        raw = self.mapping(key, value, required=("name", "repository", "commit"))
        return GitSource(
            name=self.string(f"{key}.name", raw.get("name", _ABSENT), _NAME,
                             "a directory name: letters, digits, '.', '_' or '-', not starting with '.'"),
            repository=self.url(f"{key}.repository", raw.get("repository", _ABSENT), "a git repository URL"),
            commit=self.string(f"{key}.commit", raw.get("commit", _ABSENT), _COMMIT, COMMIT_TEXT),
        )

    def model(self, key: str, value: Any) -> Model:
        raw = self.mapping(key, value, required=("url", "sha256", "destination"))
        return Model(
            url=self.url(f"{key}.url", raw.get("url", _ABSENT), "a download URL"),
            sha256=self.string(f"{key}.sha256", raw.get("sha256", _ABSENT), _SHA256,
                               "the file's sha256: 64 lowercase hex digits"),
            destination=self.destination(f"{key}.destination", raw.get("destination", _ABSENT)),
        )

    def destination(self, key: str, value: Any) -> str:
        allowed = ("a relative path inside /runtime such as models/Stable-diffusion/x.safetensors, without '..', "
                   "not under " + ", ".join(RESERVED_TOP_LEVEL))
        path = self.relative_path(key, value, allowed)
        if path and path.split("/")[0] in RESERVED_TOP_LEVEL:
            self.fail(key, value, allowed)
            return ""
        return path

    def relative_path(self, key: str, value: Any, allowed: str) -> str:
        if not isinstance(value, str) or not value or not all(_PATH_PART.match(p) for p in value.split("/")):
            self.fail(key, value, allowed)
            return ""
        return value

    def hf_files(self, key: str, value: Any) -> HuggingFaceFiles:
        raw = self.mapping(key, value, required=("repo", "revision", "files"))
        files = self.items(
            f"{key}.files", raw.get("files", _ABSENT),
            lambda k, v: self.relative_path(k, v, "a file path in the repository, without '..'"),
            "a non-empty list of file paths", non_empty=True,
        )
        self.unique(f"{key}.files", [(f"{key}.files[{i}]", f) for i, f in enumerate(files)])
        return HuggingFaceFiles(
            repo=self.string(f"{key}.repo", raw.get("repo", _ABSENT), _HF_REPO,
                             "a model repository id such as org/name"),
            revision=self.string(f"{key}.revision", raw.get("revision", _ABSENT), _COMMIT, COMMIT_TEXT),
            files=files,
        )


def _join(key: str, name: Any) -> str:
    return str(name) if key == "recipe" else f"{key}.{name}"
