"""The runtime recipe: validation (every problem, with key path, value and what is allowed) and the
identity hash that names the runtime image."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from components.recipe import (
    Recipe,
    RecipeError,
    identity_hash,
    image_name,
    load_recipe,
    parse_recipe,
    recipe_hash,
)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RECIPE = ROOT / "images" / "runtime" / "recipe.yaml"
BAKE = ROOT / "images" / "runtime" / "bake.py"
DIGEST = "sha256:" + "a" * 64
COMMIT = "82a973c04367123ae98bd9abdf80d9eda9b910e2"
SHA = "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa"
PIN = "an exact pin NAME==VERSION such as numpy==1.26.2"
COMMIT_TEXT = "a full commit id: 40 lowercase hex digits"
DESTINATION_TEXT = ("a relative path inside /runtime such as models/Stable-diffusion/x.safetensors, without '..', "
                    "not under venv, webui, cache, MANIFEST.json")


def valid() -> dict[str, Any]:
    return {
        "python": "3.11",
        "torch": {"index_url": "https://download.pytorch.org/whl/cu121",
                  "packages": ["torch==2.1.2", "torchvision==0.16.2"]},
        "pip": {"index_url": "https://pypi.org/simple",
                "requirements": ["numpy==1.26.2", "clip @ https://github.com/openai/CLIP/archive/d50d76d.zip"],
                "constraints": ["six==1.16.0"]},
        "webui": {"repository": "https://github.com/AUTOMATIC1111/stable-diffusion-webui.git", "commit": COMMIT,
                  "repositories": [{"name": "k-diffusion", "repository": "https://github.com/crowsonkb/k-diffusion.git",
                                    "commit": "ab527a9a6d347f364e3d185ba6d714e22d80cb3c"}]},
        "extensions": [],
        "models": [{"url": "https://huggingface.co/x/y/resolve/main/m.safetensors", "sha256": SHA,
                    "destination": "models/Stable-diffusion/m.safetensors"}],
        "huggingface": [{"repo": "openai/clip-vit-large-patch14", "revision": "32bd64288804d66eefd0ccbe215aa642df71cc41",
                         "files": ["vocab.json", "merges.txt"]}],
    }


def changed(path: str, value: Any) -> dict[str, Any]:
    """valid() with one value replaced (or removed, for value=DELETE); path like 'models.0.sha256'."""
    data = valid()
    *parents, last = path.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) else last
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
    return data


DELETE = object()

BAD = [
    ("python as a number", changed("python", 3.11),
     'python: 3.11 is not allowed; expected a Python minor version as a string, such as "3.11"'),
    ("python without a minor", changed("python", "3"),
     'python: "3" is not allowed; expected a Python minor version as a string, such as "3.11"'),
    ("short commit", changed("webui.commit", "82a973c"),
     f'webui.commit: "82a973c" is not allowed; expected {COMMIT_TEXT}'),
    ("upper-case commit", changed("webui.commit", COMMIT.upper()),
     f'webui.commit: "{COMMIT.upper()}" is not allowed; expected {COMMIT_TEXT}'),
    ("repository commit as a branch", changed("webui.repositories.0.commit", "master"),
     f'webui.repositories[0].commit: "master" is not allowed; expected {COMMIT_TEXT}'),
    ("short sha256", changed("models.0.sha256", SHA[:-1]),
     f'models[0].sha256: "{SHA[:-1]}" is not allowed; expected the file\'s sha256: 64 lowercase hex digits'),
    ("absolute destination", changed("models.0.destination", "/runtime/models/m.safetensors"),
     f'models[0].destination: "/runtime/models/m.safetensors" is not allowed; expected {DESTINATION_TEXT}'),
    ("destination climbing out", changed("models.0.destination", "models/../../etc/passwd"),
     f'models[0].destination: "models/../../etc/passwd" is not allowed; expected {DESTINATION_TEXT}'),
    ("destination inside the venv", changed("models.0.destination", "venv/lib/m.safetensors"),
     f'models[0].destination: "venv/lib/m.safetensors" is not allowed; expected {DESTINATION_TEXT}'),
    ("plain http model", changed("models.0.url", "http://example.com/m.safetensors"),
     ('models[0].url: "http://example.com/m.safetensors" is not allowed; expected a download URL starting with '
     "https://")),
    ("local model outside tests", changed("models.0.url", "file:///tmp/m.safetensors"),
     'models[0].url: "file:///tmp/m.safetensors" is not allowed; expected a download URL starting with https://'),
    ("git over ssh", changed("webui.repository", "git@github.com:AUTOMATIC1111/stable-diffusion-webui.git"),
     ('webui.repository: "git@github.com:AUTOMATIC1111/stable-diffusion-webui.git" is not allowed; expected a git '
     "repository URL starting with https://")),
    ("torch range", changed("torch.packages", ["torch>=2.1"]),
     f'torch.packages[0]: "torch>=2.1" is not allowed; expected {PIN}'),
    ("no torch set", changed("torch.packages", []),
     "torch.packages: [] is not allowed; expected a non-empty list of exact pins"),
    ("unpinned requirement", changed("pip.requirements", ["numpy"]),
     f'pip.requirements[0]: "numpy" is not allowed; expected {PIN}, or NAME @ URL of an archive pinned by commit'),
    ("wildcard constraint", changed("pip.constraints", ["six==1.*"]),
     f'pip.constraints[0]: "six==1.*" is not allowed; expected {PIN}'),
    ("archive over http", changed("pip.requirements", ["clip @ http://example.com/clip.zip"]),
     ('pip.requirements[0]: "http://example.com/clip.zip" is not allowed; expected a pinned archive URL starting with '
     "https://")),
    ("distribution pinned twice", changed("pip.constraints", ["NumPy==1.26.3"]),
     ('pip.constraints[0]: "NumPy==1.26.3" is not allowed; expected each distribution pinned once; numpy is already '
     "pinned at pip.requirements[0]")),
    ("unknown top-level key", changed("extras", 1),
     "extras: unknown key (value 1); allowed keys are extensions, huggingface, models, pip, python, torch, webui"),
    ("unknown nested key", changed("torch.extra_index_url", "https://pypi.org/simple"),
     'torch.extra_index_url: unknown key (value "https://pypi.org/simple"); allowed keys are index_url, packages'),
    ("missing section", changed("webui", DELETE), "webui: missing; it is required"),
    ("missing model hash", changed("models.0.sha256", DELETE), "models[0].sha256: missing; it is required"),
    ("extension name with a slash", changed("extensions", [{"name": "../x", "repository": "https://github.com/a/b.git",
                                                             "commit": COMMIT}]),
     ("extensions[0].name: \"../x\" is not allowed; expected a directory name: letters, digits, '.', '_' or '-', "
     "not starting with '.'")),
    ("revision as a branch", changed("huggingface.0.revision", "main"),
     f'huggingface[0].revision: "main" is not allowed; expected {COMMIT_TEXT}'),
    ("no Hugging Face files", changed("huggingface.0.files", []),
     "huggingface[0].files: [] is not allowed; expected a non-empty list of file paths"),
    ("Hugging Face repo without org", changed("huggingface.0.repo", "clip"),
     'huggingface[0].repo: "clip" is not allowed; expected a model repository id such as org/name'),
    ("section as a list", changed("pip", ["numpy==1.26.2"]),
     'pip: ["numpy==1.26.2"] is not allowed; expected a mapping with keys constraints, index_url, requirements'),
]


@pytest.mark.parametrize("data, message", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_recipe_is_rejected_with_one_exact_message(data, message):
    with pytest.raises(RecipeError) as err:
        parse_recipe(data)
    assert err.value.problems == [message]


def test_valid_recipe_parses():
    assert isinstance(parse_recipe(valid()), Recipe)


def test_every_problem_is_reported_together():
    data = changed("python", "2.7")
    data["webui"]["commit"] = "abc"
    data["models"][0]["sha256"] = "x"
    with pytest.raises(RecipeError) as err:
        parse_recipe(data)
    assert [p.split(":")[0] for p in err.value.problems] == ["python", "webui.commit", "models[0].sha256"]
    assert str(err.value).startswith("3 problem(s) in the runtime recipe:\n  - python: ")


def test_duplicate_destinations_are_rejected():
    data = valid()
    data["models"].append(dict(data["models"][0], url="https://example.com/other.safetensors"))
    with pytest.raises(RecipeError) as err:
        parse_recipe(data)
    assert err.value.problems == [
        ('models[1].destination: "models/Stable-diffusion/m.safetensors" is not allowed; expected a value not used '
        "by another entry of models")]


def test_local_urls_are_allowed_only_when_asked():
    data = changed("models.0.url", "file:///tmp/m.safetensors")
    data["webui"]["repository"] = "file:///tmp/webui"
    assert parse_recipe(data, allow_local=True).models[0].url == "file:///tmp/m.safetensors"


def test_missing_optional_sections_default_to_empty():
    data = valid()
    for key in ("extensions", "models", "huggingface"):
        del data[key]
    recipe = parse_recipe(data)
    assert (recipe.extensions, recipe.models, recipe.huggingface) == ((), (), ())


def test_recipe_is_frozen():
    recipe = parse_recipe(valid())
    with pytest.raises(AttributeError):
        recipe.python = "3.12"  # type: ignore[misc]


def test_yaml_syntax_error_names_the_file(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("python: [3.11\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert err.value.problems[0].startswith(f"{path}: is not valid YAML (")
    assert err.value.problems[0].endswith("; expected a YAML mapping")


def test_missing_file_is_a_recipe_error(tmp_path):
    with pytest.raises(RecipeError) as err:
        load_recipe(tmp_path / "absent.yaml")
    assert err.value.problems == [
        f"{tmp_path / 'absent.yaml'}: cannot be read (No such file or directory); expected a readable recipe file"]


# --- the default recipe ----------------------------------------------------------------------

def test_default_recipe_is_valid():
    recipe = load_recipe(DEFAULT_RECIPE)
    assert recipe.python == "3.11"
    assert recipe.webui.commit == COMMIT


def test_default_recipe_pins_the_torch_set_of_webui_1_10_1():
    recipe = load_recipe(DEFAULT_RECIPE)
    assert recipe.torch.packages == ("torch==2.1.2", "torchvision==0.16.2", "xformers==0.0.23.post1")
    assert recipe.torch.index_url == "https://download.pytorch.org/whl/cu121"


def test_default_recipe_clones_what_webui_prepare_environment_would():
    names = [s.name for s in load_recipe(DEFAULT_RECIPE).webui.repositories]
    assert names == ["stable-diffusion-webui-assets", "stable-diffusion-stability-ai", "generative-models",
                     "k-diffusion", "BLIP"]


def test_default_recipe_caches_the_clip_tokenizer_at_a_commit():
    (hf,) = load_recipe(DEFAULT_RECIPE).huggingface
    assert hf.repo == "openai/clip-vit-large-patch14"
    assert {"vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"} <= set(hf.files)


# --- canonical form and identity -------------------------------------------------------------

def test_canonical_json_has_sorted_keys_and_no_whitespace():
    text = parse_recipe(valid()).canonical_json()
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    assert list(json.loads(text)) == sorted(json.loads(text))


def test_canonical_json_reads_back_as_the_same_recipe():
    recipe = parse_recipe(valid())
    assert parse_recipe(json.loads(recipe.canonical_json())) == recipe


def test_canonical_json_ignores_yaml_layout_and_defaults(tmp_path):
    data = valid()
    data["extensions"] = []
    reordered = dict(reversed(list(data.items())))
    del reordered["extensions"]
    path = tmp_path / "recipe.yaml"
    path.write_text("# comment\n" + json.dumps(reordered, indent=4))
    assert load_recipe(path).canonical_json() == parse_recipe(data).canonical_json()


def test_hash_is_stable_across_processes():
    """Nothing in the hash depends on dict order or the interpreter's hash seed."""
    code = ("from components.recipe import load_recipe, recipe_hash; "
            f"print(recipe_hash(load_recipe({str(DEFAULT_RECIPE)!r}), b'script', {DIGEST!r}))")
    outputs = {
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip()
        for seed in ("1", "2")
    }
    assert outputs == {recipe_hash(load_recipe(DEFAULT_RECIPE), b"script", DIGEST)}


@pytest.mark.parametrize("path, value", [
    ("python", "3.12"),
    ("torch.packages", ["torch==2.1.1", "torchvision==0.16.2"]),
    ("pip.constraints", ["six==1.16.1"]),
    ("webui.commit", "0" * 40),
    ("models.0.sha256", "0" * 64),
    ("huggingface.0.files", ["vocab.json"]),
])
def test_hash_changes_with_the_recipe(path, value):
    assert recipe_hash(parse_recipe(changed(path, value)), b"script", DIGEST) != \
        recipe_hash(parse_recipe(valid()), b"script", DIGEST)


def test_hash_changes_with_the_bake_script():
    recipe = parse_recipe(valid())
    assert recipe_hash(recipe, b"script", DIGEST) != recipe_hash(recipe, b"script ", DIGEST)


def test_hash_changes_with_the_base_image_digest():
    recipe = parse_recipe(valid())
    assert recipe_hash(recipe, b"script", DIGEST) != recipe_hash(recipe, b"script", "sha256:" + "b" * 64)


def test_hash_parts_cannot_run_into_each_other():
    """Moving a byte from the end of one part to the start of the next is another identity."""
    assert identity_hash("{}", b"ab", "c") != identity_hash("{}", b"a", "bc")
    assert identity_hash("{}a", b"b", "c") != identity_hash("{}", b"ab", "c")


def test_base_image_digest_must_be_a_sha256_digest():
    with pytest.raises(RecipeError) as err:
        recipe_hash(parse_recipe(valid()), b"script", "latest")
    assert err.value.problems == [
        'base_image_digest: "latest" is not allowed; expected sha256: and 64 lowercase hex digits']


def test_image_name_is_the_prefix_and_twelve_hash_characters():
    identity = recipe_hash(parse_recipe(valid()), b"script", DIGEST)
    assert image_name(identity) == "sd-runtime-" + identity[:12]


def test_bake_script_computes_the_same_identity(monkeypatch):
    """The bake runs without this module (no PyYAML on the builder): its hash of the recipe as this
    module serialises it is the hash the program names the image by."""
    spec = importlib.util.spec_from_file_location("bake_under_test", BAKE)
    bake = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bake)
    spec.loader.exec_module(bake)
    recipe = parse_recipe(copy.deepcopy(valid()))
    canonical = bake.canonical_json(json.loads(recipe.canonical_json()))
    assert bake.identity_hash(canonical, b"script", DIGEST) == recipe_hash(recipe, b"script", DIGEST)
