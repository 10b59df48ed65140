"""The worker beside every WebUI: the queue agent (images/queue-agent) as a container of the WebUI pod.

It pulls one generation at a time from the request queue (docs/request-queue.md, "The worker's loop"),
so no request ever waits inside a pod, and, with `jobs.enabled`, batch jobs from Pub/Sub when the
request queue has no interactive work for it (components/jobs.py provides that part's settings).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s

CONTEXT = Path(__file__).resolve().parent.parent / "images" / "queue-agent"
IMAGE = "sd-queue-agent"
CONTAINER = "queue-agent"
HEARTBEAT_DIR = "/run/queue-agent"
HEARTBEAT_ENV = {"JOBS_HEARTBEAT": f"{HEARTBEAT_DIR}/heartbeat", "JOBS_HEARTBEAT_MAX_AGE": "60"}
"""The agent's loop beats at least every long poll or pull and every second of a job: 60 s of silence is a hung agent."""
HEARTBEAT_VOLUME = k8s.core.v1.VolumeArgs(name="queue-agent", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(
    medium="Memory", size_limit="1Mi"))
ALIVE = k8s.core.v1.ExecActionArgs(command=["python", "-m", "queue_agent.alive"])
"""Liveness: the loop's heartbeat is fresh (a hung loop is restarted)."""
READY = k8s.core.v1.ExecActionArgs(command=["python", "-m", "queue_agent.alive", "--ready"])
"""Readiness: also registered with the request queue, and its WebUI answers (queue_agent/alive.py)."""
POD_FIELDS = {"POD_NAME": "metadata.name", "POD_IP": "status.podIP"}
"""The worker's name at the request queue and the address it registers for browser traffic, from the downward API
(https://kubernetes.io/docs/concepts/workloads/pods/downward-api/#downwardapi-fieldRef)."""


@dataclass(frozen=True)
class QueueFront:
    """Where the worker finds the request queue (components/request_queue.py) and the port it long-polls."""

    namespace: str
    workers_url: str
    worker_port: int


@dataclass
class BatchWork:
    """The batch part of the worker (components/jobs.py): its settings and the Google identity it pulls with."""

    env: dict[str, pulumi.Input[str]]
    google_service_account: pulumi.Input[str]


def container(image: pulumi.Input[str], front: QueueFront, batch: BatchWork | None,
              security_context: k8s.core.v1.SecurityContextArgs,
              api_auth: list[k8s.core.v1.EnvVarArgs]) -> k8s.core.v1.ContainerArgs:
    """A regular container, not a native sidecar: those stop only after WebUI has exited
    (https://kubernetes.io/docs/concepts/workloads/pods/sidecar-containers/#sidecar-containers-and-pod-lifecycle),
    and the worker must leave the request queue at once while the WebUI's preStop drain lets the job in flight finish."""
    plain = {"QUEUE_FRONT_URL": front.workers_url, **(batch.env if batch else {}), **HEARTBEAT_ENV}
    env = [k8s.core.v1.EnvVarArgs(name=k, value=v) for k, v in plain.items()]
    env += [k8s.core.v1.EnvVarArgs(name=name, value_from=k8s.core.v1.EnvVarSourceArgs(
        field_ref=k8s.core.v1.ObjectFieldSelectorArgs(field_path=path))) for name, path in POD_FIELDS.items()]
    return k8s.core.v1.ContainerArgs(
        name=CONTAINER,
        image=image,
        image_pull_policy="IfNotPresent",
        env=env + api_auth,
        startup_probe=k8s.core.v1.ProbeArgs(exec_=ALIVE, period_seconds=5, timeout_seconds=5, failure_threshold=12),
        readiness_probe=k8s.core.v1.ProbeArgs(exec_=READY, period_seconds=10, timeout_seconds=5),
        liveness_probe=k8s.core.v1.ProbeArgs(exec_=ALIVE, period_seconds=20, timeout_seconds=5, failure_threshold=3),
        volume_mounts=[k8s.core.v1.VolumeMountArgs(name=HEARTBEAT_VOLUME.name, mount_path=HEARTBEAT_DIR)],
        resources=k8s.core.v1.ResourceRequirementsArgs(
            requests={"cpu": "100m", "memory": "128Mi", "ephemeral-storage": "64Mi"},
            limits={"memory": "256Mi", "ephemeral-storage": "256Mi"},
        ),
        security_context=security_context,
    )
