"""Run the real Pulumi program in-process under Pulumi's mock mode and record what it registers.

Used by the offline plan and by the tests. The SDK does not read stack files under mocks, so this
reads `Pulumi.<stack>.yaml` itself. Mocked providers return the inputs plus the few computed outputs
the program reads back (endpoints, emails, digests), each derived from the inputs so runs are
reproducible.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import runpy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "sd-gke"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
"""A Helm release is not a Kubernetes object: its chart's objects are made in the cluster by Helm."""


@dataclass
class Recorded:
    """One registered resource, with its inputs as sent on the wire (camelCase)."""

    urn: str
    type: str
    name: str
    parent: str | None
    provider: str | None
    custom: bool
    inputs: dict[str, Any]
    protect: bool = False
    dependencies: list[str] = field(default_factory=list)
    """Every resource this one waits for: its depends_on and the resources behind its inputs."""
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)
    """Input name -> the resources whose outputs it carries."""
    ignore_changes: list[str] = field(default_factory=list)
    replace_on_changes: list[str] = field(default_factory=list)
    delete_before_replace: bool = False
    retain_on_delete: bool = False
    custom_timeouts: dict[str, str] = field(default_factory=dict)
    additional_secret_outputs: list[str] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    redacted: dict[str, Any] = field(default_factory=dict)
    """The inputs with every secret replaced by "[secret]": what the plan writes to disk."""

    def to_json(self) -> dict[str, Any]:
        return {
            "urn": self.urn,
            "type": self.type,
            "name": self.name,
            "parent": self.parent,
            "inputs": self.redacted,
            "provider": self.provider,
            "protect": self.protect,
            "dependencies": sorted(self.dependencies),
            "propertyDependencies": {k: sorted(v) for k, v in sorted(self.property_dependencies.items()) if v},
        }


@dataclass
class Run:
    stack: str
    resources: list[Recorded]
    outputs: dict[str, Any]
    config: dict[str, str]

    def of_type(self, type_: str) -> list[Recorded]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name: str | None = None) -> Recorded:
        found = [r for r in self.of_type(type_) if name is None or r.name == name]
        if len(found) != 1:
            have = sorted(f"{r.type} {r.name}" for r in self.resources if r.type == type_)
            raise LookupError(f"expected one {type_} {name or ''}, found {len(found)}: {have}")
        return found[0]

    def by_urn(self, urn: str) -> Recorded:
        for r in self.resources:
            if r.urn == urn:
                return r
        raise LookupError(urn)

    def children(self, parent: Recorded) -> list[Recorded]:
        return [r for r in self.resources if r.parent == parent.urn]

    def kubernetes_objects(self) -> list[Recorded]:
        return [r for r in self.resources if r.type.startswith("kubernetes:") and r.custom
                and r.type != "pulumi:providers:kubernetes" and r.type != HELM_RELEASE]

    def to_json(self) -> dict[str, Any]:
        return {"stack": self.stack, "resources": [r.to_json() for r in self.resources]}


def read_stack_config(stack: str, root: Path = ROOT) -> dict[str, str]:
    """The stack file's config as Pulumi passes it to a program: every value a string (JSON for non-strings)."""
    path = root / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        stacks = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in root.glob("Pulumi.*.yaml"))
        raise FileNotFoundError(f"no stack file {path.name}; stacks here: {', '.join(stacks)}")
    return config_of(path)


class StackFileError(ValueError):
    """A stack file that is not the YAML mapping Pulumi expects."""


def config_of(path: Path) -> dict[str, str]:
    """A stack file's `config:` as Pulumi passes it to a program: every value a string (JSON for non-strings)."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise StackFileError(f"{path.name}: not valid YAML: {err}") from None
    raw = data.get("config") if isinstance(data, dict) else None
    if not isinstance(raw, dict):
        raise StackFileError(f"{path.name}: expected a mapping with a `config:` mapping of keys to values")
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}


SECRET_SIG = ("4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270")
REDACTED = "[secret]"


def _mask(value: Any) -> Any:
    """Redact a secret's leaves and keep its shape, so a redacted manifest still validates."""
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    return REDACTED


def _plain(value: Any, redact: bool) -> Any:
    """Inputs as the program meant them: secrets unwrapped (or redacted), whole numbers as ints
    (the wire carries every number as a double)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        if value.get(SECRET_SIG[0]) == SECRET_SIG[1]:
            inner = _plain(value.get("value"), redact=False)
            return _mask(inner) if redact else inner
        return {k: _plain(v, redact) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, redact) for v in value]
    return value


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _with_dns_endpoint(endpoints: Any, endpoint: str) -> dict[str, Any]:
    """GKE reports every cluster's DNS endpoint (container.v1 DNSEndpointConfig.endpoint: "Always present")."""
    endpoints = endpoints if isinstance(endpoints, dict) else {}
    return {**endpoints, "dnsEndpointConfig": {**(endpoints.get("dnsEndpointConfig") or {}), "endpoint": endpoint}}


def _computed(typ: str, name: str, inputs: dict[str, Any], project: str) -> dict[str, Any]:
    """The outputs a real provider computes that the program reads back."""
    res_name = inputs.get("name") or name
    if typ == "gcp:container/cluster:Cluster":
        return {
            "name": res_name,
            "endpoint": "203.0.113.10",
            "masterAuth": {"clusterCaCertificate": "LS0tLS1CRUdJTi1NT0NLLUNBLS0tLS0="},
            "controlPlaneEndpointsConfig": _with_dns_endpoint(
                inputs.get("controlPlaneEndpointsConfig"),
                f"gke-{_digest(project, res_name)[:36]}.{inputs.get('location')}.gke.goog"),
            "selfLink": f"https://container.googleapis.com/v1/projects/{project}/locations/{inputs.get('location')}/clusters/{res_name}",
        }
    if typ == "gcp:serviceaccount/account:Account":
        email = f"{inputs['accountId']}@{project}.iam.gserviceaccount.com"
        return {"email": email, "member": f"serviceAccount:{email}", "name": f"projects/{project}/serviceAccounts/{email}"}
    if typ == "gcp:artifactregistry/repository:Repository":
        repo_id = inputs.get("repositoryId", res_name)
        return {"name": repo_id, "registryUri": f"{inputs.get('location')}-docker.pkg.dev/{project}/{repo_id}"}
    if typ == "docker-build:index:Image":
        digest = "sha256:" + _digest(inputs.get("context"), inputs.get("dockerfile"), inputs.get("buildArgs"))
        tags = inputs.get("tags") or [res_name]
        return {"digest": digest, "ref": f"{tags[0].split(':')[0]}@{digest}"}
    if typ == "random:index/randomPassword:RandomPassword":
        return {"result": "mock-" + _digest(name)[:24]}
    if typ in ("gcp:projects/iAMCustomRole:IAMCustomRole",):
        return {"name": f"projects/{project}/roles/{inputs.get('roleId')}"}
    if typ.startswith("gcp:compute/"):
        return {"name": res_name, "selfLink": f"https://www.googleapis.com/compute/v1/projects/{project}/{name}"}
    if typ.startswith("gcp:container/nodePool"):
        return {"name": res_name}
    return {"name": res_name} if typ.startswith("gcp:") else {}


def ensure_event_loop() -> None:
    """Pulumi's mock runtime uses this thread's event loop, which `asyncio.run` (in a test that ran earlier in the
    same process) leaves unset: give the thread a new one then."""
    try:
        if not asyncio.get_event_loop().is_closed():
            return
    except RuntimeError:
        pass
    asyncio.set_event_loop(asyncio.new_event_loop())


def run(stack: str, root: Path = ROOT, overrides: dict[str, Any] | None = None,
        config: dict[str, str] | None = None) -> Run:
    """Run `root/__main__.py` for `stack` under mocks and return everything it registered.

    `overrides` replaces config keys (without the project prefix; values as in YAML);
    a None value removes the key. Raises what the program raises (e.g. pulumi.RunError).
    """
    import pulumi
    from pulumi.runtime import mocks as pmocks
    from pulumi.runtime import settings
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    cfg = dict(config if config is not None else read_stack_config(stack, root))
    for key, value in (overrides or {}).items():
        full = key if ":" in key else f"{PROJECT}:{key}"
        if value is None:
            cfg.pop(full, None)
        else:
            cfg[full] = value if isinstance(value, str) else json.dumps(value)
    project_id = json.loads(json.dumps(cfg.get(f"{PROJECT}:project", "mock-project")))
    recorded: list[Recorded] = []

    class Mocks(pmocks.Mocks):
        def new_resource(self, args: pmocks.MockResourceArgs):
            state = {**args.inputs, **_computed(args.typ, args.name, args.inputs, project_id)}
            return f"{args.name}-id", state

        def call(self, args: pmocks.MockCallArgs):
            if args.token == "gcp:organizations/getClientConfig:getClientConfig":
                return {"project": project_id, "accessToken": "mock-token"}
            if args.token == "gcp:organizations/getProject:getProject":
                return {"projectId": project_id, "number": "123456789012"}
            raise NotImplementedError(f"no mock for invoke {args.token}")

    class Monitor(pmocks.MockMonitor):
        def RegisterResource(self, request):
            response = super().RegisterResource(request)
            if request.type != "pulumi:pulumi:Stack":
                reg = self.resources.get(response.urn)
                wire = pmocks._sync_await(_deserialize(request.object))
                timeouts = request.customTimeouts
                recorded.append(Recorded(
                    urn=response.urn,
                    type=request.type,
                    name=request.name,
                    parent=request.parent or None,
                    provider=request.provider or None,
                    custom=bool(request.custom),
                    inputs=_plain(wire, redact=False),
                    redacted=_plain(wire, redact=True),
                    protect=bool(request.protect),
                    dependencies=list(request.dependencies),
                    property_dependencies={k: list(v.urns) for k, v in request.propertyDependencies.items()},
                    ignore_changes=list(request.ignoreChanges),
                    replace_on_changes=list(request.replaceOnChanges),
                    delete_before_replace=bool(request.deleteBeforeReplace),
                    retain_on_delete=bool(request.retainOnDelete),
                    custom_timeouts={k: getattr(timeouts, k) for k in ("create", "update", "delete") if getattr(timeouts, k)},
                    additional_secret_outputs=list(request.additionalSecretOutputs),
                    state=dict(reg.state) if reg else {},
                ))
            return response

    async def _deserialize(obj):
        from pulumi.runtime import rpc
        return rpc.deserialize_properties(obj, keep_unknowns=True, keep_internal=False)

    settings.ROOT.set(None)
    ensure_event_loop()
    mocks = Mocks()
    pmocks.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=Monitor(mocks))
    pulumi.runtime.set_all_config(cfg)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    _sync_await(run_pulumi_func(lambda: runpy.run_path(str(root / "__main__.py"), run_name="__main__")))

    outputs: dict[str, Any] = {}
    stack_resource = settings.get_root_resource()
    for key, value in (getattr(stack_resource, "outputs", None) or {}).items():
        outputs[key] = _sync_await(pulumi.Output.from_input(value).future())
    return Run(stack=stack, resources=recorded, outputs=outputs, config=cfg)
