"""The Artifact Registry repository and the images built into it."""

from __future__ import annotations

import pytest

from components import registry as registry_module
from components.base_image import CONTEXT, python_version

IMAGE = "docker-build:index:Image"


def repository(run) -> dict:
    return run.one("gcp:artifactregistry/repository:Repository", "sd-repository").inputs


def test_repository_is_a_regional_docker_repository(run):
    from tests.test_cluster import stack_config

    repo = repository(run)
    assert repo["format"] == "DOCKER" and repo["location"] == stack_config(run).region


def test_repository_cleans_up_old_and_untagged_images(run):
    policies = {p["id"]: p for p in repository(run)["cleanupPolicies"]}
    assert policies["keep-recent"] == {"id": "keep-recent", "action": "KEEP",
                                       "mostRecentVersions": {"keepCount": registry_module.KEEP_RECENT_VERSIONS}}
    assert policies["delete-old-untagged"]["condition"] == {"tagState": "UNTAGGED", "olderThan": "2592000s"}
    assert repository(run)["cleanupPolicyDryRun"] is False


@pytest.mark.parametrize("name, image", [("base-image", "sd-base"), ("runtime-disk-image", "sd-disk-attacher")])
def test_images_are_built_for_amd64_pushed_and_never_built_on_preview(run, name, image):
    built = run.one(IMAGE, name).inputs
    assert built["push"] is True
    assert built["buildOnPreview"] is False, "a preview needs no Docker engine"
    assert built["platforms"] == ["linux/amd64"]
    assert built["tags"][0].split(":")[0].endswith(f"/sd-images/{image}")


@pytest.mark.parametrize("name", ["base-image", "runtime-disk-image"])
def test_images_use_a_registry_build_cache(run, name):
    built = run.one(IMAGE, name).inputs
    cache = built["tags"][0].rsplit(":", 1)[0] + ":buildcache"
    assert built["cacheFrom"] == [{"registry": {"ref": cache}}]
    assert built["cacheTo"][0]["registry"]["ref"] == cache and built["cacheTo"][0]["registry"]["mode"] == "max"


@pytest.mark.parametrize("name", ["base-image", "runtime-disk-image"])
def test_images_push_with_a_short_lived_token(run, name):
    [registry] = run.one(IMAGE, name).inputs["registries"]
    assert registry["username"] == "oauth2accesstoken"
    assert registry["address"].endswith("-docker.pkg.dev")


def test_image_tag_follows_the_build_context(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    before = registry_module.context_hash(tmp_path)
    (tmp_path / "extra.txt").write_text("x")
    assert registry_module.context_hash(tmp_path) != before


def test_image_tag_ignores_python_caches(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    before = registry_module.context_hash(tmp_path)
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert registry_module.context_hash(tmp_path) == before


def test_base_image_python_comes_from_its_dockerfile_label():
    assert python_version((CONTEXT / "Dockerfile").read_text()) == "3.11"


def test_a_dockerfile_without_the_python_label_is_refused():
    with pytest.raises(ValueError, match="io.sd-gke.python"):
        python_version("FROM debian\n")


@pytest.mark.parametrize("name", ["base-image", "runtime-disk-image"])
def test_registry_token_is_a_secret(run, name):
    [registry] = run.one(IMAGE, name).redacted["registries"]
    assert registry["password"] == "[secret]"
