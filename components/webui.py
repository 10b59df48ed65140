"""The Stable Diffusion WebUI Deployment on GPU nodes.

The container is the slim base image; Python, PyTorch, WebUI and the models come read-only from
the runtime a delivery (the disk attacher by default) puts on the node. Everything WebUI writes
goes to emptyDir, so the runtime stays shared and immutable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components import worker
from components.config import WebuiConfig
from components.labels import k8s_labels, pod_security_labels, selector_labels
from components.recipe import BAKE_SCRIPT
from components.registry import Registry, digest_ref, pushed_image
from components.runtime_layout import MANIFEST, READY_MARKER, RUNTIME_ROOT, VENV_PYTHON, WEBUI_DIR
from components.source import load_source
from components.timeouts import TimeoutChain

PORT = 7860
NAMESPACE = "sd-webui"
SERVICE_ACCOUNT = "webui"
DATA_DIR = "/data"
PROBE_DIR = "/etc/sd-probe"
PROBE_SCRIPT = Path(__file__).resolve().parent.parent / "images" / "webui" / "probe.py"
API_USER = "sd"
UID = 1000
WARM_TIMEOUT_SECONDS = 50
CHECKOV_SKIPS = {
    "CKV_K8S_11": "no CPU limit: a limit throttles generation; the request reserves what a pod needs",
    "CKV_K8S_35": "WebUI reads --api-auth from its command line only; the secret reaches it as $(SD_API_AUTH)",
    "CKV_K8S_40": "uid 1000 is the base image's own user; nothing on the host is writable by it",
}
BAKE = load_source(BAKE_SCRIPT, "sdgke_webui_bake")
"""The bake's table of what WebUI writes at start and where the data dir links onto the runtime: the
pod lays out the data dir from it, so what the bake creates is where WebUI looks."""
STARTUP_WINDOW_SECONDS = 900
"""How long a cold pod may take from container start to a warm model: checkpoint load from a lazily
restored disk plus the first CUDA kernel compilation."""
SKIP_AWAIT = {"pulumi.com/skipAwait": "true"}
"""`pulumi up` does not wait for WebUI pods. pulumi-kubernetes waits for a Deployment to be Available
(10 minutes by default, then the update fails), but a WebUI pod is ready only after a GPU node exists
(scale-from-zero, Spot capacity that may not be there for hours), its driver, the runtime disk and the
warm-up (STARTUP_WINDOW_SECONDS alone is 15 minutes): no timeout bounds that, and it is not what the
deploy decides. With the annotation the provider skips its readiness await for create and update
(pulumi-kubernetes provider/pkg/metadata/overrides.go ReadyCondition, SkipAwaitLogic); the rollout
itself stays safe (maxUnavailable 0 keeps old pods serving until new ones are ready)."""


BATCH_EGRESS = k8s.networking.v1.NetworkPolicyEgressRuleArgs(
    ports=[k8s.networking.v1.NetworkPolicyPortArgs(port=p, protocol="TCP") for p in (443, 80, 988)],
)
"""The batch worker's way out: Google APIs on 443, and the GKE metadata server it gets its Workload Identity
token from (169.254.169.254:80, served on 988: https://cloud.google.com/kubernetes-engine/docs/how-to/workload-identity#network-policy)."""


@dataclass
class RuntimeVolume:
    """How the runtime reaches the pod: the seam between delivery mechanisms and the WebUI.

    `source` is a Kubernetes volume source (a hostPath in both deliveries); `hash12` is the runtime
    that volume must hold, checked before WebUI starts; `propagation` is the mount propagation the
    delivery needs for a mount that may appear after the pod starts.
    """

    source: dict
    hash12: pulumi.Input[str]
    propagation: str | None = None


@dataclass
class WebuiArgs:
    config: WebuiConfig
    environment: str
    image: pulumi.Input[str]
    runtime: RuntimeVolume
    node_selector: dict[str, pulumi.Input[str]]
    registry: Registry
    chain: TimeoutChain
    front: worker.QueueFront
    """The request queue the worker beside WebUI pulls from (components/request_queue.py)."""
    tolerations: list[dict]
    """The GPU pool's taints WebUI pods tolerate: all but the startup taint, which they wait out."""
    batch: worker.BatchWork | None
    """The worker's batch part (components/jobs.py), with its Google identity; None without jobs."""


def checkov_skips(skips: dict[str, str]) -> dict[str, str]:
    """checkov's in-manifest skip annotations, each with its written reason (checkov splits on '=')."""
    if any("=" in reason for reason in skips.values()):
        raise ValueError("a checkov skip reason cannot contain '='")
    return {f"checkov.io/skip{i}": f"{check}={reason}" for i, (check, reason) in enumerate(sorted(skips.items()), 1)}


def restricted_container(uid: int) -> k8s.core.v1.SecurityContextArgs:
    """A container that meets Pod Security `restricted` as `uid`, with a read-only root file system."""
    return k8s.core.v1.SecurityContextArgs(
        allow_privilege_escalation=False,
        read_only_root_filesystem=True,
        run_as_non_root=True,
        run_as_user=uid,
        run_as_group=uid,
        capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
        seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
    )


def tolerations(taints: list[dict]) -> list[k8s.core.v1.TolerationArgs]:
    """Tolerate exactly these taints (key, value and effect), nothing broader."""
    return [k8s.core.v1.TolerationArgs(key=t["key"], operator="Equal", value=t["value"], effect=t["effect"])
            for t in taints]


def runtime_checks(hash12: str) -> list[str]:
    """Refuse a runtime that is not mounted, not finished or not this one: the ready marker the bake writes
    last holds the full identity hash, and so does MANIFEST.json's recipe_hash (images/runtime/bake.py)."""
    marker = f"{RUNTIME_ROOT}/{READY_MARKER}"
    return [
        f'{{ test -f {marker} || {{ echo "{marker} is missing: no finished runtime is mounted here" >&2; exit 1; }}; }}',
        f'{{ grep -q "^{hash12}" {marker} || {{ echo "{marker} is not runtime {hash12}" >&2; exit 1; }}; }}',
        f"{{ grep -Eq '\"recipe_hash\": *\"{hash12}' {MANIFEST} || "
        f'{{ echo "{MANIFEST}: recipe_hash is not runtime {hash12}" >&2; exit 1; }}; }}',
    ]


def launch_args(cfg: WebuiConfig) -> list[str]:
    """WebUI flags: API only through auth, nothing installed or downloaded at start, no extension installs."""
    args = [
        WEBUI_DIR + "/launch.py",
        "--listen", "--port", str(PORT),
        "--api",
        "--api-log",  # one line per API call (modules/api/api.py api_middleware): tools/coldstart.py's first image
        "--skip-prepare-environment", "--skip-install", "--skip-version-check",
        "--no-download-sd-model", "--no-hashing",
        "--xformers",
        "--data-dir", DATA_DIR,
        "--ckpt-dir", f"{RUNTIME_ROOT}/{cfg.model_path}",
    ]
    if cfg.api_auth:
        args += ["--api-auth", "$(SD_API_AUTH)"]
    return args


class Webui(pulumi.ComponentResource):
    """Namespace, API credentials, probe script, the worker's image, Deployment, PodDisruptionBudget and NetworkPolicy.

    No Service: nothing routes to the WebUI pods by a Service. Each pod's worker registers the pod's own
    address with the request queue, which sends browser traffic there (docs/request-queue.md)."""

    def __init__(self, name: str, args: WebuiArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sdgke:webui:Webui", name, None, opts)
        cfg = args.config
        labels = k8s_labels("webui", args.environment)
        selector = selector_labels("webui")
        child = pulumi.ResourceOptions(parent=self)

        # Pod Security admission: Baseline forbids every hostPath volume (spec.volumes[*].hostPath,
        # https://kubernetes.io/docs/concepts/security/pod-security-standards/#baseline), and the runtime
        # reaches the pod through one, so only `privileged` admits the WebUI pod. Everything else in it
        # meets Restricted (tests/test_pod_security.py holds it to that), warn and audit report at
        # Restricted, and the pack keeps that hostPath to the runtime, read-only (k8s-hostpath-runtime-only).
        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=NAMESPACE, labels={
                **labels, **pod_security_labels("privileged"),
            }),
            opts=child,
        )
        ns = namespace.metadata.name

        env = [
            k8s.core.v1.EnvVarArgs(name=k, value=v)
            for k, v in {
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "HF_HOME": f"{RUNTIME_ROOT}/cache/huggingface",
                "SD_WEBUI_CACHE_FILE": f"{DATA_DIR}/cache.json",
                "SD_WEBUI_CACHE_DIR": f"{DATA_DIR}/cache",
                "HOME": f"{DATA_DIR}/home",
                "PYTHONDONTWRITEBYTECODE": "1",
                "SD_WARM_TIMEOUT": str(WARM_TIMEOUT_SECONDS),
                "SD_DRAIN_SECONDS": str(args.chain.webui_drain),
            }.items()
        ]
        self.api_password = None
        self.api_secret = None
        self.api_auth = None
        """`user:password` as --api-auth takes it, for the request queue's copy; None without API auth."""
        if cfg.api_auth:
            self.api_password = random.RandomPassword(f"{name}-api-password", length=32, special=False, opts=child)
            self.api_auth = pulumi.Output.concat(API_USER, ":", self.api_password.result)
            self.api_secret = k8s.core.v1.Secret(
                f"{name}-api-auth",
                metadata=k8s.meta.v1.ObjectMetaArgs(name="webui-api-auth", namespace=ns, labels=labels),
                type="Opaque",
                string_data={"SD_API_AUTH": self.api_auth},
                opts=child,
            )
            env.append(k8s.core.v1.EnvVarArgs(
                name="SD_API_AUTH",
                value_from=k8s.core.v1.EnvVarSourceArgs(secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(
                    name=self.api_secret.metadata.name, key="SD_API_AUTH",
                )),
            ))

        probe = k8s.core.v1.ConfigMap(
            f"{name}-probe",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="webui-probe", namespace=ns, labels=labels),
            data={"probe.py": PROBE_SCRIPT.read_text()},
            opts=child,
        )

        def probe_cmd(mode: str) -> k8s.core.v1.ExecActionArgs:
            return k8s.core.v1.ExecActionArgs(command=["python3", f"{PROBE_DIR}/probe.py", mode])

        restricted = restricted_container(UID)
        runtime_mount = k8s.core.v1.VolumeMountArgs(
            name="runtime", mount_path=RUNTIME_ROOT, read_only=True, mount_propagation=args.runtime.propagation,
        )
        data_mount = k8s.core.v1.VolumeMountArgs(name="data", mount_path=DATA_DIR)
        # The gate: refuse to start on a node whose runtime is not mounted, finished and the one this
        # Deployment is for, and point WebUI's data dir at the baked extensions and models.
        prepare = pulumi.Output.from_input(args.runtime.hash12).apply(lambda hash12: " && ".join([
            *runtime_checks(hash12),
            f"mkdir -p {DATA_DIR}/home {DATA_DIR}/cache {DATA_DIR}/outputs",
            *(f"ln -sfn {RUNTIME_ROOT}/{target} {DATA_DIR}/{name}" for name, target in BAKE.DATA_LINKS.items()),
        ]))
        self.worker_image = pushed_image(f"{name}-worker-image", worker.IMAGE, worker.CONTEXT, args.registry, self)
        worker_container = worker.container(digest_ref(self.worker_image), args.front, args.batch, restricted,
                                            [e for e in env if e.name == "SD_API_AUTH"])
        service_account = None
        if args.batch is not None:
            service_account = k8s.core.v1.ServiceAccount(
                f"{name}-service-account",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=SERVICE_ACCOUNT, namespace=ns, labels=labels,
                    annotations={"iam.gke.io/gcp-service-account": args.batch.google_service_account}),
                automount_service_account_token=False,  # Workload Identity needs no Kubernetes token
                opts=child,
            ).metadata.name
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="webui", namespace=ns, labels=labels,
                                                annotations={**checkov_skips(CHECKOV_SKIPS), **SKIP_AWAIT}),
            # No `replicas`: KEDA's ScaledObject owns the count (components/autoscaling.py), from zero.
            spec=k8s.apps.v1.DeploymentSpecArgs(
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
                strategy=k8s.apps.v1.DeploymentStrategyArgs(
                    type="RollingUpdate",
                    rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(max_surge=1, max_unavailable=0),
                ),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels),
                    spec=k8s.core.v1.PodSpecArgs(
                        automount_service_account_token=False,
                        service_account_name=service_account,
                        enable_service_links=False,
                        termination_grace_period_seconds=args.chain.webui_grace,
                        node_selector=args.node_selector,
                        tolerations=tolerations(args.tolerations),
                        security_context=k8s.core.v1.PodSecurityContextArgs(
                            run_as_non_root=True, run_as_user=UID, run_as_group=UID, fs_group=UID,
                            seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
                        ),
                        init_containers=[k8s.core.v1.ContainerArgs(
                            name="prepare",
                            image=args.image,
                            image_pull_policy="IfNotPresent",
                            command=["sh", "-ec", prepare],
                            security_context=restricted,
                            resources=k8s.core.v1.ResourceRequirementsArgs(
                                requests={"cpu": "50m", "memory": "32Mi"}, limits={"memory": "64Mi"},
                            ),
                            volume_mounts=[runtime_mount, data_mount],
                        )],
                        containers=[k8s.core.v1.ContainerArgs(
                            name="webui",
                            image=args.image,
                            image_pull_policy="IfNotPresent",
                            command=[VENV_PYTHON],
                            args=launch_args(cfg),
                            working_dir=DATA_DIR,
                            env=env,
                            ports=[k8s.core.v1.ContainerPortArgs(name="http", container_port=PORT)],
                            resources=k8s.core.v1.ResourceRequirementsArgs(
                                requests={"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1", "ephemeral-storage": "2Gi"},
                                limits={"memory": "12Gi", "nvidia.com/gpu": "1", "ephemeral-storage": "10Gi"},
                            ),
                            startup_probe=k8s.core.v1.ProbeArgs(
                                exec_=probe_cmd("warm"),
                                period_seconds=10,
                                timeout_seconds=WARM_TIMEOUT_SECONDS + 5,
                                failure_threshold=STARTUP_WINDOW_SECONDS // 10,
                            ),
                            readiness_probe=k8s.core.v1.ProbeArgs(
                                exec_=probe_cmd("ready"), period_seconds=10, timeout_seconds=8, failure_threshold=3,
                            ),
                            liveness_probe=k8s.core.v1.ProbeArgs(
                                tcp_socket=k8s.core.v1.TCPSocketActionArgs(port=PORT),
                                period_seconds=20, timeout_seconds=5, failure_threshold=6,
                            ),
                            lifecycle=k8s.core.v1.LifecycleArgs(pre_stop=k8s.core.v1.LifecycleHandlerArgs(
                                exec_=probe_cmd("drain"),
                            )),
                            security_context=restricted,
                            volume_mounts=[
                                runtime_mount,
                                data_mount,
                                k8s.core.v1.VolumeMountArgs(name="tmp", mount_path="/tmp"),
                                k8s.core.v1.VolumeMountArgs(name="shm", mount_path="/dev/shm"),
                                k8s.core.v1.VolumeMountArgs(name="probe", mount_path=PROBE_DIR, read_only=True),
                            ],
                        ), worker_container],
                        volumes=[
                            k8s.core.v1.VolumeArgs(name="runtime", **args.runtime.source),
                            k8s.core.v1.VolumeArgs(name="data", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(size_limit="8Gi")),
                            k8s.core.v1.VolumeArgs(name="tmp", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(size_limit="2Gi")),
                            k8s.core.v1.VolumeArgs(name="shm", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(
                                medium="Memory", size_limit="2Gi")),
                            k8s.core.v1.VolumeArgs(name="probe", config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(
                                name=probe.metadata.name, default_mode=0o444,
                            )),
                            worker.HEARTBEAT_VOLUME,
                        ],
                    ),
                ),
            ),
            opts=child,
        )

        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="webui", namespace=ns, labels=labels),
            spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
                max_unavailable=1, selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
            ),
            opts=child,
        )
        front = k8s.networking.v1.NetworkPolicyPeerArgs(namespace_selector=k8s.meta.v1.LabelSelectorArgs(
            match_labels={"kubernetes.io/metadata.name": args.front.namespace}))
        k8s.networking.v1.NetworkPolicy(
            f"{name}-network-policy",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="webui", namespace=ns, labels=labels),
            spec=k8s.networking.v1.NetworkPolicySpecArgs(
                pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
                policy_types=["Ingress", "Egress"],
                # WebUI serves the request queue only, and needs nothing outside: everything it runs is baked.
                # Its worker long-polls the request queue, and with batch work reaches Google's APIs. Kubelet's
                # probes come from the pod's own node, which a NetworkPolicy cannot block
                # (https://kubernetes.io/docs/concepts/services-networking/network-policies/, "What you can't do").
                ingress=[k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                    from_=[front], ports=[k8s.networking.v1.NetworkPolicyPortArgs(port=PORT, protocol="TCP")],
                )],
                egress=[
                    k8s.networking.v1.NetworkPolicyEgressRuleArgs(
                        ports=[k8s.networking.v1.NetworkPolicyPortArgs(port=53, protocol=p) for p in ("UDP", "TCP")],
                    ),
                    k8s.networking.v1.NetworkPolicyEgressRuleArgs(to=[front], ports=[
                        k8s.networking.v1.NetworkPolicyPortArgs(port=args.front.worker_port, protocol="TCP")]),
                    *([BATCH_EGRESS] if args.batch else []),
                ],
            ),
            opts=child,
        )
        self.namespace = ns
        self.register_outputs({"namespace": ns, "deployment": self.deployment.metadata.name})
