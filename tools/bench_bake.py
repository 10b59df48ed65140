"""Benchmark: bake the default recipe's Python packages into build/bench/runtime, with the bake's own
code, and report the tree's size and the time each step took.

    python -m tools.bench_bake --torch-from-pypi

Only the Python half of the bake runs (venv, torch, requirements, pip-check, compile): the git sources
(WebUI, its repositories, extensions, and the CLIP archive requirement) live on GitHub, which the
development machines cannot reach, and the model and Hugging Face files are plain downloads whose
size the recipe already states. The recipe's torch index (download.pytorch.org) is unreachable here
too: --torch-from-pypi installs the same pins from PyPI instead, whose torch 2.1.2 for Linux is also
the CUDA 12.1 build, with the CUDA libraries as nvidia-* wheels. The substitution is recorded in the
result. Writes build/bench/bake.json and prints it; pip's output goes to build/bench/bake.log.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from importlib.metadata import distributions
from pathlib import Path
from types import ModuleType
from typing import Any

from components.recipe import load_recipe, normalize_name
from components.source import load_source

ROOT = Path(__file__).resolve().parent.parent
BAKE = ROOT / "images" / "runtime" / "bake.py"
DEFAULT_RECIPE = ROOT / "images" / "runtime" / "recipe.yaml"
OUT = ROOT / "build" / "bench"
PUBLISHED_IMAGE_BYTES = 6.77e9
"""The disk image of the published design (Google Cloud, 2023): PyTorch, WebUI and extensions."""
PYTHON_STEPS = ("venv", "torch", "requirements", "pip-check", "compile")
PYPI = "https://pypi.org/simple"
KNOWN_MODEL_BYTES = {"6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa": 4_265_146_304}
"""Sizes of models the recipe pins (by sha256), as published: the benchmark does not download them."""
_DOWNLOAD = re.compile(r"Downloading (\S+) \(([0-9.]+) (kB|MB|GB)\)")
_UNITS = {"kB": 1e3, "MB": 1e6, "GB": 1e9}


def load_bake() -> ModuleType:
    return load_source(BAKE, "bake")


def bench_recipe(recipe: dict[str, Any], torch_from_pypi: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The recipe minus what needs GitHub; returns it with a record of every change made."""
    recipe = json.loads(json.dumps(recipe))
    git_requirements = [r for r in recipe["pip"]["requirements"] if " @ " in r]
    recipe["pip"]["requirements"] = [r for r in recipe["pip"]["requirements"] if " @ " not in r]
    changes: dict[str, Any] = {
        "skipped_steps": ["webui", "repositories", "extensions", "models", "huggingface", "webui-config"],
        "skipped_requirements": git_requirements,
        "torch_index": recipe["torch"]["index_url"],
    }
    if torch_from_pypi:
        changes["torch_index"] = PYPI
        changes["substitution"] = (
            f"the torch set {', '.join(recipe['torch']['packages'])} came from {PYPI} instead of "
            f"{recipe['torch']['index_url']} (unreachable here): the same versions, but PyPI's Linux torch "
            "wheels take their CUDA libraries from nvidia-* wheels instead of bundling them"
        )
        recipe["torch"]["index_url"] = PYPI
    return recipe, changes


def distribution_sizes(site_packages: Path) -> list[dict[str, Any]]:
    """Bytes per installed distribution, from the files its RECORD lists (byte-code included)."""
    sizes = []
    for dist in distributions(path=[str(site_packages)]):
        total = 0
        for f in dist.files or []:
            path = Path(dist.locate_file(f))
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        sizes.append({"name": dist.metadata["Name"], "version": dist.version, "bytes": total})
    return sorted(sizes, key=lambda d: -d["bytes"])


def downloaded(log: str) -> dict[str, Any]:
    """What pip fetched, from its own log lines: what a pip cache in the image would hold again."""
    files = {m.group(1): float(m.group(2)) * _UNITS[m.group(3)] for m in _DOWNLOAD.finditer(log)}
    return {"count": len(files), "bytes": int(sum(files.values()))}


def pycache_bytes(tree: Path) -> int:
    return sum(p.stat().st_size for p in tree.rglob("*.pyc") if p.is_file())


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def comparison(result: dict[str, Any], model_bytes: int | None) -> list[str]:
    venv = result["tree"]["bytes_by_top_level"].get("venv", 0)
    nvidia = sum(d["bytes"] for d in result["distributions"] if normalize_name(d["name"]).startswith("nvidia-"))
    torch_family = sum(d["bytes"] for d in result["distributions"]
                       if normalize_name(d["name"]) in ("torch", "torchvision", "xformers", "triton"))
    return [
        (f"The Python tree is {gb(venv)} ({result['tree']['count']} files) against the published "
        f"{gb(PUBLISHED_IMAGE_BYTES)} disk image; the recipe's models add "
        f"{gb(model_bytes) if model_bytes is not None else 'an unknown size'} and the shallow git sources "
        "(WebUI and five repositories at one commit each) add tens of MB."),
        (f"torch, torchvision, xformers and triton take {gb(torch_family)}, and the CUDA user-space "
        f"libraries (nvidia-* wheels) {gb(nvidia)}: they live only here, so the base container needs the "
        "driver GKE mounts and no CUDA toolkit or cuDNN layer, which would hold the same libraries twice."),
        ("No pip cache and no wheel files are kept (pip --no-cache-dir): an image built with pip's default "
        f"cache would hold the {result['downloaded']['count']} downloaded files again, "
        f"{gb(result['downloaded']['bytes'])} compressed, beside the installed tree."),
        ("One venv, at the mount path, without pip or ensurepip's setuptools: WebUI's own venv/ under "
        "webui/ is never created, and nothing is installed twice (no user site, no system site-packages)."),
        "Git sources are fetched at depth 1: no history, no other branches or tags in the image.",
        (f"Byte-code is compiled once, into the image ({gb(result['pycache_bytes'])} of .pyc), so a read-only "
        "mount never recompiles and nothing is written at import."),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-from-pypi", action="store_true",
                        help="install the recipe's torch pins from PyPI instead of its (unreachable) torch index")
    parser.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE)
    args = parser.parse_args(argv)
    # As on the builder VM: no pip config, no local wheel mirrors; everything comes from the indexes.
    os.environ["PIP_CONFIG_FILE"] = os.devnull
    os.environ.pop("PIP_FIND_LINKS", None)

    bake = load_bake()
    recipe = load_recipe(args.recipe)
    bench, changes = bench_recipe(recipe.to_dict(), args.torch_from_pypi)
    root = OUT / "runtime"
    if root.exists():
        shutil.rmtree(root)
    (root / bake.STATE / "steps").mkdir(parents=True)
    (root / "webui").mkdir()
    OUT.mkdir(parents=True, exist_ok=True)
    log_path = OUT / "bake.log"
    steps: dict[str, float] = {}
    failure = None
    with open(log_path, "w") as log:
        runner = bake.Bake(bench, root, "bench", out=log, err=log)
        began = time.monotonic()
        for step in runner.steps:
            if step.name not in PYTHON_STEPS:
                continue
            print(f"bench: {step.name} ...", file=sys.stderr, flush=True)
            start = time.monotonic()
            try:
                step.run()
            except bake.BakeError as e:
                failure = f"{step.name}: {e}"
                break
            finally:
                steps[step.name] = round(time.monotonic() - start, 1)
        total = round(time.monotonic() - began, 1)
    (root / "webui").rmdir()
    site_packages = next((root / "venv" / "lib").glob("python*/site-packages"), None)
    result: dict[str, Any] = {
        "recipe": str(args.recipe),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        **changes,
        "failure": failure,
        "seconds_by_step": steps,
        "seconds_total": total,
        "tree": bake.tree_size(root, skip=(bake.STATE,)),
        "pycache_bytes": pycache_bytes(root / "venv"),
        "unpinned": runner.unpinned() if failure is None else None,
        "compile_errors": runner.compile_errors,
        "distributions": distribution_sizes(site_packages) if site_packages else [],
        "downloaded": downloaded(log_path.read_text()),
        "published_image_bytes": PUBLISHED_IMAGE_BYTES,
    }
    sizes = [KNOWN_MODEL_BYTES.get(m.sha256) for m in recipe.models]
    result["comparison"] = comparison(result, None if None in sizes else sum(sizes))
    (OUT / "bake.json").write_text(json.dumps(result, indent=2) + "\n")
    summary = {k: v for k, v in result.items() if k != "distributions"}
    summary["largest_distributions"] = result["distributions"][:10]
    print(json.dumps(summary, indent=2))
    return 0 if failure is None else 1


if __name__ == "__main__":
    sys.exit(main())
