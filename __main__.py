"""sd-gke: Stable Diffusion WebUI on GKE with fast GPU cold starts.

Loads the stack config, composes the components and exports what operators need.
"""

from pathlib import Path

import pulumi
import pulumi_gcp as gcp

from components import config
from components.cluster import Cluster, ClusterArgs
from components.labels import gcp_labels

try:
    cfg = config.load(Path(__file__).parent)
except config.ConfigError as err:
    raise pulumi.RunError(str(err)) from None

google = gcp.Provider(
    "google",
    project=cfg.project,
    region=cfg.region,
    default_labels=gcp_labels(cfg.environment),
)
providers = pulumi.ResourceOptions(providers=[google])

cluster = Cluster("sd", ClusterArgs(config=cfg), providers)

pulumi.export("cluster_name", cluster.cluster.name)
pulumi.export("cluster_endpoint", cluster.cluster.endpoint)
pulumi.export("gpu_pool", cluster.gpu_pool.name)
