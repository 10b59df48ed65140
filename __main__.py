"""sd-gke: Stable Diffusion WebUI on GKE with fast GPU cold starts.

Loads the stack config, composes the components and exports what operators need.
"""

from pathlib import Path

import pulumi
import pulumi_gcp as gcp

from components import config
from components import jobs as jobs_module
from components import request_queue as request_queue_module
from components.apis import ProjectApis, ProjectApisArgs
from components.autoscaling import Autoscaling, AutoscalingArgs
from components.base_image import BaseImage, BaseImageArgs
from components.cluster import Cluster, ClusterArgs
from components.compute_class import GpuComputeClass, GpuComputeClassArgs
from components.disk_attacher import DiskAttacher, DiskAttacherArgs
from components.gateway import Backend, Gateway, GatewayArgs, forwarded_for_entries, load_balancer_sources
from components.gpu_pool import GpuPool, GpuPoolArgs
from components.jobs import Jobs, JobsArgs
from components.labels import gcp_labels
from components.observability import GpuCapacity, Observability, ObservabilityArgs, QueueSubscriptions
from components.registry import Registry, RegistryArgs
from components.request_queue import RequestQueue, RequestQueueArgs
from components.runtime_image import RuntimeDiskImage, RuntimeDiskImageArgs
from components.timeouts import TimeoutChain
from components.webui import API_USER, NAMESPACE, SERVICE_ACCOUNT, Webui, WebuiArgs

ROOT = Path(__file__).parent

try:
    cfg = config.load(ROOT)
except config.ConfigError as err:
    raise pulumi.RunError(str(err)) from None
chain = TimeoutChain.of(cfg)

# Everything on the `google` provider waits for the project's APIs (components/apis.py).
apis = ProjectApis("apis", ProjectApisArgs(project=cfg.project, parts=cfg.parts),
                   pulumi.ResourceOptions(providers=[gcp.Provider("google-apis", project=cfg.project)]))
google = gcp.Provider("google", project=cfg.project, region=cfg.region, default_labels=gcp_labels(cfg.environment),
                      opts=pulumi.ResourceOptions(depends_on=[apis]))
on_google = pulumi.ResourceOptions(providers=[google])

cluster = Cluster("sd", ClusterArgs(config=cfg), on_google)
registry = Registry("sd", RegistryArgs(project=cfg.project, region=cfg.region, protect=cfg.protected), on_google)
base_image = BaseImage("base", BaseImageArgs(registry=registry), on_google)
runtime_image = RuntimeDiskImage(
    "runtime",
    RuntimeDiskImageArgs(
        project=cfg.project,
        zone=cfg.zones[0],
        recipe_path=ROOT / cfg.runtime.recipe,
        base_image=base_image.ref,
        base_python=base_image.python_version,
        node_zones=list(cfg.zones),
        subnetwork=cluster.subnet.self_link,
        machine_type=cfg.runtime.bake_machine_type,
        disk_size_gb=cfg.runtime.disk_size_gb,
        timeout_minutes=cfg.runtime.bake_timeout_minutes,
    ),
    on_google,
)

runtime_image_path = pulumi.Output.concat("projects/", cfg.project, "/global/images/", runtime_image.image_name)
boot_disk_delivery = cfg.runtime.delivery == "secondaryBootDisk"
gpu_pool = GpuPool(
    "sd",
    GpuPoolArgs(cluster=cluster, config=cfg.gpu_pool, region=cfg.region, zones=cfg.zones,
                runtime_hash12=runtime_image.hash12,
                runtime_image=runtime_image_path if boot_disk_delivery else None),
    on_google,
)

on_cluster = pulumi.ResourceOptions(providers=[google, cluster.provider])
if boot_disk_delivery:
    runtime_volume = gpu_pool.runtime_volume
else:
    disk_attacher = DiskAttacher(
        "runtime-disk",
        DiskAttacherArgs(
            project=cfg.project,
            zones=cfg.zones,
            environment=cfg.environment,
            registry=registry,
            runtime_image=runtime_image_path,
            runtime_hash12=gpu_pool.runtime_hash12,
            disk_type=cfg.runtime.disk_type,
            disk_size_gb=cfg.runtime.disk_size_gb,
            tolerations=gpu_pool.tolerations,
        ),
        on_cluster,
    )
    runtime_volume = disk_attacher.runtime_volume
node_selector = gpu_pool.node_selector
if gpu_pool.compute_class:
    compute_class = GpuComputeClass(
        "gpu", GpuComputeClassArgs(environment=cfg.environment, pool_names=[p.name for p in gpu_pool.pools]), on_cluster,
    )
    node_selector = {**node_selector, **compute_class.node_selector}
jobs = None
if cfg.jobs.enabled:
    jobs = Jobs(
        "jobs",
        JobsArgs(config=cfg.jobs, project=cfg.project, region=cfg.region, protect=cfg.protected,
                 webui_namespace=NAMESPACE, webui_service_account=SERVICE_ACCOUNT,
                 generation_timeout_seconds=chain.worker_call),
        on_google,
    )
webui = Webui(
    "webui",
    WebuiArgs(
        config=cfg.webui,
        environment=cfg.environment,
        image=base_image.ref,
        runtime=runtime_volume,
        node_selector=node_selector,
        registry=registry,
        chain=chain,
        front=request_queue_module.FRONT,
        tolerations=gpu_pool.workload_tolerations,
        batch=jobs.batch if jobs else None,
    ),
    on_cluster,
)
request_queue = RequestQueue(
    "request-queue",
    RequestQueueArgs(
        config=cfg.queue,
        environment=cfg.environment,
        registry=registry,
        chain=chain,
        load_balancer_ranges=load_balancer_sources(cfg.gateway, cfg.webui.public) if cfg.gateway.enabled else [],
        forwarded_for_entries=forwarded_for_entries(cfg.gateway, cfg.webui.public),
        api_auth=webui.api_auth,
    ),
    on_cluster,
)
autoscaling = Autoscaling(
    "autoscaling",
    AutoscalingArgs(
        config=cfg.autoscaling,
        environment=cfg.environment,
        namespace=webui.namespace,
        deployment=webui.deployment.metadata.name,
        demand_url=request_queue_module.DEMAND_URL,
        network=cluster.network.id,
        control_plane_cidr=cfg.network.master_cidr,
        backlog=jobs.backlog_scaling if jobs else None,
    ),
    on_cluster,
)
gateway = None
if cfg.gateway.enabled:
    gateway = Gateway(
        "webui",
        GatewayArgs(
            config=cfg.gateway,
            public=cfg.webui.public,
            environment=cfg.environment,
            region=cfg.region,
            network=cluster.network.id,
            backend=Backend(
                namespace=request_queue.namespace,
                service=request_queue_module.SERVICE,
                port=request_queue_module.HTTP_PORT,
                health_port=request_queue_module.HTTP_PORT,
                health_path=request_queue_module.HEALTH_PATH,
            ),
            backend_timeout_seconds=chain.load_balancer,
        ),
        on_cluster,
    )
observability = None
if cfg.observability.enabled:
    observability = Observability(
        "sd",
        ObservabilityArgs(project=cfg.project, environment=cfg.environment, config=cfg.observability,
                          capacity=GpuCapacity(max_nodes=gpu_pool.max_nodes,
                                               gpus_per_node=cfg.gpu_pool.accelerator_count),
                          disk_attacher=gpu_pool.delivery == "daemonset",
                          queue=QueueSubscriptions(work=jobs_module.SUBSCRIPTION,
                                                   dead_letter=jobs_module.DEAD_LETTER_SUBSCRIPTION)
                          if jobs else None),
        on_google,
    )

pulumi.export("cluster_name", cluster.cluster.name)
pulumi.export("cluster_endpoint", cluster.cluster.endpoint)
pulumi.export("cluster_dns_endpoint", cluster.dns_endpoint)
pulumi.export("gpu_pool", gpu_pool.pool.name)
pulumi.export("runtime_delivery", cfg.runtime.delivery)
pulumi.export("base_image", base_image.ref)
pulumi.export("runtime_image", runtime_image.self_link)
pulumi.export("runtime_hash", runtime_image.identity_hash)
pulumi.export("webui_namespace", webui.namespace)
pulumi.export("request_queue_service", request_queue.service.metadata.name)
pulumi.export("client_budget_seconds", chain.client_budget)
if gateway is not None:
    pulumi.export("webui_gateway", gateway.name)
if observability is not None:
    pulumi.export("dashboard", observability.dashboard.id)
if webui.api_password is not None:
    pulumi.export("webui_api_user", API_USER)
    pulumi.export("webui_api_password", webui.api_password.result)
if jobs is not None:
    pulumi.export("jobs_topic", jobs.topic.id)
    pulumi.export("results_bucket", jobs.bucket.name)
    pulumi.export("jobs_dead_letter_subscription", jobs.dead_letters.id)
    pulumi.export("keda_service_account", jobs.keda_service_account)
