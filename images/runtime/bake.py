#!/usr/bin/env python3
"""Bake the Stable Diffusion runtime tree that becomes the sd-runtime disk image.

Runs on a builder VM inside the slim base image, as root, with only the standard library: it reads
the canonical JSON recipe (components/recipe.py writes it; PyYAML may be missing here) and writes
everything under --root, which must be the path pods mount the disk at (/runtime), because a venv
remembers its own absolute path and interpreter.

  python3 bake.py --recipe recipe.json --root /runtime --base-image-digest sha256:... \
      [--expected-hash H] [--progress-cmd CMD] [--find-links DIR] [--huggingface-endpoint URL]

Layout under the root:
  webui/                        WebUI at the recipe's commit; webui/repositories/<name>, webui/extensions/<name>
  webui/webui-user.sh           launch settings that skip WebUI's environment preparation
  venv/                         a venv of the interpreter running the bake, with the pip and setuptools
                                its ensurepip seeds (pinned by the base image, and the installer here)
  models/...                    models, each at its destination, verified by sha256; and the
                                directories WebUI creates at start (WEBUI_STARTUP_WRITES), which a
                                read-only mount would refuse it
  cache/huggingface/hub/        Hugging Face hub cache (HF_HOME=<root>/cache/huggingface):
                                models--ORG--NAME/refs/main holds the revision and
                                models--ORG--NAME/snapshots/<revision>/<file> the file itself (regular
                                files, no blobs/ symlinks: huggingface_hub resolves offline through
                                refs/ and snapshots/ alone), and the version.txt transformers
                                would write at import
  MANIFEST.json                 what was baked: hash, packages, commits, model hashes, sizes, launch
  .sd-runtime-ready             the identity hash; written last, atomically, and only on success
  .bake/                        the bake's own state: identity, per-step stamps, pip input files

Steps, in order: webui, repositories, extensions, models, huggingface (the quick ones that fail most,
first), venv, torch, requirements, pip-check (pip check, and nothing installed that the recipe does
not pin), webui-config, compile, manifest, ready.
Each step prints one JSON line to stdout ({"step", "status", "seconds"}); subprocess output goes to
stderr (the serial console). --progress-cmd is run as `CMD STEP STATUS` (STATUS: running, done,
kept, failed, unchanged) so the builder can forward progress to guest attributes. Any failure
ends with `bake failed at <step>: <reason>` on stderr and exit status 1; the marker is never written.

Re-running is safe. With the marker present and the same identity, nothing happens. After a failed
run with the same identity, finished steps are kept (their stamps say so) and the bake resumes at the
first unfinished one, redoing it from a clean slate. A tree of another identity is wiped first.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

HASH_DOMAIN = b"sd-gke runtime image v1"
"""Must equal components/recipe.py's: both compute the same identity (a test holds them together)."""
READY_MARKER = ".sd-runtime-ready"
MANIFEST = "MANIFEST.json"
STATE = ".bake"
KEEP_IN_ROOT = ("lost+found",)
"""mkfs leaves lost+found on the blank disk; it is the filesystem's, not the bake's."""
HF_ENDPOINT = "https://huggingface.co"
DOWNLOAD_ATTEMPTS = 4
DOWNLOAD_BACKOFF_SECONDS = 5.0
RETRIED_HTTP_STATUS = (408, 429, 500, 502, 503, 504)
CHUNK = 1 << 20

WEBUI_ARGS = ("--skip-prepare-environment", "--skip-install", "--skip-version-check", "--no-download-sd-model")
"""What makes WebUI start without pip, git or downloads: the bake already did all of it."""

WEBUI_SOURCE = "stable-diffusion-webui@82a973c0"
"""The WebUI the default recipe pins (v1.10.1): every line cited below is at that commit."""

DATA_LINKS = {"models": "models", "extensions": "webui/extensions"}
"""The pod gives WebUI a writable --data-dir and links these names in it to the read-only runtime
(name in the data dir -> path under the root): WebUI's models_path is <data>/models and its
extensions_dir <data>/extensions (modules/paths_internal.py:32-33)."""


@dataclass(frozen=True)
class StartupWrite:
    """A path WebUI writes while it starts, where the pod lays it out.

    base: "data", WebUI's --data-dir (a writable emptyDir whose DATA_LINKS lead onto the runtime),
    or "runtime", the read-only root. kind: "dir" is os.makedirs(exist_ok=True), which fails with
    EROFS on a read-only tree unless the directory already exists; "marker" is a file written only
    while it is absent or says something else than `content`; "file" is written at every start.
    """

    base: str
    path: str
    kind: str
    source: str
    content: str = ""


WEBUI_STARTUP_WRITES = (
    StartupWrite("data", "extensions", "dir", f"{WEBUI_SOURCE}:modules/extensions.py:18, at import "
                 "(extensions_dir, modules/paths_internal.py:33)"),
    StartupWrite("data", "models/hypernetworks", "dir", f"{WEBUI_SOURCE}:modules/shared_init.py:15 from "
                 "modules/initialize.py:36 (--hypernetwork-dir default, modules/cmd_args.py:36)"),
    StartupWrite("data", "models/Stable-diffusion", "dir", f"{WEBUI_SOURCE}:modules/sd_models.py:143 from "
                 "modules/initialize.py:61 (model_path, modules/sd_models.py:21-22, whatever --ckpt-dir says)"),
    StartupWrite("data", "models/Codeformer", "dir", f"{WEBUI_SOURCE}:modules/face_restoration_utils.py:122 from "
                 "modules/codeformer_model.py:61, modules/initialize.py:68 (--codeformer-models-path default, "
                 "modules/cmd_args.py:52)"),
    StartupWrite("data", "models/GFPGAN", "dir", f"{WEBUI_SOURCE}:modules/face_restoration_utils.py:122 from "
                 "modules/gfpgan_model.py:66, modules/initialize.py:72 (--gfpgan-models-path default, "
                 "modules/cmd_args.py:53)"),
    StartupWrite("data", "models/Lora", "dir", f"{WEBUI_SOURCE}:extensions-builtin/Lora/networks.py:686, run at "
                 "import (networks.py:737) when modules/initialize.py:111 loads the scripts (--lora-dir default, "
                 "extensions-builtin/Lora/preload.py:7)"),
    StartupWrite("runtime", "webui/config_states", "dir", f"{WEBUI_SOURCE}:modules/config_states.py:22 from "
                 "modules/ui_extensions.py:547, modules/ui.py:1127 (config_states_dir, modules/paths_internal.py:35)"),
    StartupWrite("runtime", "cache/huggingface/hub/version.txt", "marker", "transformers==4.30.2:"
                 "transformers/utils/hub.py:1113-1160, at import: writes 1 unless the file says so "
                 "(TRANSFORMERS_CACHE = $HF_HOME/hub, hub.py:77-102)", content="1"),
    StartupWrite("data", "ui-config.json", "file", f"{WEBUI_SOURCE}:modules/ui_loadsave.py:146 from "
                 "modules/ui.py:1172 (--ui-config-file default, modules/cmd_args.py:80)"),
    StartupWrite("data", "cache/hashes/cache.db", "file", f"{WEBUI_SOURCE}:modules/cache.py:24-28 (diskcache) from "
                 "modules/cache.py:75, modules/hashes.py:23, modules/sd_models.py:92 ($SD_WEBUI_CACHE_DIR, "
                 "modules/cache.py:12)"),
)
"""Every path WebUI v1.10.1 (no extensions but its built-in ones) writes from launch to serving, with
the pod's flags. Not reached with them: modules/launch_utils.py:409 (prepare_environment, skipped by
--skip-prepare-environment, launch.py:38); modules/upscaler.py:42 (only with create_dirs, which no
upscaler passes: modules/esrgan_model.py:14 and the others call super().__init__()); the tmp/ of
modules/cache.py:38, modules/options.py:205 and modules/launch_utils.py:254 (only for a corrupt file
in the fresh data dir); modules/shared_gradio_themes.py:62 (only for a theme other than the default)."""


def runtime_path(write: StartupWrite) -> str | None:
    """Where a startup write lands under the root, or None where it lands in the writable data dir."""
    if write.base == "runtime":
        return write.path
    first, _, rest = write.path.partition("/")
    if first not in DATA_LINKS:
        return None
    return f"{DATA_LINKS[first]}/{rest}" if rest else DATA_LINKS[first]


LIST_DISTRIBUTIONS = (
    "import importlib.metadata as m, json; "
    "print(json.dumps([{'name': d.metadata['Name'], 'version': d.version} for d in m.distributions()]))"
)


class BakeError(Exception):
    """A failure with a one-line reason; the runner adds the step's name."""


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def identity_hash(canonical: str, bake_script: bytes, base_image_digest: str) -> str:
    h = hashlib.sha256()
    for part in (HASH_DOMAIN, canonical.encode(), bake_script, base_image_digest.encode()):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


def normalize_name(name: str) -> str:
    return "-".join(part for part in name.replace("_", "-").replace(".", "-").split("-") if part).lower()


def requirement_name(requirement: str) -> str:
    """`numpy==1.26.2` and `clip @ https://...` -> the distribution's normalized name."""
    return normalize_name(requirement.split("==")[0].split(" @ ")[0].strip())


def one_line(lines: list[str] | deque[str]) -> str:
    """The line that says what went wrong: the first error line a tool printed, else its last line."""
    lines = [line.strip() for line in lines if line.strip()]
    for line in lines:
        if line.startswith(("ERROR:", "error:", "fatal:")):
            return line[:400]
    return lines[-1][:400] if lines else "no output"


@dataclass
class Step:
    name: str
    run: Callable[[], None]
    owns: Callable[[], list[Path]] = field(default=list)
    """Paths this step writes: removed before it runs, so a rerun starts clean."""
    restart_from: str | None = None
    """A step that changes another step's output resumes from that step instead."""


class Bake:
    def __init__(self, recipe: dict[str, Any], root: Path, identity: str, *, find_links: Path | None = None,
                 hf_endpoint: str = HF_ENDPOINT, progress_cmd: list[str] | None = None,
                 out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> None:
        self.recipe = recipe
        self.root = root
        self.identity = identity
        self.find_links = find_links
        self.hf_endpoint = hf_endpoint.rstrip("/")
        self.progress_cmd = progress_cmd
        self.out = out
        self.err = err
        self.venv = root / "venv"
        self.webui = root / "webui"
        self.state = root / STATE
        self.compile_errors: list[str] = []
        self._installed: list[dict[str, str]] | None = None
        self.steps = [
            Step("webui", self.clone_webui, lambda: [self.webui]),
            Step("repositories", self.clone_repositories,
                 lambda: [self.webui / "repositories" / s["name"] for s in recipe["webui"]["repositories"]]),
            Step("extensions", self.clone_extensions,
                 lambda: [self.webui / "extensions" / s["name"] for s in recipe["extensions"]]),
            Step("models", self.download_models),
            Step("huggingface", self.download_huggingface, lambda: [self.root / "cache" / "huggingface"]),
            Step("venv", self.create_venv, lambda: [self.venv]),
            Step("torch", self.install_torch, restart_from="venv"),
            Step("requirements", self.install_requirements, restart_from="venv"),
            Step("pip-check", self.check_packages, restart_from="venv"),
            Step("webui-config", self.write_webui_config),
            Step("compile", self.compile),
            Step("manifest", self.write_manifest, lambda: [self.root / MANIFEST]),
            Step("ready", self.write_marker),
        ]

    # --- the runner ----------------------------------------------------------------------------

    def run(self) -> int:
        marker = self.root / READY_MARKER
        if marker.is_file() and marker.read_text().strip() == self.identity:
            self.log("ready", "unchanged", 0.0)
            return 0
        try:
            start = self.prepare_root()
        except (BakeError, OSError) as e:
            return self.fail("prepare", e)
        for index, step in enumerate(self.steps):
            if index < start:
                self.log(step.name, "kept", 0.0)
                continue
            began = time.monotonic()
            self.progress(step.name, "running")
            try:
                for path in step.owns():
                    remove(path)
                step.run()
                if step.name != "ready":
                    self.stamp(step.name).write_text(self.identity + "\n")
            except Exception as e:  # noqa: BLE001 - every failure must end in the one-line message
                if not isinstance(e, (BakeError, OSError)):
                    traceback.print_exc(file=self.err)
                return self.fail(step.name, e, time.monotonic() - began)
            self.log(step.name, "done", time.monotonic() - began)
        return 0

    def prepare_root(self) -> int:
        """Wipe a tree of another identity and return the index of the first step to run."""
        self.root.mkdir(parents=True, exist_ok=True)
        identity_file = self.state / "identity"
        ours = identity_file.is_file() or (self.root / READY_MARKER).exists()
        previous = identity_file.read_text().strip() if identity_file.is_file() else None
        foreign = [p.name for p in self.root.iterdir() if p.name not in KEEP_IN_ROOT]
        if foreign and not ours:
            raise BakeError(f"root {self.root} holds {', '.join(sorted(foreign)[:5])} and no bake state; "
                            "expected an empty directory or a tree this script baked")
        if previous != self.identity:
            for name in foreign:
                remove(self.root / name)
        (self.state / "steps").mkdir(parents=True, exist_ok=True)
        identity_file.write_text(self.identity + "\n")
        names = [s.name for s in self.steps]
        start = next((i for i, s in enumerate(self.steps) if not self.stamp(s.name).is_file()), len(self.steps))
        if start < len(self.steps) and self.steps[start].restart_from:
            start = names.index(self.steps[start].restart_from)
        for name in names[start:]:
            self.stamp(name).unlink(missing_ok=True)
        return start

    def stamp(self, name: str) -> Path:
        return self.state / "steps" / name

    def fail(self, step: str, error: BaseException, seconds: float = 0.0) -> int:
        reason = str(error) if isinstance(error, BakeError) else f"{type(error).__name__}: {error}"
        reason = " ".join(reason.split())
        self.log(step, "failed", seconds, reason=reason)
        self.progress(step, "failed")
        print(f"bake failed at {step}: {reason}", file=self.err, flush=True)
        return 1

    def log(self, step: str, status: str, seconds: float, **extra: Any) -> None:
        print(json.dumps({"step": step, "status": status, "seconds": round(seconds, 3), **extra}),
              file=self.out, flush=True)
        if status in ("kept", "done", "unchanged"):
            self.progress(step, status)

    def progress(self, step: str, status: str) -> None:
        report_progress(self.progress_cmd, step, status, self.err)

    # --- subprocesses --------------------------------------------------------------------------

    def run_tool(self, argv: list[str], what: str, env: dict[str, str] | None = None) -> list[str]:
        """Run a tool with its output streamed to stderr; a non-zero exit raises with its error line."""
        tail: deque[str] = deque(maxlen=400)
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", env={**os.environ, **(env or {})})
        assert proc.stdout is not None
        for line in proc.stdout:
            self.err.write(line)
            tail.append(line.rstrip("\n"))
        self.err.flush()
        code = proc.wait()
        if code != 0:
            raise BakeError(f"{what} exited {code}: {one_line(tail)}")
        return list(tail)

    def capture(self, argv: list[str], what: str) -> str:
        result = subprocess.run(argv, check=False, capture_output=True, text=True, errors="replace")
        if result.returncode != 0:
            raise BakeError(f"{what} exited {result.returncode}: {one_line(result.stderr.splitlines())}")
        return result.stdout

    # --- git sources ---------------------------------------------------------------------------

    def clone(self, url: str, commit: str, dest: Path) -> None:
        """Fetch exactly one commit (shallow: the history is not part of the runtime) and check it out."""
        git = ["git", "-c", "advice.detachedHead=false", "-C", str(dest)]
        env = {"GIT_TERMINAL_PROMPT": "0"}
        dest.mkdir(parents=True)
        self.run_tool(["git", "init", "-q", str(dest)], "git init", env)
        self.run_tool([*git, "remote", "add", "origin", url], "git remote add", env)
        try:
            self.run_tool([*git, "fetch", "-q", "--depth", "1", "origin", commit], "git fetch", env)
        except BakeError as e:
            raise BakeError(f"cannot fetch commit {commit} from {url} ({e})") from None
        self.run_tool([*git, "checkout", "-q", "--detach", "FETCH_HEAD"], "git checkout", env)
        head = self.capture([*git, "rev-parse", "HEAD"], "git rev-parse").strip()
        if head != commit:
            raise BakeError(f"{dest.relative_to(self.root)} is at {head} after checkout, expected {commit}")

    def clone_webui(self) -> None:
        self.clone(self.recipe["webui"]["repository"], self.recipe["webui"]["commit"], self.webui)

    def clone_repositories(self) -> None:
        for source in self.recipe["webui"]["repositories"]:
            self.clone(source["repository"], source["commit"], self.webui / "repositories" / source["name"])

    def clone_extensions(self) -> None:
        for source in self.recipe["extensions"]:
            self.clone(source["repository"], source["commit"], self.webui / "extensions" / source["name"])

    # --- downloads -----------------------------------------------------------------------------

    def download(self, url: str, dest: Path, sha256: str | None = None) -> None:
        """Stream to a temporary name next to dest, check the sha256 if one is given, then rename:
        dest is whole and verified, or absent."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".part")
        retried = url.startswith(("https://", "http://"))
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            try:
                digest = hashlib.sha256()
                request = urllib.request.Request(url, headers={"User-Agent": "sd-gke-bake"})
                with urllib.request.urlopen(request, timeout=60) as response, open(partial, "wb") as f:
                    while chunk := response.read(CHUNK):
                        digest.update(chunk)
                        f.write(chunk)
            except OSError as e:
                partial.unlink(missing_ok=True)
                status = e.code if isinstance(e, urllib.error.HTTPError) else None
                transient = retried and (status is None or status in RETRIED_HTTP_STATUS)
                if not transient or attempt == DOWNLOAD_ATTEMPTS:
                    if isinstance(e, urllib.error.HTTPError):
                        reason = f"HTTP {e.code} {e.reason}"
                    else:
                        reason = str(e.reason if isinstance(e, urllib.error.URLError) else e)
                    raise BakeError(f"cannot download {url}: {reason}") from None
                print(f"download of {url} failed ({e}); retry {attempt}", file=self.err, flush=True)
                time.sleep(DOWNLOAD_BACKOFF_SECONDS * attempt)
                continue
            if sha256 is not None and digest.hexdigest() != sha256:
                partial.unlink()
                raise BakeError(f"sha256 mismatch for {url}: expected {sha256}, got {digest.hexdigest()}")
            os.replace(partial, dest)
            return

    def download_models(self) -> None:
        """A model already in place with the right sha256 (from a failed run of this recipe) is kept."""
        for model in self.recipe["models"]:
            dest = self.root / model["destination"]
            dest.with_name(dest.name + ".part").unlink(missing_ok=True)
            if dest.is_file() and file_sha256(dest) == model["sha256"]:
                continue
            remove(dest)
            self.download(model["url"], dest, model["sha256"])

    def download_huggingface(self) -> None:
        hub = self.root / "cache" / "huggingface" / "hub"
        for entry in self.recipe["huggingface"]:
            repo_dir = hub / ("models--" + entry["repo"].replace("/", "--"))
            for name in entry["files"]:
                url = f"{self.hf_endpoint}/{entry['repo']}/resolve/{entry['revision']}/{name}"
                self.download(url, repo_dir / "snapshots" / entry["revision"] / name)
            (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
            (repo_dir / "refs" / "main").write_text(entry["revision"])

    # --- Python packages -----------------------------------------------------------------------

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def create_venv(self) -> None:
        """ensurepip's pip does the installing: the base image needs python3.11-venv, not python3-pip."""
        self.run_tool([sys.executable, "-m", "venv", str(self.venv)], "venv")
        (self.state / "seeded.json").write_text(json.dumps(self.distributions()))
        self.write_pip_inputs()

    def seeded(self) -> list[dict[str, str]]:
        """What the venv held before any install: ensurepip's pip and setuptools, which the base image pins."""
        return json.loads((self.state / "seeded.json").read_text())

    def write_pip_inputs(self) -> None:
        pins = [*self.recipe["torch"]["packages"], *self.recipe["pip"]["requirements"],
                *self.recipe["pip"]["constraints"]]
        (self.state / "constraints.txt").write_text("".join(f"{p}\n" for p in pins if " @ " not in p))
        (self.state / "requirements.txt").write_text("".join(f"{p}\n" for p in self.recipe["pip"]["requirements"]))

    def pip(self, *args: str) -> list[str]:
        return [str(self.python), "-m", "pip", "--disable-pip-version-check", "--no-input", *args]

    def index_args(self, index_url: str, extra_index_url: str | None = None) -> list[str]:
        if self.find_links is not None:
            return ["--no-index", "--find-links", str(self.find_links)]
        extra = ["--extra-index-url", extra_index_url] if extra_index_url else []
        return ["--index-url", index_url, *extra]

    def pip_install(self, index: list[str], targets: list[str], what: str) -> None:
        """PIP_CONSTRAINT, unlike -c, also binds the build environments of sdists: no floating setuptools."""
        self.run_tool(
            self.pip("install", "--no-cache-dir", "--progress-bar", "off", *index, *targets), what,
            env={"PIP_CONSTRAINT": str(self.state / "constraints.txt")},
        )

    def install_torch(self) -> None:
        torch, pip = self.recipe["torch"], self.recipe["pip"]
        self.pip_install(self.index_args(torch["index_url"], pip["index_url"]), list(torch["packages"]),
                         "pip install of the torch set")

    def install_requirements(self) -> None:
        self.pip_install(self.index_args(self.recipe["pip"]["index_url"]),
                         ["-r", str(self.state / "requirements.txt")], "pip install of the requirements")

    def distributions(self) -> list[dict[str, str]]:
        """What `pip list` says, read by the venv's interpreter in isolated mode: a fraction of pip's time."""
        return json.loads(self.capture([str(self.python), "-I", "-c", LIST_DISTRIBUTIONS], "listing the venv"))

    def installed(self) -> list[dict[str, str]]:
        """Read once: no step after pip-check changes the venv's packages."""
        if self._installed is None:
            self._installed = self.distributions()
        return self._installed

    def unpinned(self) -> list[str]:
        """Installed distributions the recipe does not pin: what would float from bake to bake."""
        pinned = {requirement_name(p) for p in (*self.recipe["torch"]["packages"],
                                                *self.recipe["pip"]["requirements"],
                                                *self.recipe["pip"]["constraints"])}
        pinned |= {normalize_name(d["name"]) for d in self.seeded()}
        return sorted(f"{d['name']}=={d['version']}" for d in self.installed()
                      if normalize_name(d["name"]) not in pinned)

    def check_packages(self) -> None:
        result = subprocess.run(self.pip("check"), check=False, capture_output=True, text=True, errors="replace")
        if result.returncode != 0:
            self.err.write(result.stdout + result.stderr)
            conflicts = [line.strip() for line in result.stdout.splitlines() if line.strip()] or ["no output"]
            raise BakeError(f"pip check found {len(conflicts)} conflict(s): {'; '.join(conflicts[:3])}")
        unpinned = self.unpinned()
        if unpinned:
            raise BakeError(f"installed but not pinned in the recipe: {', '.join(unpinned)}; "
                            "add them to pip.constraints")

    # --- finishing -----------------------------------------------------------------------------

    def launch(self) -> dict[str, Any]:
        return {
            "python": str(self.python),
            "script": str(self.webui / "launch.py"),
            "args": list(WEBUI_ARGS),
            "env": {"HF_HOME": str(self.root / "cache" / "huggingface"), "HF_HUB_OFFLINE": "1",
                    "TRANSFORMERS_OFFLINE": "1"},
        }

    def write_webui_config(self) -> None:
        """webui-user.sh is where WebUI's own launcher (webui.sh) takes its settings from; and what
        WebUI creates when it starts must exist already, since pods mount the tree read-only."""
        self.make_startup_paths()
        launch = self.launch()
        lines = [
            "#!/bin/bash",
            "# Written by the sd-gke bake: this tree is complete and mounted read-only, so WebUI must not",
            "# prepare its environment (no pip, no git, no downloads) when it starts.",
            f"venv_dir={shlex.quote(str(self.venv))}",
            f"export COMMANDLINE_ARGS=\"{' '.join(launch['args'])} ${{COMMANDLINE_ARGS:-}}\"",
            *(f"export {k}={shlex.quote(v)}" for k, v in launch["env"].items()),
        ]
        atomic_write(self.webui / "webui-user.sh", "\n".join(lines) + "\n")

    def make_startup_paths(self) -> None:
        for write in WEBUI_STARTUP_WRITES:
            path = runtime_path(write)
            if path is None:
                continue
            if write.kind == "dir":
                (self.root / path).mkdir(parents=True, exist_ok=True)
            elif write.kind == "marker":
                atomic_write(self.root / path, write.content)
            else:
                raise BakeError(f"WebUI writes {path} at every start, but the runtime is mounted read-only")

    def compile(self) -> None:
        """Byte-code for every module, since a read-only tree cannot cache it at run time. Files that
        do not compile (test fixtures with bad syntax that some packages ship, as pip tolerates too)
        are recorded in the manifest; any other compileall failure fails the bake."""
        argv = [str(self.python), "-m", "compileall", "-q", "-j", "0", str(self.venv), str(self.webui)]
        result = subprocess.run(argv, check=False, capture_output=True, text=True, errors="replace")
        self.err.write(result.stdout + result.stderr)
        marker = "*** Error compiling '"
        self.compile_errors = sorted(
            str(Path(line[len(marker):].split("'")[0]).relative_to(self.root))
            for line in result.stdout.splitlines() if line.startswith(marker)
        )
        if result.returncode != 0 and not self.compile_errors:
            raise BakeError(f"compileall exited {result.returncode}: {one_line(result.stderr.splitlines())}")

    def write_manifest(self) -> None:
        recipe = self.recipe
        manifest = {
            "recipe_hash": self.identity,
            "python": platform.python_version(),
            "packages": sorted(({"name": d["name"], "version": d["version"]} for d in self.installed()),
                               key=lambda d: normalize_name(d["name"])),
            "seeded": self.seeded(),
            "webui": {"repository": recipe["webui"]["repository"], "commit": recipe["webui"]["commit"]},
            "repositories": recipe["webui"]["repositories"],
            "extensions": recipe["extensions"],
            "models": [{"destination": m["destination"], "sha256": m["sha256"],
                        "bytes": (self.root / m["destination"]).stat().st_size} for m in recipe["models"]],
            "huggingface": recipe["huggingface"],
            "files": tree_size(self.root, skip=(STATE, MANIFEST, READY_MARKER)),
            "compile_errors": self.compile_errors,
            "launch": self.launch(),
        }
        atomic_write(self.root / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")

    def write_marker(self) -> None:
        atomic_write(self.root / READY_MARKER, self.identity + "\n")


def report_progress(progress_cmd: list[str] | None, step: str, status: str, err: TextIO) -> None:
    """Best effort: a builder that cannot report progress still bakes, and its timeout still holds."""
    if not progress_cmd:
        return
    try:
        subprocess.run([*progress_cmd, step, status], check=True, timeout=30, stdout=err, stderr=err)
    except (OSError, subprocess.SubprocessError) as e:
        print(f"progress command failed for {step} {status}: {e}", file=err, flush=True)


def tree_size(root: Path, skip: tuple[str, ...]) -> dict[str, Any]:
    """Regular files only (symlinks are not followed): what the disk image holds."""
    count = total = 0
    by_top: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        if not rel.parts:
            dirnames[:] = [d for d in dirnames if d not in skip and d not in KEEP_IN_ROOT]
            filenames = [f for f in filenames if f not in skip]
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode):
                top = rel.parts[0] if rel.parts else name
                by_top[top] = by_top.get(top, 0) + st.st_size
                count += 1
                total += st.st_size
    return {"count": count, "bytes": total, "bytes_by_top_level": dict(sorted(by_top.items()))}


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def atomic_write(path: Path, text: str) -> None:
    """Write a temporary file, fsync it, rename it over path, fsync the directory: all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


REQUIRED_KEYS = ("python", "torch", "pip", "webui", "extensions", "models", "huggingface")


def load(recipe_path: Path, base_image_digest: str, expected_hash: str | None) -> tuple[dict[str, Any], str]:
    """Read the canonical recipe, compute the identity it bakes, and check it against the builder's."""
    try:
        recipe = json.loads(recipe_path.read_bytes())
    except (OSError, ValueError) as e:
        raise BakeError(f"cannot read recipe {recipe_path}: {e}") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(recipe, dict) or k not in recipe]
    if missing:
        raise BakeError(f"recipe {recipe_path} is not a canonical recipe: missing {', '.join(missing)}")
    identity = identity_hash(canonical_json(recipe), Path(__file__).read_bytes(), base_image_digest)
    if expected_hash is not None and identity != expected_hash:
        raise BakeError(f"identity {identity} differs from --expected-hash {expected_hash}: the recipe, "
                        "this script or the base image digest is not what the program hashed")
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    if recipe["python"] != running:
        raise BakeError(f"the recipe asks for Python {recipe['python']} but this interpreter is {running}; "
                        "bake with the base image's python")
    return recipe, identity


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, required=True, help="canonical JSON recipe")
    parser.add_argument("--root", type=Path, required=True, help="where pods mount the tree: /runtime")
    parser.add_argument("--base-image-digest", required=True, help="sha256:... of the image this runs in")
    parser.add_argument("--expected-hash", help="the identity the program computed; refuse to bake another")
    parser.add_argument("--progress-cmd", help="run as `CMD STEP STATUS` at every step change")
    parser.add_argument("--find-links", type=Path, help="install only from this directory of wheels (tests)")
    parser.add_argument("--huggingface-endpoint", default=HF_ENDPOINT, help="Hugging Face base URL (tests)")
    args = parser.parse_args(argv)
    progress_cmd = shlex.split(args.progress_cmd) if args.progress_cmd else None
    try:
        recipe, identity = load(args.recipe, args.base_image_digest, args.expected_hash)
    except BakeError as e:
        print(json.dumps({"step": "recipe", "status": "failed", "seconds": 0.0, "reason": str(e)}), flush=True)
        report_progress(progress_cmd, "recipe", "failed", sys.stderr)
        print(f"bake failed at recipe: {e}", file=sys.stderr, flush=True)
        return 1
    bake = Bake(recipe, args.root.resolve(), identity, find_links=args.find_links,
                hf_endpoint=args.huggingface_endpoint, progress_cmd=progress_cmd)
    return bake.run()


if __name__ == "__main__":
    sys.exit(main())
