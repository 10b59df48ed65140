"""Stack config: every bad value is named with what is allowed, and all problems come together."""

from __future__ import annotations

import contextvars
import dataclasses
import json
import shutil
import subprocess
import sys

import pulumi
import pytest
import yaml

from components import config
from components.config import reader
from tests.conftest import ROOT
from tools import mockrun


def stack_values(stack: str = "dev") -> dict:
    """A stack file's config as the program decodes it (keys without the project prefix)."""
    return config.decode(mockrun.read_stack_config(stack, ROOT))


def parse_with(**changes) -> config.StackConfig:
    """Parse the dev stack's config with some top-level keys replaced or (None) removed."""
    values = stack_values()
    for key, value in changes.items():
        if value is None:
            values.pop(key, None)
        elif isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return config.parse(values, ROOT)


def problems_of(**changes) -> list[str]:
    with pytest.raises(config.ConfigError) as err:
        parse_with(**changes)
    return err.value.problems


BAD_CONFIGS = [
    pytest.param(
        {"gpuPool": {"machineType": "n1-standard-8"}},
        'gpuPool.machineType: "n1-standard-8" is not allowed; expected a g2-* machine type, '
        "the only family that carries nvidia-l4",
        id="l4-on-n1",
    ),
    pytest.param(
        {"gpuPool": {"acceleratorType": "nvidia-tesla-t4"}},
        'gpuPool.machineType: "g2-standard-8" is not allowed; expected a n1-* machine type, '
        "the only family that carries nvidia-tesla-t4",
        id="t4-on-g2",
    ),
    pytest.param(
        {"gpuPool": {"acceleratorType": "nvidia-tesla-a100", "machineType": "a3-highgpu-1g"}},
        'gpuPool.machineType: "a3-highgpu-1g" is not allowed; expected a a2-* machine type, '
        "the only family that carries nvidia-tesla-a100",
        id="a100-on-a3",
    ),
    pytest.param(
        {"gpuPool": {"acceleratorType": "nvidia-h100-80gb", "machineType": "a2-highgpu-1g"}},
        'gpuPool.machineType: "a2-highgpu-1g" is not allowed; expected a a3-* machine type, '
        "the only family that carries nvidia-h100-80gb",
        id="h100-on-a2",
    ),
    pytest.param(
        {"gpuPool": {"acceleratorType": "nvidia-k80"}},
        'gpuPool.acceleratorType: "nvidia-k80" is not allowed; expected one of nvidia-l4, '
        "nvidia-tesla-t4, nvidia-tesla-a100, nvidia-h100-80gb",
        id="unknown-gpu",
    ),
    pytest.param(
        {"gpuPool": {"acceleratorCount": 2}},
        "gpuPool.acceleratorCount: 2 is not allowed; expected 1, the GPU count built into g2-standard-8",
        id="gpu-count-vs-machine",
    ),
    pytest.param(
        {"gpuPool": {"minNodes": 3}},
        "gpuPool.minNodes: 3 is not allowed; expected at most gpuPool.maxNodes (2)",
        id="gpu-min-above-max",
    ),
    pytest.param(
        {"systemPool": {"minNodes": 3, "maxNodes": 2}},
        "systemPool.minNodes: 3 is not allowed; expected at most systemPool.maxNodes (2)",
        id="system-min-above-max",
    ),
    pytest.param(
        {"gpuPool": {"maxNodes": "2"}},
        'gpuPool.maxNodes: "2" is not allowed; expected an integer from 1 to 100',
        id="max-nodes-as-string",
    ),
    pytest.param(
        {"gpuPool": {"spot": "yes"}},
        'gpuPool.spot: "yes" is not allowed; expected true or false',
        id="spot-not-boolean",
    ),
    pytest.param(
        {"gpuPool": {"gpuDriverVersion": "INSTALLATION_DISABLED"}},
        'gpuPool.gpuDriverVersion: "INSTALLATION_DISABLED" is not allowed; expected one of DEFAULT, LATEST',
        id="driver-not-installed-by-gke",
    ),
    pytest.param(
        {"gpuPool": {"locationPolicy": "SPREAD"}},
        'gpuPool.locationPolicy: "SPREAD" is not allowed; expected one of BALANCED, ANY',
        id="location-policy",
    ),
    pytest.param(
        {"zones": ["us-east1-b"]},
        'zones[0]: "us-east1-b" is not allowed; expected a zone of region us-central1, such as us-central1-a',
        id="zone-outside-region",
    ),
    pytest.param(
        {"zones": ["us-central1-a", "us-central1-a"]},
        'zones: ["us-central1-a", "us-central1-a"] is not allowed; expected distinct zones',
        id="duplicate-zone",
    ),
    pytest.param(
        {"zones": ["us-central1-a", {"name": "us-central1-b"}]},
        'zones[1]: {"name": "us-central1-b"} is not allowed; expected a zone of region us-central1, such as us-central1-a',
        id="zone-not-a-string",
    ),
    pytest.param(
        {"zones": []},
        "zones: [] is not allowed; expected a non-empty list of zones in the region",
        id="no-zone",
    ),
    pytest.param(
        {"region": "uscentral"},
        'region: "uscentral" is not allowed; expected a GCP region such as us-central1',
        id="region-shape",
    ),
    pytest.param(
        {"network": {"podsCidr": "10.10.0.0/16"}},
        'network.podsCidr: "10.10.0.0/16" is not allowed; expected a range that does not overlap '
        "network.subnetCidr (10.10.0.0/20)",
        id="pods-overlap-subnet",
    ),
    pytest.param(
        {"network": {"masterCidr": "10.20.0.0/28"}},
        'network.masterCidr: "10.20.0.0/28" is not allowed; expected a range that does not overlap '
        "network.servicesCidr (10.20.0.0/20)",
        id="master-overlap-services",
    ),
    pytest.param(
        {"network": {"subnetCidr": "10.10.0.1/20"}},
        'network.subnetCidr: "10.10.0.1/20" is not allowed; expected an IPv4 CIDR block with a prefix '
        "length from /8 to /29 (host bits zero)",
        id="cidr-host-bits",
    ),
    pytest.param(
        {"network": {"masterCidr": "172.16.0.0/24"}},
        'network.masterCidr: "172.16.0.0/24" is not allowed; expected an IPv4 CIDR block with a prefix '
        "length from /28 to /28",
        id="master-not-28",
    ),
    pytest.param(
        {"network": {"masterAuthorizedCidrs": ["0.0.0.0/33"]}},
        'network.masterAuthorizedCidrs[0]: "0.0.0.0/33" is not allowed; expected an IPv4 CIDR block with '
        "a prefix length from /0 to /32 (host bits zero)",
        id="authorized-cidr",
    ),
    pytest.param(
        {"cluster": {"releaseChannel": "BETA"}},
        'cluster.releaseChannel: "BETA" is not allowed; expected one of RAPID, REGULAR, STABLE, EXTENDED',
        id="release-channel",
    ),
    pytest.param(
        {"cluster": {"minMasterVersion": "1.20"}},
        'cluster.minMasterVersion: "1.20" is not allowed; expected a GKE version such as 1.33 or '
        "1.33.5-gke.1000 with minor 1.30 to 1.37",
        id="unsupported-kubernetes",
    ),
    pytest.param(
        {"environment": "staging"},
        'environment: "staging" is not allowed; expected one of dev, prod',
        id="environment",
    ),
    pytest.param(
        {"project": "My_Project"},
        'project: "My_Project" is not allowed; expected a GCP project id: 6-30 lowercase letters, '
        "digits or hyphens, starting with a letter",
        id="project-id",
    ),
    pytest.param(
        {"project": None},
        "sd-gke:project: missing; it is required",
        id="missing-project",
    ),
    pytest.param(
        {"gpuPol": {"maxNodes": 4}},
        "sd-gke:gpuPol: unknown key; allowed keys are project, region, zones, environment, network, "
        "cluster, systemPool, gpuPool, runtime, webui, autoscaling, queue, gateway, observability, jobs, deletionProtection",
        id="typo-top-level",
    ),
    pytest.param(
        {"jobs": {"maxDeliveryAttempts": 3}},
        "jobs.maxDeliveryAttempts: 3 is not allowed; expected an integer from 5 to 100",
        id="jobs-too-few-attempts-for-pubsub",
    ),
    pytest.param(
        {"jobs": {"minRetryBackoffSeconds": 60, "maxRetryBackoffSeconds": 30}},
        "jobs.minRetryBackoffSeconds: 60 is not allowed; expected at most jobs.maxRetryBackoffSeconds (30)",
        id="jobs-backoff-inverted",
    ),
    pytest.param(
        {"gpuPool": {"maxNode": 4}},
        "gpuPool.maxNode: unknown key; allowed keys are acceleratorCount, acceleratorType, diskSizeGb, "
        "diskType, gpuDriverVersion, locationPolicy, machineType, maxNodes, minNodes, onDemandFallback, spot",
        id="typo-nested",
    ),
    pytest.param(
        {"gpuPool": "big"},
        'gpuPool: "big" is not allowed; expected an object with keys acceleratorCount, acceleratorType, '
        "diskSizeGb, diskType, gpuDriverVersion, locationPolicy, machineType, maxNodes, minNodes, onDemandFallback, "
        "spot",
        id="section-not-object",
    ),
    pytest.param(
        {"runtime": {"recipe": "images/runtime/missing.yaml"}},
        f'runtime.recipe: "images/runtime/missing.yaml" is not allowed; expected a recipe file that exists under {ROOT}',
        id="recipe-missing",
    ),
    pytest.param(
        {"runtime": {"diskType": "pd-standard"}},
        'runtime.diskType: "pd-standard" is not allowed; expected one of pd-balanced, pd-ssd',
        id="slow-runtime-disk",
    ),
    pytest.param(
        {"webui": {"modelPath": "../secrets"}},
        "webui.modelPath: \"../secrets\" is not allowed; expected a relative path inside /runtime without '..'",
        id="model-path-escapes",
    ),
    pytest.param(
        {"webui": {"public": True, "apiAuth": False}},
        "webui.public: true is not allowed; expected false unless webui.apiAuth is true: a public WebUI requires auth",
        id="public-without-auth",
    ),
    pytest.param(
        {"webui": {"generationTimeoutSeconds": 5}},
        "webui.generationTimeoutSeconds: 5 is not allowed; expected an integer from 10 to 1800",
        id="generation-timeout",
    ),
]


@pytest.mark.parametrize("changes, expected", BAD_CONFIGS)
def test_bad_config_is_reported_with_key_value_and_what_is_allowed(changes, expected):
    assert problems_of(**changes) == [expected]


def test_every_problem_is_reported_in_one_error():
    problems = problems_of(
        region="uscentral", environment="qa", gpuPool={"spot": 1, "maxNode": 2}, webui={"replicas": -1}
    )
    assert len(problems) == 5
    assert [p.split(":")[0] for p in problems] == [
        "region", "environment", "gpuPool.spot", "gpuPool.maxNode", "webui.replicas",
    ]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_stack_files_parse(stack):
    assert isinstance(config.parse(stack_values(stack), ROOT), config.StackConfig)


def test_dev_runs_spot_gpus_and_prod_runs_on_demand():
    assert config.parse(stack_values("dev"), ROOT).gpu_pool.spot is True
    assert config.parse(stack_values("prod"), ROOT).gpu_pool.spot is False


def test_prod_may_grow_larger_than_dev():
    dev = config.parse(stack_values("dev"), ROOT).gpu_pool.max_nodes
    prod = config.parse(stack_values("prod"), ROOT).gpu_pool.max_nodes
    assert prod > dev


def test_only_prod_is_production():
    assert not config.parse(stack_values("dev"), ROOT).production
    assert config.parse(stack_values("prod"), ROOT).production


def test_kubernetes_minor_comes_from_the_master_version():
    assert parse_with(cluster={"minMasterVersion": "1.34.1-gke.1200"}).cluster.kubernetes_minor == "1.34"


def test_keys_of_other_namespaces_are_left_to_their_providers():
    raw = {**mockrun.read_stack_config("dev", ROOT), "gcp:project": "other", "kubernetes:context": "x"}
    assert "project" in config.decode(raw) and config.decode(raw)["project"] == "sd-gke-dev"


def test_a_stack_file_read_beside_pulumi_parses_as_the_program_parses_it():
    assert config.load_stack(ROOT, "prod") == config.parse(stack_values("prod"), ROOT)


def recipe_missing_under(root) -> str:
    return f'runtime.recipe: "images/runtime/recipe.yaml" is not allowed; expected a recipe file that exists under {root}'


def test_a_stack_file_read_beside_pulumi_has_its_recipe_looked_for_under_the_given_root(tmp_path):
    shutil.copy(ROOT / "Pulumi.dev.yaml", tmp_path / "Pulumi.scratch.yaml")  # a stack only that root has
    with pytest.raises(config.ConfigError) as err:
        config.load_stack(tmp_path, "scratch")
    assert err.value.problems == [recipe_missing_under(tmp_path)]


def test_the_running_stack_has_its_recipe_looked_for_under_the_given_root(tmp_path):
    def load_under_pulumi():  # in a copy of the context: Pulumi's config (a ContextVar) is left as it was
        pulumi.runtime.set_all_config(mockrun.read_stack_config("dev", ROOT))
        return config.load(tmp_path)

    with pytest.raises(config.ConfigError) as err:
        contextvars.copy_context().run(load_under_pulumi)
    assert err.value.problems == [recipe_missing_under(tmp_path)]


def test_pulumi_yaml_declares_exactly_the_keys_the_program_reads():
    declared = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    assert sorted(k.split(":", 1)[1] for k in declared) == sorted(config.TOP_LEVEL_KEYS)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_stack_files_set_every_declared_key(stack):
    """Declared project config without a default is required by the CLI."""
    declared = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    assert sorted(mockrun.read_stack_config(stack, ROOT)) == sorted(declared)


def test_program_reports_config_errors_as_a_run_error_before_declaring_resources(run_stack):
    with pytest.raises(pulumi.RunError) as err:
        run_stack("dev", gpuPool={**json.loads(mockrun.read_stack_config("dev")["sd-gke:gpuPool"]), "minNodes": 5})
    assert "gpuPool.minNodes: 5 is not allowed" in str(err.value)


def test_offline_plan_exits_2_with_the_messages_and_no_traceback(tmp_path):
    bad = tmp_path / "Pulumi.broken.yaml"
    values = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    values["config"]["sd-gke:gpuPool"]["machineType"] = "n1-standard-4"
    values["config"]["sd-gke:zones"] = ["europe-west4-a"]
    bad.write_text(yaml.safe_dump(values))
    result = subprocess.run(
        [sys.executable, "-m", "tools.plan", "--stack", "broken", "--stack-file", str(bad), "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    assert 'zones[0]: "europe-west4-a" is not allowed' in result.stderr
    assert 'gpuPool.machineType: "n1-standard-4" is not allowed' in result.stderr
    assert not (tmp_path / "broken.json").exists()


# --- deletion protection: its own switch ----------------------------------------------------------------------

@pytest.mark.parametrize("environment, protected", [("dev", False), ("prod", True)])
def test_deletion_protection_defaults_to_on_in_prod_only(environment, protected):
    values = {**stack_values(environment), "environment": environment}
    values.pop("deletionProtection")
    assert config.parse(values, ROOT).protected is protected


def test_deletion_protection_can_be_lifted_in_prod_without_leaving_prod():
    cfg = config.parse({**stack_values("prod"), "deletionProtection": False}, ROOT)
    assert (cfg.protected, cfg.production, cfg.gpu_pool.spot) == (False, True, False)


def test_deletion_protection_must_be_a_boolean():
    with pytest.raises(config.ConfigError) as err:
        config.parse({**stack_values("prod"), "deletionProtection": "no"}, ROOT)
    assert err.value.problems == ['deletionProtection: "no" is not allowed; expected true or false']


# --- config GKE or Compute Engine would take but that cannot deploy ------------------------------------------

def prod_problems(**changes) -> list[str]:
    with pytest.raises(config.ConfigError) as err:
        parse_with(environment="prod", **changes)
    return err.value.problems


@pytest.mark.parametrize("cidr", ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "203.0.113.128/25"])
def test_prod_refuses_a_documentation_range_as_authorized_network_and_says_how_to_set_yours(cidr):
    doc = cidr.rsplit(".", 1)[0] + ".0/24"
    assert prod_problems(network={"masterAuthorizedCidrs": ["10.200.0.0/24", cidr]}) == [
        f'network.masterAuthorizedCidrs[1]: "{cidr}" is not allowed; expected the range your operators reach the '
        f"API server's IP endpoint from (inside the VPC: prod's IP endpoint is private): {doc} is reserved for "
        "documentation (RFC 5737), no client comes from it, so nobody could reach that endpoint. Set yours with "
        "`pulumi config set --path 'sd-gke:network.masterAuthorizedCidrs[1]' <your-vpn-cidr>`, or an empty list for "
        "any address in the VPC"
    ]


def test_an_authorized_network_with_host_bits_in_prod_is_reported_once_as_that_item():
    assert prod_problems(network={"masterAuthorizedCidrs": ["10.0.0.0/8", "10.0.0.1/8"]}) == [
        'network.masterAuthorizedCidrs[1]: "10.0.0.1/8" is not allowed; expected an IPv4 CIDR block with a prefix '
        "length from /0 to /32 (host bits zero)"]


def test_the_keys_after_an_unknown_one_are_still_checked():
    values = stack_values()
    values["gpuPool"] = {"maxNode": 4, "maxNodes": 0, **{k: v for k, v in values["gpuPool"].items() if k != "maxNodes"}}
    with pytest.raises(config.ConfigError) as err:
        config.parse(values, ROOT)
    assert [problem.split(":")[0] for problem in err.value.problems] == ["gpuPool.maxNode", "gpuPool.maxNodes"]


def prod_without_notification_email() -> dict:
    values = stack_values("prod")
    values["observability"] = {k: v for k, v in values["observability"].items() if k != "notificationEmail"}
    return values


def test_prod_without_a_notification_email_is_refused_naming_the_key_and_the_command():
    with pytest.raises(config.ConfigError) as err:
        config.parse(prod_without_notification_email(), ROOT)
    assert err.value.problems == [
        "observability.notificationEmail: missing; prod's alerts must page someone: set it with "
        "`pulumi config set --path 'sd-gke:observability.notificationEmail' <your-oncall-address> --stack prod`"]


def test_the_missing_notification_email_is_reported_with_the_other_problems():
    values = {**prod_without_notification_email(), "region": "Mars"}
    with pytest.raises(config.ConfigError) as err:
        config.parse(values, ROOT)
    assert len(err.value.problems) > 1
    assert any(p.startswith("observability.notificationEmail: missing") for p in err.value.problems)


def test_outside_prod_alerts_may_page_nobody():
    values = stack_values("dev")
    values["observability"] = {k: v for k, v in values["observability"].items() if k != "notificationEmail"}
    assert config.parse(values, ROOT).observability.notification_email is None


def test_the_prod_stack_file_carries_a_notification_email():
    assert config.parse(stack_values("prod"), ROOT).observability.notification_email


def test_prod_takes_a_real_range_or_none_as_authorized_networks():
    assert parse_with(environment="prod", network={"masterAuthorizedCidrs": ["10.200.0.0/24"]}).production
    assert parse_with(environment="prod", network={"masterAuthorizedCidrs": []}).production


def test_prod_takes_a_range_that_only_contains_a_documentation_range():
    assert parse_with(environment="prod", network={"masterAuthorizedCidrs": ["192.0.0.0/16"]}).production


def test_g2_gpu_nodes_refuse_a_standard_persistent_disk():
    assert problems_of(gpuPool={"diskType": "pd-standard"}) == [
        'gpuPool.diskType: "pd-standard" is not allowed; expected a disk type g2-standard-8 takes: pd-balanced, '
        "pd-ssd (components/config/rules.py, PD_TYPES_BY_SERIES, cites the source)"
    ]


def test_n1_gpu_nodes_take_a_standard_persistent_disk():
    cfg = parse_with(gpuPool={"machineType": "n1-standard-8", "acceleratorType": "nvidia-tesla-t4",
                              "diskType": "pd-standard"})
    assert cfg.gpu_pool.disk_type == "pd-standard"


@pytest.mark.parametrize("key, machine_type, disks", [
    ("systemPool", "n4-standard-4", "the system nodes' boot disks"),
    ("runtime", "c4-standard-8", "the builder VM's disks"),
])
def test_machines_whose_series_takes_no_balanced_persistent_disk_are_refused_where_the_disks_are_balanced(
        key, machine_type, disks):
    field = "machineType" if key == "systemPool" else "bakeMachineType"
    assert problems_of(**{key: {field: machine_type}}) == [
        f'{key}.{field}: "{machine_type}" is not allowed; expected a machine type that takes pd-balanced disks '
        f"({disks} are pd-balanced); it takes no Persistent Disk, only Hyperdisk"
    ]


def test_the_shipped_prod_stack_leaves_the_authorized_networks_to_the_operator():
    assert config.parse(stack_values("prod"), ROOT).network.master_authorized_cidrs == ()


def test_every_key_of_a_section_fills_a_field_of_its_dataclass_or_is_refused_as_gone():
    """A misspelt field in a reader table makes `section` fail loudly, never drop the section to its defaults."""
    for section, _, cls, fields in reader.SECTIONS:
        names = {field.name for field in dataclasses.fields(cls)}
        for key, (attr, check) in fields.items():
            if attr in names:
                continue
            refused = reader.Reader()
            check(refused, f"{section}.{key}", 1)
            assert refused.problems and "the key is gone" in refused.problems[0], f"{section}.{key} -> {attr}"


def test_a_refused_key_leaves_the_other_keys_of_its_section_in_place():
    refused = reader.Reader()
    webui = refused.section("webui", {"replicas": 2, "generationTimeoutSeconds": 90}, config.WebuiConfig,
                            reader._WEBUI)
    assert refused.problems[0].startswith("webui.replicas: 2 is not allowed")
    assert webui.generation_timeout_seconds == 90


def test_a_refused_value_leaves_its_field_at_the_default():
    refused = reader.Reader()
    webui = refused.section("webui", {"generationTimeoutSeconds": 5}, config.WebuiConfig, reader._WEBUI)
    assert refused.problems and webui.generation_timeout_seconds == config.WebuiConfig().generation_timeout_seconds
