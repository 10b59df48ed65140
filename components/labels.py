"""Labels, from one place: GCP resource labels and Kubernetes object labels."""

from __future__ import annotations

APP = "sd-gke"


def gcp_labels(environment: str) -> dict[str, str]:
    """Applied to every GCP resource through the provider's default_labels."""
    return {"app": APP, "environment": environment, "managed-by": "pulumi"}


def k8s_labels(component: str, environment: str) -> dict[str, str]:
    """Recommended Kubernetes labels; `selector_labels` is the stable subset used in selectors."""
    return {
        **selector_labels(component),
        "app.kubernetes.io/part-of": APP,
        "app.kubernetes.io/managed-by": "pulumi",
        "sd-gke/environment": environment,
    }


def selector_labels(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": component, "app.kubernetes.io/instance": f"{APP}-{component}"}
