"""RuntimeDiskImage under Pulumi mocks: what it registers, the image's identity, and what it refuses."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pulumi
import pytest

from components.recipe import BAKE_SCRIPT, load_recipe, parse_recipe
from components.runtime_identity import runtime_identity
from components.runtime_image import RuntimeDiskImage, RuntimeDiskImageArgs
from tests.test_runtime_bake import BASE, DIGEST, RECIPE, Z2, P, Z
from tools import mockrun


class _Recorder(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[pulumi.runtime.MockResourceArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(args)
        state = dict(args.inputs)
        if args.typ == "gcp:serviceaccount/account:Account":
            state["email"] = f"{args.inputs['accountId']}@{P}.iam.gserviceaccount.com"
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        raise NotImplementedError(args.token)


def component_args(**changes: Any) -> RuntimeDiskImageArgs:
    args = RuntimeDiskImageArgs(project=P, zone=Z, recipe_path=RECIPE, base_image=BASE, base_python="3.11",
                                subnetwork=f"projects/{P}/regions/us-central1/subnetworks/sd-subnet",
                                machine_type="e2-standard-8", disk_size_gb=50, timeout_minutes=90, node_zones=[Z, Z2])
    return replace(args, **changes)


def start_mocks() -> _Recorder:
    """Pulumi's mocks on this thread's event loop, which an `asyncio.run` earlier in the process (another
    test file on the same xdist worker) leaves unset."""
    mockrun.ensure_event_loop()
    recorder = _Recorder()
    pulumi.runtime.set_mocks(recorder, project="sd-gke", stack="test", preview=False)
    return recorder


@pytest.fixture
def mocks() -> _Recorder:
    return start_mocks()


@pulumi.runtime.test
def test_component_registers_the_image_with_its_identity_hash(mocks):
    component = RuntimeDiskImage("sd-runtime", component_args())
    expected = runtime_identity(load_recipe(RECIPE), BAKE_SCRIPT.read_bytes(), BASE)

    def check(values: list[Any]) -> None:
        identity, hash12, name = values
        [image] = [r for r in mocks.resources if r.typ == "pulumi-python:dynamic:Resource"]
        assert image.name == "sd-runtime-image"
        assert image.inputs["identity_hash"] == identity == expected
        assert image.inputs["image_name"] == name == f"sd-runtime-{expected[:12]}"
        assert hash12 == expected[:12]
        assert image.inputs["timeout_seconds"] == 90 * 60
        assert image.inputs["service_account_email"] == f"sd-runtime-builder@{P}.iam.gserviceaccount.com"
        roles = sorted(r.inputs["role"] for r in mocks.resources if r.typ == "gcp:projects/iAMMember:IAMMember")
        assert roles == ["roles/artifactregistry.reader", "roles/logging.logWriter"]
        types = {r.typ for r in mocks.resources}
        assert "sdgke:runtime_image:RuntimeDiskImage" in types

    return pulumi.Output.all(component.identity_hash, component.hash12, component.image_name).apply(check)


def test_the_mocks_start_after_an_earlier_asyncio_run_left_the_thread_without_a_loop():
    asyncio.run(asyncio.sleep(0))
    assert isinstance(start_mocks(), _Recorder)


def test_component_reports_every_recipe_problem_without_a_traceback(mocks, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("python: 3.11\ntorch: {}\n")

    with pytest.raises(pulumi.RunError) as failure:
        RuntimeDiskImage("sd-runtime", component_args(recipe_path=recipe))

    message = str(failure.value)
    assert "python: 3.11 is not allowed" in message
    assert "torch.index_url: missing" in message and "pip: missing" in message and "webui: missing" in message
    assert failure.value.__cause__ is None and failure.value.__suppress_context__


def test_identity_changes_with_the_recipe_the_bake_script_and_the_base_digest():
    recipe = load_recipe(RECIPE)
    script = BAKE_SCRIPT.read_bytes()
    pinned = recipe.to_dict()
    changed_recipe = parse_recipe({**pinned, "webui": {**pinned["webui"], "commit": "0" * 40}})
    other_base = BASE.replace(DIGEST, "sha256:" + "d" * 64)

    identity = runtime_identity(recipe, script, BASE)

    assert runtime_identity(load_recipe(RECIPE), BAKE_SCRIPT.read_bytes(), BASE) == identity
    variants = {runtime_identity(changed_recipe, script, BASE), runtime_identity(recipe, script + b"\n", BASE),
                runtime_identity(recipe, script, other_base)}
    assert identity not in variants and len(variants) == 3


def test_a_recipe_for_another_python_than_the_base_image_is_refused(mocks):
    with pytest.raises(pulumi.RunError, match=r"python '3.11' is not allowed; expected '3.12', the Python of "
                                              r"images/base/Dockerfile"):
        RuntimeDiskImage("sd-runtime", component_args(base_python="3.12"))


def test_a_base_image_by_tag_is_refused():
    with pytest.raises(pulumi.RunError, match="base_image 'us-central1-docker.pkg.dev/p/r/sd-base:latest' is not "
                                              "allowed; expected a reference by digest"):
        runtime_identity(load_recipe(RECIPE), b"", "us-central1-docker.pkg.dev/p/r/sd-base:latest")


