"""The Pod Security Standards, checked the way the Pod Security admission controller checks them.

A namespace's `pod-security.kubernetes.io/enforce` label picks a level; the admission controller
refuses every pod that breaks a check of that level, and since a Deployment's pods are created by
its ReplicaSet, a refused template does not fail the apply: it just never gets a pod. This module
answers, for a pod template, which checks it breaks at a level, so the pack can refuse it at preview.

The checks and their allowed values are those of kubernetes/pod-security-admission@v0.33.13
(policy/check_*.go), the version GKE 1.33 runs with the default `enforce-version: latest`; the
standard itself: https://kubernetes.io/docs/concepts/security/pod-security-standards/ .
Pure functions over Kubernetes JSON (camelCase), as Pulumi passes resource inputs to the pack.
Not modelled: older `enforce-version` pins, and the user-namespace relaxation of runAsNonRoot,
runAsUser and procMount (behind the UserNamespacesPodSecurityStandards gate, off by default).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

PRIVILEGED, BASELINE, RESTRICTED = "privileged", "baseline", "restricted"
LEVELS = (PRIVILEGED, BASELINE, RESTRICTED)
ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
CLUSTER_DEFAULT = PRIVILEGED
"""A namespace without the label gets the admission configuration's default, `privileged` unless the
cluster configures another (https://kubernetes.io/docs/tasks/configure-pod-container/enforce-standards-admission-controller/);
GKE runs PodSecurity without custom configuration
(https://cloud.google.com/kubernetes-engine/docs/how-to/podsecurityadmission)."""

BASELINE_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
})
"""check_capabilities_baseline.go: the container runtime's default set."""
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes", "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem",
})
"""check_sysctls.go, the set of v1.32 and later."""
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
"""check_seLinuxOptions.go, the set of v1.31 and later."""
PROFILE_TYPES = frozenset({"RuntimeDefault", "Localhost"})
"""Allowed seccompProfile.type and appArmorProfile.type (check_seccompProfile_baseline.go,
check_appArmorProfile.go)."""
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
RESTRICTED_VOLUME_SOURCES = frozenset({
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "image", "persistentVolumeClaim", "projected",
    "secret",
})
"""check_restrictedVolumes.go: the only volume sources Restricted admits."""


@dataclass(frozen=True)
class Violation:
    check: str
    level: str
    message: str


@dataclass(frozen=True)
class Check:
    id: str
    level: str
    run: Callable[[dict, dict], str | None]
    """(pod template metadata, pod spec) -> what is forbidden, or None."""
    overrides: str | None = None
    """At its level, this check replaces that check of a lower level (check_*.go OverrideCheckIDs)."""


def containers(pod: dict) -> Iterable[dict]:
    """Init, regular and ephemeral containers, as visitContainers (policy/visitor.go) walks them."""
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from pod.get(key) or []


def _sc(obj: dict) -> dict:
    return obj.get("securityContext") or {}


def _names(items: Iterable[str]) -> str:
    return ", ".join(f"{i!r}" for i in items)


def _windows(pod: dict) -> bool:
    """Restricted's Linux-only checks skip Windows pods (v1.25 and later)."""
    return (pod.get("os") or {}).get("name") == "windows"


# --- Baseline -------------------------------------------------------------------------------

def _host_process(meta: dict, pod: dict) -> str | None:
    setters = (["pod"] if (_sc(pod).get("windowsOptions") or {}).get("hostProcess") else []) + [
        c.get("name") for c in containers(pod) if (_sc(c).get("windowsOptions") or {}).get("hostProcess")]
    return f"{_names(setters)} must not set securityContext.windowsOptions.hostProcess=true" if setters else None


def _host_namespaces(meta: dict, pod: dict) -> str | None:
    shared = [f for f in ("hostNetwork", "hostPID", "hostIPC") if pod.get(f)]
    return f"must not set {', '.join(f'{f}=true' for f in shared)}" if shared else None


def _privileged(meta: dict, pod: dict) -> str | None:
    bad = [c.get("name") for c in containers(pod) if _sc(c).get("privileged")]
    return f"containers {_names(bad)} must not set securityContext.privileged=true" if bad else None


def _capabilities_baseline(meta: dict, pod: dict) -> str | None:
    added = {a for c in containers(pod) for a in (_sc(c).get("capabilities") or {}).get("add") or []}
    extra = sorted(added - BASELINE_CAPABILITIES)
    return f"must not add {_names(extra)} to securityContext.capabilities" if extra else None


def _host_path_volumes(meta: dict, pod: dict) -> str | None:
    bad = [v.get("name") for v in pod.get("volumes") or [] if v.get("hostPath") is not None]
    return f"hostPath volumes {_names(bad)}" if bad else None


def _host_ports(meta: dict, pod: dict) -> str | None:
    ports = sorted({p["hostPort"] for c in containers(pod) for p in c.get("ports") or [] if p.get("hostPort")})
    return f"hostPorts {', '.join(map(str, ports))}" if ports else None


def _apparmor(meta: dict, pod: dict) -> str | None:
    bad = [(who, t) for who, t in [("pod", (_sc(pod).get("appArmorProfile") or {}).get("type"))] + [
        (c.get("name"), (_sc(c).get("appArmorProfile") or {}).get("type")) for c in containers(pod)]
        if t is not None and t not in PROFILE_TYPES]
    bad += [(k, v) for k, v in (meta.get("annotations") or {}).items()
            if k.startswith(APPARMOR_ANNOTATION) and v not in ("", "runtime/default") and not v.startswith("localhost/")]
    return "AppArmor profile " + ", ".join(f"{who}={t!r}" for who, t in bad) if bad else None


def _selinux(meta: dict, pod: dict) -> str | None:
    problems = []
    for who, opts in [("pod", _sc(pod).get("seLinuxOptions"))] + [
            (c.get("name"), _sc(c).get("seLinuxOptions")) for c in containers(pod)]:
        opts = opts or {}
        if opts.get("type", "") not in SELINUX_TYPES:
            problems.append(f"{who} seLinuxOptions.type={opts['type']!r}")
        problems += [f"{who} seLinuxOptions.{k} set" for k in ("user", "role") if opts.get(k)]
    return ", ".join(problems) if problems else None


def _proc_mount(meta: dict, pod: dict) -> str | None:
    bad = [c.get("name") for c in containers(pod) if _sc(c).get("procMount") not in (None, "Default")]
    return f"containers {_names(bad)} must not set securityContext.procMount other than Default" if bad else None


def _seccomp_profiles(pod: dict) -> list[tuple[str, str | None]]:
    return [("pod", (_sc(pod).get("seccompProfile") or {}).get("type"))] + [
        (c.get("name"), (_sc(c).get("seccompProfile") or {}).get("type")) for c in containers(pod)]


def _seccomp_baseline(meta: dict, pod: dict) -> str | None:
    bad = [f"{who}={t!r}" for who, t in _seccomp_profiles(pod) if t is not None and t not in PROFILE_TYPES]
    return f"seccompProfile.type {', '.join(bad)}" if bad else None


def _sysctls(meta: dict, pod: dict) -> str | None:
    bad = [s.get("name") for s in _sc(pod).get("sysctls") or [] if s.get("name") not in SAFE_SYSCTLS]
    return f"sysctls {_names(bad)}" if bad else None


# --- Restricted -----------------------------------------------------------------------------

def _restricted_volumes(meta: dict, pod: dict) -> str | None:
    bad = [f"{v.get('name')!r} ({', '.join(sorted(set(v) - {'name'})) or 'no source'})"
           for v in pod.get("volumes") or [] if not RESTRICTED_VOLUME_SOURCES & set(v)]
    return f"volumes {', '.join(bad)} use restricted volume types" if bad else None


def _privilege_escalation(meta: dict, pod: dict) -> str | None:
    if _windows(pod):
        return None
    bad = [c.get("name") for c in containers(pod) if _sc(c).get("allowPrivilegeEscalation") is not False]
    return f"containers {_names(bad)} must set securityContext.allowPrivilegeEscalation=false" if bad else None


def _run_as_non_root(meta: dict, pod: dict) -> str | None:
    pod_value = _sc(pod).get("runAsNonRoot")
    bad = ["pod"] if pod_value is False else []
    bad += [c.get("name") for c in containers(pod)
            if _sc(c).get("runAsNonRoot") is False or (_sc(c).get("runAsNonRoot") is None and pod_value is not True)]
    return f"{_names(bad)} must run with securityContext.runAsNonRoot=true (pod or container)" if bad else None


def _run_as_user(meta: dict, pod: dict) -> str | None:
    bad = (["pod"] if _sc(pod).get("runAsUser") == 0 else []) + [
        c.get("name") for c in containers(pod) if _sc(c).get("runAsUser") == 0]
    return f"{_names(bad)} must not set runAsUser=0" if bad else None


def _seccomp_restricted(meta: dict, pod: dict) -> str | None:
    if _windows(pod):
        return None
    profiles = _seccomp_profiles(pod)
    pod_set = profiles[0][1] in PROFILE_TYPES
    bad = [f"{who}={t!r}" for who, t in profiles if t is not None and t not in PROFILE_TYPES]
    unset = [who for who, t in profiles[1:] if t is None and not pod_set]
    if bad:
        return f"seccompProfile.type {', '.join(bad)}"
    return f"pod or containers {_names(unset)} must set seccompProfile.type RuntimeDefault or Localhost" if unset else None


def _capabilities_restricted(meta: dict, pod: dict) -> str | None:
    if _windows(pod):
        return None
    problems = []
    for c in containers(pod):
        caps = _sc(c).get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"{c.get('name')!r} must drop ALL")
        extra = [a for a in caps.get("add") or [] if a != "NET_BIND_SERVICE"]
        if extra:
            problems.append(f"{c.get('name')!r} must not add {_names(extra)}")
    return "capabilities: " + "; ".join(problems) if problems else None


CHECKS = (
    Check("windowsHostProcess", BASELINE, _host_process),
    Check("hostNamespaces", BASELINE, _host_namespaces),
    Check("privileged", BASELINE, _privileged),
    Check("capabilities_baseline", BASELINE, _capabilities_baseline),
    Check("hostPathVolumes", BASELINE, _host_path_volumes),
    Check("hostPorts", BASELINE, _host_ports),
    Check("appArmorProfile", BASELINE, _apparmor),
    Check("seLinuxOptions", BASELINE, _selinux),
    Check("procMount", BASELINE, _proc_mount),
    Check("seccompProfile_baseline", BASELINE, _seccomp_baseline),
    Check("sysctls", BASELINE, _sysctls),
    Check("restrictedVolumes", RESTRICTED, _restricted_volumes, overrides="hostPathVolumes"),
    Check("allowPrivilegeEscalation", RESTRICTED, _privilege_escalation),
    Check("runAsNonRoot", RESTRICTED, _run_as_non_root),
    Check("runAsUser", RESTRICTED, _run_as_user),
    Check("seccompProfile_restricted", RESTRICTED, _seccomp_restricted, overrides="seccompProfile_baseline"),
    Check("capabilities_restricted", RESTRICTED, _capabilities_restricted, overrides="capabilities_baseline"),
)


def checks_at(level: str) -> list[Check]:
    """The checks a level applies: its own and every lower level's, minus those it overrides."""
    if level not in LEVELS:
        raise ValueError(f"Pod Security level {level!r} is not one of {', '.join(LEVELS)}")
    applied = [c for c in CHECKS if LEVELS.index(c.level) <= LEVELS.index(level)]
    overridden = {c.overrides for c in applied if c.overrides}
    return [c for c in applied if c.id not in overridden]


def violations(meta: dict, pod: dict, level: str) -> list[Violation]:
    """Every check of `level` the pod (template metadata and spec) breaks."""
    found = []
    for check in checks_at(level):
        message = check.run(meta or {}, pod)
        if message:
            found.append(Violation(check.id, check.level, message))
    return found


def enforce_level(labels: dict | None) -> tuple[str, str | None]:
    """The level a namespace enforces, and what is wrong with its label if anything. An invalid value
    makes the controller enforce `restricted` (api/helpers.go ParseLevel, PolicyToEvaluate)."""
    value = (labels or {}).get(ENFORCE_LABEL)
    if value is None:
        return CLUSTER_DEFAULT, None
    if value not in LEVELS:
        return RESTRICTED, (f"label {ENFORCE_LABEL}={value!r} is not one of {', '.join(LEVELS)}; "
                            "Pod Security admission then enforces restricted")
    return value, None
