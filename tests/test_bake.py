"""The bake, run for real on small local inputs: git repositories made here, wheels built here,
models and Hugging Face files served as file:// URLs. No network.

One successful bake (module scope) is inspected by the layout and manifest tests; each failure mode
bakes into its own root and stops before pip wherever the failure allows it, to stay fast.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import importlib.util
import io
import json
import os
import subprocess
import sys
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.recipe import parse_recipe, recipe_hash

BAKE = Path(__file__).resolve().parent.parent / "images" / "runtime" / "bake.py"
BASE_DIGEST = "sha256:" + "b" * 64
GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_NOSYSTEM": "1"}
HF_REVISION = "c" * 40
MISSING_COMMIT = "0123456789abcdef0123456789abcdef01234567"
DEBIAN_PYTHON = "/usr/bin/python3.11"


def bake_python() -> str:
    """The interpreter that runs the bake: the base image's (Debian bookworm's python3.11 with
    python3.11-venv) where this machine has it, as on the builder and in CI, which runs in the base
    image; elsewhere the installation the tests' own venv was made from. Never a venv's python:
    `python -m venv` makes the new venv from the installation behind it (sys._base_executable,
    CPython v3.11.7:Lib/venv/__init__.py:130 and 184), so the baked venv would not be that python's."""
    installation = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (DEBIAN_PYTHON, str(installation)):
        try:
            found = subprocess.run([candidate, "-c", "import ensurepip, venv"], capture_output=True, check=False)
        except OSError:
            continue
        if found.returncode == 0:
            return candidate
    raise RuntimeError(f"no interpreter with venv and ensurepip at {DEBIAN_PYTHON} or {installation}")


BAKE_PYTHON = bake_python()
PYTHON_MINOR = subprocess.run([BAKE_PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                              capture_output=True, text=True, check=True).stdout.strip()


def make_wheel(directory: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A minimal pure-Python wheel, written directly: building one with setuptools would need PyPI."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    files = {
        f"{dist}/__init__.py": f"VERSION = {version!r}\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: sd-gke-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }

    def digest(data: bytes) -> str:
        return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

    record = "".join(f"{p},sha256={digest(d.encode())},{len(d.encode())}\n" for p, d in files.items())
    files[f"{info}/RECORD"] = record + f"{info}/RECORD,,\n"
    path = directory / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for p, d in files.items():
            zf.writestr(p, d)
    return path


def make_repo(path: Path, files: dict[str, str]) -> str:
    """A git repository with one commit holding `files`; returns the commit id."""
    path.mkdir(parents=True)
    for rel, text in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "initial"]):
        subprocess.run(["git", *argv], cwd=path, env=GIT_ENV, check=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, env=GIT_ENV, check=True,
                          capture_output=True, text=True).stdout.strip()


@dataclass(frozen=True)
class World:
    """Everything a bake reads, made once per module."""

    base: Path
    wheels: Path
    hf_endpoint: str
    webui_url: str
    webui_commit: str
    repo_url: str
    repo_commit: str
    ext_url: str
    ext_commit: str
    model_url: str
    model_sha256: str

    def recipe(self, **changes: Any) -> dict[str, Any]:
        """The small recipe that bakes; `changes` replace top-level sections."""
        recipe = {
            "python": PYTHON_MINOR,
            "torch": {"index_url": "https://download.example/whl", "packages": ["sdt-torch==2.1.2"]},
            "pip": {"index_url": "https://pypi.example/simple", "requirements": ["sdt-gradio==3.41.2"],
                    "constraints": ["sdt-numpy==1.26.2"]},
            "webui": {"repository": self.webui_url, "commit": self.webui_commit,
                      "repositories": [{"name": "k-diffusion", "repository": self.repo_url,
                                        "commit": self.repo_commit}]},
            "extensions": [{"name": "ext-a", "repository": self.ext_url, "commit": self.ext_commit}],
            "models": [{"url": self.model_url, "sha256": self.model_sha256,
                        "destination": "models/Stable-diffusion/tiny.safetensors"}],
            "huggingface": [{"repo": "openai/clip-test", "revision": HF_REVISION,
                             "files": ["config.json", "vocab.json"]}],
        }
        recipe.update(changes)
        return recipe


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return build_world(tmp_path_factory.mktemp("world"))


def build_world(base: Path) -> World:
    wheels = base / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "sdt-torch", "2.1.2", ("sdt-numpy",))
    make_wheel(wheels, "sdt-numpy", "1.26.2")
    make_wheel(wheels, "sdt-numpy", "2.0.0")
    make_wheel(wheels, "sdt-gradio", "3.41.2", ("sdt-numpy>=1",))
    make_wheel(wheels, "sdt-old", "1.0", ("sdt-numpy<2",))
    make_wheel(wheels, "sdt-needs-old-numpy", "1.0", ("sdt-numpy==1.0",))
    make_wheel(wheels, "sdt-numpy", "1.0")
    make_wheel(wheels, "sdt-pulls-extra", "1.0", ("sdt-extra",))
    make_wheel(wheels, "sdt-extra", "1.0")
    webui_commit = make_repo(base / "src" / "webui", {
        "launch.py": "print('launch')\n",
        "modules/paths.py": "SCRIPT = 'paths'\n",
        "webui-user.sh": "#!/bin/bash\n# upstream template\n",
        "test/bad_syntax.py": "def broken(:\n",
    })
    repo_commit = make_repo(base / "src" / "k-diffusion", {"k_diffusion/__init__.py": "K = 1\n"})
    ext_commit = make_repo(base / "src" / "ext-a", {"scripts/ext.py": "EXT = 1\n"})
    model = base / "files" / "tiny.safetensors"
    model.parent.mkdir()
    model.write_bytes(os.urandom(4096))
    hf = base / "hf" / "openai" / "clip-test" / "resolve" / HF_REVISION
    hf.mkdir(parents=True)
    (hf / "config.json").write_text('{"model_type": "clip_text_model"}\n')
    (hf / "vocab.json").write_text('{"a": 0}\n')
    return World(
        base=base, wheels=wheels, hf_endpoint=(base / "hf").as_uri(),
        webui_url=(base / "src" / "webui").as_uri(), webui_commit=webui_commit,
        repo_url=(base / "src" / "k-diffusion").as_uri(), repo_commit=repo_commit,
        ext_url=(base / "src" / "ext-a").as_uri(), ext_commit=ext_commit,
        model_url=model.as_uri(), model_sha256=hashlib.sha256(model.read_bytes()).hexdigest(),
    )


@dataclass(frozen=True)
class Result:
    code: int
    steps: list[dict[str, Any]]
    stderr: str
    progress: list[str]

    @property
    def last_error_line(self) -> str:
        return self.stderr.strip().splitlines()[-1]

    def status(self, step: str) -> str:
        return next(s["status"] for s in self.steps if s["step"] == step)


@dataclass(frozen=True)
class Running:
    """A bake started in the background: bakes that each need a venv run side by side."""

    proc: subprocess.Popen
    work: Path

    def result(self) -> Result:
        self.proc.wait(timeout=300)
        progress_log = self.work / "progress.log"
        progress = progress_log.read_text().splitlines() if progress_log.exists() else []
        progress_log.unlink(missing_ok=True)
        stdout = (self.work / "stdout").read_text()
        return Result(self.proc.returncode, [json.loads(line) for line in stdout.splitlines()],
                      (self.work / "stderr").read_text(), progress)


def start(world: World, recipe: dict[str, Any], root: Path, *extra: str) -> Running:
    """Run bake.py as the builder VM does, on the canonical JSON that components.recipe writes."""
    work = root.parent / f"{root.name}-work"
    work.mkdir(exist_ok=True)
    recipe_file = work / "recipe.json"
    recipe_file.write_text(parse_recipe(recipe, allow_local=True).canonical_json())
    progress_script = work / "progress.sh"
    progress_script.write_text(
        "#!/bin/sh\n"
        f"if [ -e '{root}/.sd-runtime-ready' ]; then m=marker; else m=no-marker; fi\n"
        f"echo \"$1 $2 $m\" >> '{work / 'progress.log'}'\n"
    )
    progress_script.chmod(0o755)
    with open(work / "stdout", "w") as out, open(work / "stderr", "w") as err:
        proc = subprocess.Popen(
            [BAKE_PYTHON, str(BAKE), "--recipe", str(recipe_file), "--root", str(root),
             "--base-image-digest", BASE_DIGEST, "--find-links", str(world.wheels),
             "--huggingface-endpoint", world.hf_endpoint, "--progress-cmd", str(progress_script), *extra],
            stdout=out, stderr=err, text=True,
        )
    return Running(proc, work)


def bake(world: World, recipe: dict[str, Any], root: Path, *extra: str) -> Result:
    return start(world, recipe, root, *extra).result()


def identity(recipe: dict[str, Any]) -> str:
    return recipe_hash(parse_recipe(recipe, allow_local=True), BAKE.read_bytes(), BASE_DIGEST)


def mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.lstat().st_mtime_ns for p in root.rglob("*")}


@pytest.fixture(scope="module")
def baked(world, tmp_path_factory) -> tuple[Path, Result, dict[str, Any]]:
    root = tmp_path_factory.mktemp("baked") / "runtime"
    recipe = world.recipe()
    result = bake(world, recipe, root, "--expected-hash", identity(recipe))
    assert result.code == 0, result.stderr
    return root, result, recipe


def manifest(root: Path) -> dict[str, Any]:
    return json.loads((root / "MANIFEST.json").read_text())


# --- a successful bake -----------------------------------------------------------------------

def test_every_step_runs_once_in_order_and_logs_one_json_line(baked):
    _, result, _ = baked
    assert [(s["step"], s["status"]) for s in result.steps] == [
        (name, "done") for name in ("webui", "repositories", "extensions", "models", "huggingface", "venv",
                                    "torch", "requirements", "pip-check", "webui-config", "compile",
                                    "manifest", "ready")
    ]
    assert all(isinstance(s["seconds"], float) for s in result.steps)


def test_marker_holds_the_identity_the_program_computes(baked):
    root, _, recipe = baked
    assert (root / ".sd-runtime-ready").read_text() == identity(recipe) + "\n"


def test_marker_appears_only_with_the_last_progress_report(baked):
    _, result, _ = baked
    assert result.progress[-1] == "ready done marker"
    assert all(line.endswith(" no-marker") for line in result.progress[:-1])
    assert "manifest done no-marker" in result.progress


def test_git_sources_are_checked_out_at_their_commits(baked, world):
    root, _, _ = baked
    for path, commit in ((root / "webui", world.webui_commit),
                         (root / "webui/repositories/k-diffusion", world.repo_commit),
                         (root / "webui/extensions/ext-a", world.ext_commit)):
        head = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        assert head == commit


def test_model_lands_at_its_destination_with_its_sha256(baked, world):
    root, _, _ = baked
    model = root / "models/Stable-diffusion/tiny.safetensors"
    assert hashlib.sha256(model.read_bytes()).hexdigest() == world.model_sha256
    assert not list(model.parent.glob("*.part"))


def test_huggingface_files_are_laid_out_as_the_hub_cache(baked):
    root, _, _ = baked
    repo = root / "cache/huggingface/hub/models--openai--clip-test"
    assert (repo / "refs/main").read_text() == HF_REVISION
    assert (repo / "snapshots" / HF_REVISION / "config.json").read_text() == '{"model_type": "clip_text_model"}\n'
    assert (repo / "snapshots" / HF_REVISION / "vocab.json").is_file()


def test_venv_holds_the_pinned_packages_and_what_ensurepip_seeded(baked):
    root, _, _ = baked
    m = manifest(root)
    seeded = {(p["name"], p["version"]) for p in m["seeded"]}
    assert {name for name, _ in seeded} <= {"pip", "setuptools"}
    assert {(p["name"], p["version"]) for p in m["packages"]} == seeded | {
        ("sdt-torch", "2.1.2"), ("sdt-numpy", "1.26.2"), ("sdt-gradio", "3.41.2")}


def test_bake_runs_under_the_python_of_the_runtime_recipe():
    recipe = yaml.safe_load((BAKE.parent / "recipe.yaml").read_text())
    assert PYTHON_MINOR == str(recipe["python"]), f"{BAKE_PYTHON} is Python {PYTHON_MINOR}"


def test_venv_is_made_by_the_interpreter_that_runs_the_bake(baked):
    root, _, _ = baked
    version = subprocess.run([BAKE_PYTHON, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert manifest(root)["python"] == version
    assert f"home = {Path(BAKE_PYTHON).parent}\n" in (root / "venv/pyvenv.cfg").read_text()


def test_venv_python_imports_the_baked_packages(baked):
    root, _, _ = baked
    out = subprocess.run([str(root / "venv/bin/python"), "-c", "import sdt_numpy; print(sdt_numpy.VERSION)"],
                         capture_output=True, text=True, check=True).stdout
    assert out == "1.26.2\n"


def test_webui_config_skips_environment_preparation(baked):
    root, _, _ = baked
    config = (root / "webui/webui-user.sh").read_text()
    assert '--skip-prepare-environment --skip-install' in config
    assert f"venv_dir={root}/venv" in config
    assert f"export HF_HOME={root}/cache/huggingface" in config
    assert "export HF_HUB_OFFLINE=1" in config


def test_every_path_webui_creates_at_start_is_in_the_tree(baked, bake_module):
    """Pods mount the tree read-only: what WebUI makes at start must be there (tests/test_readonly_runtime.py)."""
    root, _, _ = baked
    for write in bake_module.WEBUI_STARTUP_WRITES:
        path = bake_module.runtime_path(write)
        if path is not None:
            assert (root / path).is_dir() if write.kind == "dir" else (root / path).read_text() == write.content, path


def test_sources_are_byte_compiled(baked):
    root, _, _ = baked
    tag = sys.implementation.cache_tag
    assert (root / f"webui/modules/__pycache__/paths.{tag}.pyc").is_file()
    assert (root / f"webui/extensions/ext-a/scripts/__pycache__/ext.{tag}.pyc").is_file()


def test_files_that_do_not_compile_are_listed_not_fatal(baked):
    root, _, _ = baked
    assert manifest(root)["compile_errors"] == ["webui/test/bad_syntax.py"]


def test_manifest_records_commits_models_and_sizes(baked, world):
    root, _, recipe = baked
    m = manifest(root)
    assert m["recipe_hash"] == identity(recipe)
    assert m["python"].startswith(recipe["python"] + ".")
    assert m["webui"] == {"repository": world.webui_url, "commit": world.webui_commit}
    assert m["repositories"] == recipe["webui"]["repositories"]
    assert m["extensions"] == recipe["extensions"]
    assert m["models"] == [{"destination": "models/Stable-diffusion/tiny.safetensors",
                            "sha256": world.model_sha256, "bytes": 4096}]
    assert m["huggingface"] == recipe["huggingface"]
    assert m["launch"]["args"][0] == "--skip-prepare-environment"


def test_manifest_file_totals_match_the_tree(baked):
    root, _, _ = baked
    files = [p for p in root.rglob("*")
             if p.is_file() and not p.is_symlink() and p.relative_to(root).parts[0] not in
             (".bake", "MANIFEST.json", ".sd-runtime-ready")]
    totals = manifest(root)["files"]
    assert totals["count"] == len(files)
    assert totals["bytes"] == sum(p.stat().st_size for p in files)
    assert totals["bytes_by_top_level"]["models"] == 4096
    assert set(totals["bytes_by_top_level"]) == {"cache", "models", "venv", "webui"}


def test_rerun_with_the_same_identity_does_nothing(baked, world):
    root, _, recipe = baked
    before = mtimes(root)
    again = bake(world, recipe, root)
    assert again.code == 0
    assert [(s["step"], s["status"]) for s in again.steps] == [("ready", "unchanged")]
    assert again.progress == ["ready unchanged marker"]
    assert mtimes(root) == before


# --- failures --------------------------------------------------------------------------------

def assert_failed(result: Result, root: Path, message: str) -> None:
    assert result.code == 1
    assert result.last_error_line == message
    assert result.steps[-1]["status"] == "failed"
    assert not (root / ".sd-runtime-ready").exists()


def test_unknown_webui_commit_fails_at_webui(world, tmp_path):
    recipe = world.recipe()
    recipe["webui"]["commit"] = MISSING_COMMIT
    result = bake(world, recipe, tmp_path / "runtime")
    assert result.code == 1
    assert result.last_error_line.startswith(
        f"bake failed at webui: cannot fetch commit {MISSING_COMMIT} from {world.webui_url} "
        "(git fetch exited 128: fatal: ")
    assert result.last_error_line.endswith(f"not our ref {MISSING_COMMIT})")
    assert result.progress[-1] == "webui failed no-marker"
    assert not (tmp_path / "runtime/.sd-runtime-ready").exists()


def test_unknown_repository_commit_fails_at_repositories(world, tmp_path):
    recipe = world.recipe()
    recipe["webui"]["repositories"][0]["commit"] = MISSING_COMMIT
    result = bake(world, recipe, tmp_path / "runtime")
    assert result.code == 1
    assert result.last_error_line.startswith(
        f"bake failed at repositories: cannot fetch commit {MISSING_COMMIT} from {world.repo_url}")
    assert not (tmp_path / "runtime/.sd-runtime-ready").exists()


def test_checksum_mismatch_fails_and_leaves_no_model_file(world, tmp_path):
    recipe = world.recipe()
    recipe["models"][0]["sha256"] = "e" * 64
    result = bake(world, recipe, tmp_path / "runtime")
    assert_failed(result, tmp_path / "runtime",
                  f"bake failed at models: sha256 mismatch for {world.model_url}: expected {'e' * 64}, "
                  f"got {world.model_sha256}")
    assert not list((tmp_path / "runtime/models/Stable-diffusion").iterdir())


def test_missing_model_fails_at_models(world, tmp_path):
    recipe = world.recipe()
    missing = world.base / "files" / "absent.safetensors"
    recipe["models"][0]["url"] = missing.as_uri()
    result = bake(world, recipe, tmp_path / "runtime")
    assert_failed(result, tmp_path / "runtime",
                  f"bake failed at models: cannot download {missing.as_uri()}: "
                  f"[Errno 2] No such file or directory: '{missing}'")


def test_missing_huggingface_file_fails_at_huggingface(world, tmp_path):
    recipe = world.recipe()
    recipe["huggingface"][0]["files"] = ["tokenizer.json"]
    result = bake(world, recipe, tmp_path / "runtime")
    assert result.code == 1
    assert result.last_error_line.startswith("bake failed at huggingface: cannot download "
                                             f"{world.hf_endpoint}/openai/clip-test/resolve/{HF_REVISION}/tokenizer.json")


@pytest.fixture(scope="module")
def pip_failures(world, tmp_path_factory) -> dict[str, tuple[Path, Result]]:
    """The failures that need a venv, baked side by side, each from its own recipe into its own root."""
    conflicting = world.recipe()
    conflicting["pip"]["requirements"] = ["sdt-old==1.0"]
    conflicting["pip"]["constraints"] = ["sdt-numpy==2.0.0"]
    # sdt-needs-old-numpy comes with the torch set; a URL requirement then replaces its dependency,
    # which pip's resolver does not re-check across the two installs: pip check does.
    across_steps = world.recipe()
    across_steps["torch"]["packages"] = ["sdt-needs-old-numpy==1.0"]
    across_steps["pip"]["requirements"] = [
        f"sdt-numpy @ {(world.wheels / 'sdt_numpy-2.0.0-py3-none-any.whl').as_uri()}"]
    across_steps["pip"]["constraints"] = []
    unpinned = world.recipe()
    unpinned["pip"]["requirements"] = ["sdt-pulls-extra==1.0"]
    base = tmp_path_factory.mktemp("pip-failures")
    running = {name: (base / name, start(world, recipe, base / name))
               for name, recipe in (("conflicting", conflicting), ("across-steps", across_steps),
                                    ("unpinned", unpinned))}
    return {name: (root, run.result()) for name, (root, run) in running.items()}


def test_conflicting_pins_fail_at_requirements(pip_failures):
    root, result = pip_failures["conflicting"]
    assert result.code == 1
    assert result.last_error_line.startswith(
        "bake failed at requirements: pip install of the requirements exited 1: ERROR: Cannot install")
    assert not (root / ".sd-runtime-ready").exists()


def test_conflict_pip_misses_across_steps_fails_at_pip_check(pip_failures):
    root, result = pip_failures["across-steps"]
    assert_failed(result, root,
                  "bake failed at pip-check: pip check found 1 conflict(s): "
                  "sdt-needs-old-numpy 1.0 has requirement sdt-numpy==1.0, but you have sdt-numpy 2.0.0.")


def test_unpinned_dependency_fails_at_pip_check(pip_failures):
    root, result = pip_failures["unpinned"]
    assert_failed(result, root,
                  "bake failed at pip-check: installed but not pinned in the recipe: sdt-extra==1.0; "
                  "add them to pip.constraints")


def test_recipe_for_another_python_fails_before_anything_is_written(world, tmp_path):
    result = bake(world, world.recipe(python="3.9"), tmp_path / "runtime")
    assert_failed(result, tmp_path / "runtime",
                  f"bake failed at recipe: the recipe asks for Python 3.9 but this interpreter is {PYTHON_MINOR}; "
                  "bake with the base image's python")
    assert not (tmp_path / "runtime").exists()
    assert result.progress == ["recipe failed no-marker"]


def test_identity_other_than_expected_fails_at_recipe(world, tmp_path):
    recipe = world.recipe()
    result = bake(world, recipe, tmp_path / "runtime", "--expected-hash", "f" * 64)
    assert_failed(result, tmp_path / "runtime",
                  f"bake failed at recipe: identity {identity(recipe)} differs from --expected-hash {'f' * 64}: "
                  "the recipe, this script or the base image digest is not what the program hashed")


def test_root_with_foreign_files_is_refused_and_left_alone(world, tmp_path):
    root = tmp_path / "runtime"
    root.mkdir()
    (root / "precious.txt").write_text("keep me")
    result = bake(world, world.recipe(), root)
    assert_failed(result, root, f"bake failed at prepare: root {root} holds precious.txt and no bake state; "
                                "expected an empty directory or a tree this script baked")
    assert (root / "precious.txt").read_text() == "keep me"


def test_lost_and_found_of_a_fresh_disk_is_not_foreign(world, tmp_path):
    root = tmp_path / "runtime"
    (root / "lost+found").mkdir(parents=True)
    recipe = world.recipe(models=[{"url": (world.base / "absent").as_uri(), "sha256": "e" * 64,
                                   "destination": "models/x.safetensors"}])
    result = bake(world, recipe, root)
    assert result.status("webui") == "done"
    assert (root / "lost+found").is_dir()


# --- re-runs after a failure -----------------------------------------------------------------

def test_rerun_after_a_failure_keeps_finished_steps_and_completes(world, tmp_path):
    root = tmp_path / "runtime"
    late = world.base / "files" / "late.safetensors"
    late.unlink(missing_ok=True)
    recipe = world.recipe(models=[{"url": late.as_uri(), "sha256": world.model_sha256,
                                   "destination": "models/Stable-diffusion/late.safetensors"}])
    first = bake(world, recipe, root)
    assert first.code == 1 and first.steps[-1]["step"] == "models"
    cloned = (root / "webui/.git/HEAD").stat().st_mtime_ns
    late.write_bytes((world.base / "files" / "tiny.safetensors").read_bytes())
    second = bake(world, recipe, root)
    assert second.code == 0, second.stderr
    assert [s["status"] for s in second.steps[:3]] == ["kept", "kept", "kept"]
    assert second.status("models") == "done"
    assert (root / "webui/.git/HEAD").stat().st_mtime_ns == cloned
    assert (root / ".sd-runtime-ready").read_text() == identity(recipe) + "\n"


def test_tree_of_another_identity_is_wiped_before_baking(world, tmp_path):
    root = tmp_path / "runtime"
    absent = [{"url": (world.base / "absent").as_uri(), "sha256": "e" * 64, "destination": "models/x.bin"}]
    bake(world, world.recipe(models=absent), root)
    assert (root / "webui/extensions/ext-a").is_dir()
    second = bake(world, world.recipe(models=absent, extensions=[]), root)
    assert second.status("webui") == "done"
    assert not (root / "webui/extensions/ext-a").exists()


# --- downloads over HTTP ---------------------------------------------------------------------

@pytest.fixture
def bake_module(monkeypatch):
    """bake.py imported in-process, with no pause between download attempts."""
    spec = importlib.util.spec_from_file_location("bake_in_process", BAKE)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "DOWNLOAD_BACKOFF_SECONDS", 0.0)
    return module


@pytest.fixture
def flaky_server():
    """127.0.0.1 server answering each GET with the next (status, body) of its script."""
    script: list[tuple[int, bytes]] = []
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server hook name
            requests.append(self.path)
            status, body = script.pop(0)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", script, requests
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_transient_http_errors_are_retried(bake_module, flaky_server, tmp_path):
    url, script, requests = flaky_server
    script.extend([(503, b"busy"), (429, b"slow down"), (200, b"weights")])
    runner = bake_module.Bake({}, tmp_path, "0" * 64, err=io.StringIO())
    runner.download(f"{url}/m.bin", tmp_path / "m.bin", hashlib.sha256(b"weights").hexdigest())
    assert (tmp_path / "m.bin").read_bytes() == b"weights"
    assert requests == ["/m.bin"] * 3


def test_http_not_found_fails_without_retry(bake_module, flaky_server, tmp_path):
    url, script, requests = flaky_server
    script.append((404, b"no"))
    runner = bake_module.Bake({}, tmp_path, "0" * 64, err=io.StringIO())
    with pytest.raises(bake_module.BakeError) as err:
        runner.download(f"{url}/m.bin", tmp_path / "m.bin")
    assert str(err.value) == f"cannot download {url}/m.bin: HTTP 404 Not Found"
    assert requests == ["/m.bin"]
    assert not list(tmp_path.iterdir())


def test_persistent_server_errors_fail_after_the_last_attempt(bake_module, flaky_server, tmp_path):
    url, script, requests = flaky_server
    script.extend([(500, b"down")] * bake_module.DOWNLOAD_ATTEMPTS)
    runner = bake_module.Bake({}, tmp_path, "0" * 64, err=io.StringIO())
    with pytest.raises(bake_module.BakeError) as err:
        runner.download(f"{url}/m.bin", tmp_path / "m.bin")
    assert str(err.value) == f"cannot download {url}/m.bin: HTTP 500 Internal Server Error"
    assert len(requests) == bake_module.DOWNLOAD_ATTEMPTS
