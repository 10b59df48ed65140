"""Pod specs: pinned images and charts, privilege and hostPath, Pod Security admission, drains and probes."""

from __future__ import annotations

import re

import pod_security
from pulumi_policy import StackValidationArgs
from resources import (
    AR_DIGEST,
    ATTACHER,
    BOOT_DISK_HOST_PATH,
    NAMESPACE,
    RUNTIME_HOST_PATH,
    WEBUI_NAME,
    WORKLOADS,
    containers,
    get,
    pod_spec,
    workload_of,
)


def images_by_digest(args, report):
    pod = pod_spec(args.resource_type, args.props)
    for container in containers(pod or {}):
        image = container.get("image")
        if isinstance(image, str) and not AR_DIGEST.match(image):
            report(f"Container {container.get('name')!r} runs {image!r}: images must come from Artifact "
                   "Registry (REGION-docker.pkg.dev) pinned by @sha256 digest.")


def privileged_only_in_attacher(args, report):
    pod = pod_spec(args.resource_type, args.props)
    if pod is None or (args.resource_type == "kubernetes:apps/v1:DaemonSet" and workload_of(args.props) == ATTACHER):
        return
    for container in containers(pod):
        sc = container.get("securityContext") or {}
        if sc.get("privileged") or sc.get("allowPrivilegeEscalation") is True:
            report(f"Container {container.get('name')!r} is privileged; only the disk attacher may be.")


def host_paths(args, report):
    pod = pod_spec(args.resource_type, args.props)
    if pod is None or (args.resource_type == "kubernetes:apps/v1:DaemonSet" and workload_of(args.props) == ATTACHER):
        return
    host_volumes = {v["name"]: v["hostPath"].get("path") for v in pod.get("volumes") or [] if v.get("hostPath")}
    if not host_volumes:
        return
    if workload_of(args.props)[1] != WEBUI_NAME:
        report(f"hostPath volumes {sorted(host_volumes)} outside the disk attacher and the WebUI.")
        return
    for name, path in host_volumes.items():
        if path != RUNTIME_HOST_PATH and not (isinstance(path, str) and BOOT_DISK_HOST_PATH.fullmatch(path)):
            report(f"WebUI hostPath {path!r}: only the runtime ({RUNTIME_HOST_PATH}) may come from the host, "
                   f"or the runtime's secondary boot disk ({BOOT_DISK_HOST_PATH.pattern}).")
        for container in containers(pod):
            for mount in container.get("volumeMounts") or []:
                if mount.get("name") == name and mount.get("readOnly") is not True:
                    report(f"Container {container.get('name')!r} mounts the runtime read-write; mount it readOnly.")


def pod_security_admission(args: StackValidationArgs, report):
    """Each pod template against the Pod Security level its namespace enforces (policy/pod_security.py):
    admission refuses the pods, not the Deployment, so a breach would only show as a rollout that never
    gets a pod. A namespace the stack does not declare has the cluster default (privileged)."""
    labels = {get(r.props, "metadata", "name"): get(r.props, "metadata", "labels")
              for r in args.resources if r.resource_type == NAMESPACE}
    for r in args.resources:
        pod = pod_spec(r.resource_type, r.props)
        namespace, name = workload_of(r.props)
        if pod is None or namespace is None:
            continue
        level, problem = pod_security.enforce_level(labels.get(namespace))
        if problem:
            report(f"Namespace {namespace!r}: {problem}.", r.urn)
        meta = get(r.props, *WORKLOADS[r.resource_type][:-1], "metadata") or {}
        for v in pod_security.violations(meta, pod, level):
            report(f"{r.resource_type.rsplit(':', 1)[-1]} {namespace}/{name}: namespace {namespace!r} enforces Pod "
                   f"Security {level!r}, which refuses its pods: {v.message} ({v.check}).", r.urn)
EXACT_VERSION = re.compile(r"^\d+\.\d+\.\d+$")


def helm_releases_pinned(args, report):
    """Helm releases install exactly the chart version whose CRDs the tests checked, from an https repository.
    Their images are the charts' own (public ghcr.io/kedacore images tagged with the chart's appVersion):
    k8s-images-from-artifact-registry-by-digest covers the pod specs sd-gke writes, not a chart's."""
    version = args.props.get("version")
    if not isinstance(version, str) or not EXACT_VERSION.match(version):
        report(f"Helm release {args.props.get('chart')!r} has version {version!r}: pin an exact chart version (X.Y.Z).")
    repo = get(args.props, "repositoryOpts", "repo")
    if not isinstance(repo, str) or not repo.startswith("https://"):
        report(f"Helm release {args.props.get('chart')!r} comes from {repo!r}: use an https chart repository.")


CA_MAX_GRACEFUL_TERMINATION_SECONDS = 600
"""How long the cluster autoscaler waits for a pod's graceful termination when it empties a node
(`max-graceful-termination-sec`, default 600: kubernetes/autoscaler cluster-autoscaler/FAQ.md, "What are the
parameters to CA?"); a longer drain is cut. Pods annotated safe-to-evict "false" keep their node (same FAQ,
"What types of pods can prevent CA from removing a node?")."""
SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"


def long_drain_keeps_its_node(args, report):
    """A pod that may need longer than the autoscaler's wait to drain (the request queue holds requests for the
    whole client budget) is never evicted for a scale-down; rollouts still honour its grace period."""
    pod = pod_spec(args.resource_type, args.props)
    grace = (pod or {}).get("terminationGracePeriodSeconds")
    if not isinstance(grace, int) or grace <= CA_MAX_GRACEFUL_TERMINATION_SECONDS:
        return
    annotations = get(args.props, *WORKLOADS[args.resource_type][:-1], "metadata", "annotations") or {}
    if annotations.get(SAFE_TO_EVICT) != "false":
        namespace, name = workload_of(args.props)
        report(f"{args.resource_type.rsplit(':', 1)[-1]} {namespace}/{name} may take {grace}s to drain, longer than the "
               f"cluster autoscaler waits when it empties a node ({CA_MAX_GRACEFUL_TERMINATION_SECONDS}s, "
               f"max-graceful-termination-sec): annotate its pods {SAFE_TO_EVICT}: \"false\".")



def probes(args, report):
    pod = pod_spec(args.resource_type, args.props)
    if args.resource_type != "kubernetes:apps/v1:Deployment" or pod is None:
        return
    for container in pod.get("containers") or []:
        missing = [p for p in ("startupProbe", "readinessProbe") if not container.get(p)]
        if missing:
            report(f"Container {container.get('name')!r} has no {' or '.join(missing)}.")


def memory_limits(args, report):
    for container in containers(pod_spec(args.resource_type, args.props) or {}):
        if not get(container, "resources", "limits", "memory"):
            report(f"Container {container.get('name')!r} has no memory limit.")
