"""The records a cold start leaves in a cluster, read from a live cluster or from a recorded directory.

A recording directory holds exactly what the APIs return, so live and offline runs parse the same bytes:

  pods.json            `kubectl get pods -n NS -o json` for the WebUI and the disk attacher namespaces (items merged)
  nodes.json           `kubectl get nodes -o json`
  events.json          `kubectl get events -n NS -o json` for the WebUI namespace (core/v1 Events)
  logs/NS/POD/C.log    `kubectl logs -n NS POD -c C --timestamps` (each line prefixed with its RFC 3339 time)
  cloud-logging.json   `gcloud logging read FILTER --format=json` (LogEntry list): the attacher's step lines
                       of pods that no longer exist (its logs are gone with the pod, Cloud Logging keeps them)
                       and GKE's autoscaler scale-up decisions (its events expire after an hour, these do not)

Nothing here interprets a record; tools/startup/timeline.py does.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WEBUI_NAMESPACE = "sd-webui"  # components/webui.py's namespace
WEBUI_CONTAINER = "webui"
ATTACHER_NAMESPACE = "sd-system"  # components/disk_attacher.py NAMESPACE
ATTACHER_CONTAINER = "agent"
FILES = ("pods.json", "nodes.json", "events.json")
CLOUD_LOGGING = "cloud-logging.json"
VISIBILITY_LOG = "container.googleapis.com/cluster-autoscaler-visibility"
"""GKE's cluster autoscaler decisions, kept in Cloud Logging long after the pod's events expired
(https://cloud.google.com/kubernetes-engine/docs/how-to/cluster-autoscaler-visibility)."""


class RecordingError(Exception):
    """A recording that cannot be read or collected; the message names the file or the command."""


@dataclass
class Recording:
    pods: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    logs: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)
    """(namespace, pod, container) -> the lines of `kubectl logs --timestamps`."""
    cloud_logging: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    """Sources that were not there (a file absent, a pod whose logs are gone): said, never guessed."""


def _items(document: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(document, dict) or not isinstance(document.get("items"), list):
        raise RecordingError(f"{where}: expected a Kubernetes List ({{\"items\": [...]}}) as kubectl -o json prints it")
    return document["items"]


def load(directory: Path) -> Recording:
    if not directory.is_dir():
        raise RecordingError(f"{directory}: not a directory (expected a recording: {', '.join(FILES)}, logs/)")
    recording = Recording()
    for name in FILES:
        path = directory / name
        if not path.exists():
            recording.missing.append(name)
            continue
        try:
            items = _items(json.loads(path.read_text(encoding="utf-8")), str(path))
        except json.JSONDecodeError as err:
            raise RecordingError(f"{path}: not JSON ({err})") from None
        setattr(recording, name.removesuffix(".json"), items)
    for log in sorted((directory / "logs").glob("*/*/*.log")):
        recording.logs[(log.parent.parent.name, log.parent.name, log.stem)] = log.read_text(encoding="utf-8").splitlines()
    cloud = directory / CLOUD_LOGGING
    if cloud.exists():
        try:
            entries = json.loads(cloud.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise RecordingError(f"{cloud}: not JSON ({err})") from None
        if not isinstance(entries, list):
            raise RecordingError(f"{cloud}: expected a list of log entries as `gcloud logging read --format=json` prints it")
        recording.cloud_logging = entries
    return recording


def save(recording: Recording, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        items = getattr(recording, name.removesuffix(".json"))
        (directory / name).write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}, indent=1) + "\n")
    for (namespace, pod, container), lines in recording.logs.items():
        path = directory / "logs" / namespace / pod / f"{container}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(line + "\n" for line in lines))
    if recording.cloud_logging:
        (directory / CLOUD_LOGGING).write_text(json.dumps(recording.cloud_logging, indent=1) + "\n")


def _run(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    except FileNotFoundError:
        raise RecordingError(f"{argv[0]} is not installed (needed for: {' '.join(argv)})") from None
    except subprocess.TimeoutExpired:
        raise RecordingError(f"{' '.join(argv)}: no answer in 120 s") from None
    if done.returncode != 0:
        raise RecordingError(f"{' '.join(argv)} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout


def attacher_filter(cluster: str) -> str:
    """Cloud Logging filter for the agent's step lines: GKE parses a JSON log line into jsonPayload
    (https://cloud.google.com/kubernetes-engine/docs/concepts/about-logs#structured_logging)."""
    return (f'resource.type="k8s_container" AND resource.labels.cluster_name="{cluster}" '
            f'AND resource.labels.namespace_name="{ATTACHER_NAMESPACE}" '
            f'AND resource.labels.container_name="{ATTACHER_CONTAINER}" AND jsonPayload.event="step"')


def visibility_filter(project: str, cluster: str) -> str:
    return (f'logName="projects/{project}/logs/{VISIBILITY_LOG.replace("/", "%2F")}" '
            f'AND resource.labels.cluster_name="{cluster}" AND jsonPayload.decision.scaleUp:*')


def collect(context: str, project: str | None = None, cluster: str | None = None, freshness: str = "1d") -> Recording:
    """Read a live cluster through kubectl (and Cloud Logging when a project and cluster are given)."""
    kubectl = ["kubectl", "--context", context]

    def get(*args: str) -> list[dict[str, Any]]:
        return _items(json.loads(_run([*kubectl, "get", *args, "-o", "json"])), " ".join(["kubectl get", *args]))

    recording = Recording(
        pods=get("pods", "-n", WEBUI_NAMESPACE) + get("pods", "-n", ATTACHER_NAMESPACE),
        nodes=get("nodes"),
        events=get("events", "-n", WEBUI_NAMESPACE),
    )
    wanted = {WEBUI_NAMESPACE: WEBUI_CONTAINER, ATTACHER_NAMESPACE: ATTACHER_CONTAINER}
    for pod in recording.pods:
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        container = wanted.get(namespace)
        try:
            text = _run([*kubectl, "logs", "-n", namespace, name, "-c", container, "--timestamps"])
        except RecordingError as err:
            recording.missing.append(f"logs of {namespace}/{name}: {err}")
            continue
        recording.logs[(namespace, name, container)] = text.splitlines()
    if project and cluster:
        for query in (attacher_filter(cluster), visibility_filter(project, cluster)):
            recording.cloud_logging += json.loads(_run(["gcloud", "logging", "read", query, "--project", project,
                                                        "--format=json", f"--freshness={freshness}", "--order=asc"]) or "[]")
    return recording
