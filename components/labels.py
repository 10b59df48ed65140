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


def pod_security_labels(enforce: str, report: str = "restricted") -> dict[str, str]:
    """Pod Security admission labels: `enforce` admits the namespace's pods, and warn and audit at
    `report` name every pod that needs more than that, in the API's warnings and the audit log
    (https://kubernetes.io/docs/concepts/security/pod-security-admission/#pod-security-admission-labels-for-namespaces)."""
    return {f"pod-security.kubernetes.io/{mode}": level
            for mode, level in (("enforce", enforce), ("warn", report), ("audit", report))}
