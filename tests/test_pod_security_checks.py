"""Each Pod Security check of policy/pod_security.py on its own: every value the standard allows, who each refusal
names (the pod, an init container, a container) and in what words.

The allowed values are copied here from kubernetes/pod-security-admission (policy/check_*.go), independently of
the module's own tables: capabilities_allowed_1_0 (check_capabilities_baseline.go), sysctlsAllowedV1Dot32
(check_sysctls.go, the set GKE 1.33 enforces with enforce-version latest), selinuxAllowedTypes1_31
(check_seLinuxOptions.go) and the volume sources restrictedVolumes_1_0 lets through (check_restrictedVolumes.go).
"""

from __future__ import annotations

import pytest

from tools import policy_check

policy_check.policies()  # puts the pack's directory on sys.path, as the pack runs
import pod_security  # noqa: E402

BASELINE, RESTRICTED = pod_security.BASELINE, pod_security.RESTRICTED
CAPABILITIES = ("AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
                "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT")
SYSCTLS = ("kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies",
           "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start", "net.ipv4.ip_local_reserved_ports",
           "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
           "net.ipv4.tcp_keepalive_probes", "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem")
SELINUX_TYPES = ("", "container_t", "container_init_t", "container_kvm_t", "container_engine_t")
VOLUME_SOURCES = ("configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "image", "persistentVolumeClaim",
                  "projected", "secret")


def pod(init: dict | None = None, app: dict | None = None, **spec) -> dict:
    """A pod with an init container and a container, each with the given securityContext."""
    return {"initContainers": [{"name": "init", "image": "i", "securityContext": init or {}}],
            "containers": [{"name": "app", "image": "a", "securityContext": app or {}}], **spec}


def found(check: str, spec: dict, level: str = BASELINE, meta: dict | None = None) -> str | None:
    """What `check` says of the pod at `level`, None when it admits it."""
    messages = [v.message for v in pod_security.violations(meta or {}, spec, level) if v.check == check]
    return messages[0] if messages else None


# --- what the standard allows -----------------------------------------------------------------

@pytest.mark.parametrize("capability", CAPABILITIES)
def test_baseline_admits_each_default_capability(capability):
    assert found("capabilities_baseline", pod(app={"capabilities": {"add": [capability]}})) is None


@pytest.mark.parametrize("name", SYSCTLS)
def test_baseline_admits_each_safe_sysctl(name):
    assert found("sysctls", pod(securityContext={"sysctls": [{"name": name, "value": "1"}]})) is None


@pytest.mark.parametrize("selinux_type", SELINUX_TYPES)
def test_baseline_admits_each_container_selinux_type(selinux_type):
    assert found("seLinuxOptions", pod(securityContext={"seLinuxOptions": {"type": selinux_type}})) is None


@pytest.mark.parametrize("source", VOLUME_SOURCES)
def test_restricted_admits_each_core_volume_source(source):
    assert found("restrictedVolumes", pod(volumes=[{"name": "v", source: {}}]), RESTRICTED) is None


# --- Baseline's refusals, in words -------------------------------------------------------------

def test_host_process_names_the_pod_and_each_container_setting_it():
    host = {"windowsOptions": {"hostProcess": True}}
    assert found("windowsHostProcess", pod(app=host, securityContext=host)) == (
        "'pod', 'app' must not set securityContext.windowsOptions.hostProcess=true")
    assert found("windowsHostProcess", pod(init=host)) == (
        "'init' must not set securityContext.windowsOptions.hostProcess=true")


def test_host_namespaces_are_named_each():
    assert found("hostNamespaces", pod(hostNetwork=True, hostPID=True, hostIPC=True)) == (
        "must not set hostNetwork=true, hostPID=true, hostIPC=true")
    assert found("hostNamespaces", pod(hostIPC=True)) == "must not set hostIPC=true"


def test_privileged_names_init_and_regular_containers():
    assert found("privileged", pod(init={"privileged": True}, app={"privileged": True})) == (
        "containers 'init', 'app' must not set securityContext.privileged=true")


def test_capabilities_beyond_the_default_set_are_named_sorted():
    spec = pod(init={"capabilities": {"add": ["SYS_ADMIN", "CHOWN"]}}, app={"capabilities": {"add": ["NET_ADMIN"]}})
    assert found("capabilities_baseline", spec) == (
        "must not add 'NET_ADMIN', 'SYS_ADMIN' to securityContext.capabilities")


def test_host_path_volumes_are_named():
    spec = pod(volumes=[{"name": "a", "hostPath": {"path": "/a"}}, {"name": "b", "emptyDir": {}},
                        {"name": "c", "hostPath": {"path": "/c"}}])
    assert found("hostPathVolumes", spec) == "hostPath volumes 'a', 'c'"


def test_host_ports_are_named_once_each_in_order():
    spec = pod()
    spec["containers"][0]["ports"] = [{"containerPort": 1, "hostPort": 8080}, {"containerPort": 2}]
    spec["initContainers"][0]["ports"] = [{"containerPort": 3, "hostPort": 80}, {"containerPort": 4, "hostPort": 8080}]
    assert found("hostPorts", spec) == "hostPorts 80, 8080"


def test_apparmor_names_the_pod_the_containers_and_the_annotations():
    unconfined = {"appArmorProfile": {"type": "Unconfined"}}
    meta = {"annotations": {"container.apparmor.security.beta.kubernetes.io/app": "unconfined",
                            "container.apparmor.security.beta.kubernetes.io/init": "localhost/mine",
                            "other.example.com/app": "unconfined"}}
    assert found("appArmorProfile", pod(init=unconfined, securityContext=unconfined), meta=meta) == (
        "AppArmor profile pod='Unconfined', init='Unconfined', "
        "container.apparmor.security.beta.kubernetes.io/app='unconfined'")


@pytest.mark.parametrize("value", ["", "runtime/default", "localhost/mine"])
def test_apparmor_annotations_the_standard_allows_are_admitted(value):
    meta = {"annotations": {"container.apparmor.security.beta.kubernetes.io/app": value}}
    assert found("appArmorProfile", pod(), meta=meta) is None


@pytest.mark.parametrize("profile", ["RuntimeDefault", "Localhost"])
def test_apparmor_profile_types_the_standard_allows_are_admitted(profile):
    assert found("appArmorProfile", pod(app={"appArmorProfile": {"type": profile}})) is None


def test_selinux_names_a_bad_type_and_each_user_or_role_set():
    spec = pod(app={"seLinuxOptions": {"user": "u", "role": "r"}},
               securityContext={"seLinuxOptions": {"type": "spc_t"}})
    assert found("seLinuxOptions", spec) == (
        "pod seLinuxOptions.type='spc_t', app seLinuxOptions.user set, app seLinuxOptions.role set")


def test_selinux_level_alone_is_admitted():
    assert found("seLinuxOptions", pod(init={"seLinuxOptions": {"level": "s0:c1"}})) is None


def test_proc_mount_names_the_containers_other_than_default():
    spec = pod(init={"procMount": "Unmasked"}, app={"procMount": "Default"})
    assert found("procMount", spec) == "containers 'init' must not set securityContext.procMount other than Default"


def test_seccomp_baseline_names_each_unconfined_profile():
    unconfined = {"seccompProfile": {"type": "Unconfined"}}
    assert found("seccompProfile_baseline", pod(app=unconfined, securityContext=unconfined)) == (
        "seccompProfile.type pod='Unconfined', app='Unconfined'")


def test_unsafe_sysctls_are_named():
    spec = pod(securityContext={"sysctls": [{"name": "kernel.msgmax"}, {"name": "net.ipv4.tcp_syncookies"},
                                            {"name": "vm.swappiness"}]})
    assert found("sysctls", spec) == "sysctls 'kernel.msgmax', 'vm.swappiness'"


# --- Restricted's refusals, in words -------------------------------------------------------------

def test_restricted_volumes_are_named_with_their_sources():
    spec = pod(volumes=[{"name": "data", "nfs": {"server": "s"}}, {"name": "ok", "secret": {}}, {"name": "bare"}])
    assert found("restrictedVolumes", spec, RESTRICTED) == (
        "volumes 'data' (nfs), 'bare' (no source) use restricted volume types")


def test_privilege_escalation_names_containers_not_setting_it_false():
    spec = pod(init={"allowPrivilegeEscalation": False}, app={"allowPrivilegeEscalation": True})
    assert found("allowPrivilegeEscalation", spec, RESTRICTED) == (
        "containers 'app' must set securityContext.allowPrivilegeEscalation=false")


def test_run_as_non_root_false_on_the_pod_names_the_pod_and_the_containers_left_to_it():
    spec = pod(app={"runAsNonRoot": True}, securityContext={"runAsNonRoot": False})
    assert found("runAsNonRoot", spec, RESTRICTED) == (
        "'pod', 'init' must run with securityContext.runAsNonRoot=true (pod or container)")


def test_run_as_non_root_true_on_the_pod_covers_containers_that_do_not_say():
    spec = pod(init={"runAsNonRoot": False}, securityContext={"runAsNonRoot": True})
    assert found("runAsNonRoot", spec, RESTRICTED) == (
        "'init' must run with securityContext.runAsNonRoot=true (pod or container)")


def test_run_as_user_zero_names_the_pod_and_each_container():
    spec = pod(init={"runAsUser": 0}, app={"runAsUser": 1000}, securityContext={"runAsUser": 0})
    assert found("runAsUser", spec, RESTRICTED) == "'pod', 'init' must not set runAsUser=0"


def test_seccomp_restricted_names_containers_without_a_profile_when_the_pod_sets_none():
    spec = pod(app={"seccompProfile": {"type": "RuntimeDefault"}})
    assert found("seccompProfile_restricted", spec, RESTRICTED) == (
        "pod or containers 'init' must set seccompProfile.type RuntimeDefault or Localhost")


def test_seccomp_restricted_names_an_unconfined_profile_first():
    spec = pod(init={"seccompProfile": {"type": "Unconfined"}}, securityContext={"seccompProfile": {"type": "Localhost"}})
    assert found("seccompProfile_restricted", spec, RESTRICTED) == "seccompProfile.type init='Unconfined'"


def test_capabilities_restricted_names_what_each_container_misses_and_adds():
    spec = pod(init={"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE", "CHOWN"]}},
               app={"capabilities": {"drop": ["NET_RAW"]}})
    assert found("capabilities_restricted", spec, RESTRICTED) == (
        "capabilities: 'init' must not add 'CHOWN'; 'app' must drop ALL")


@pytest.mark.parametrize("check", ["allowPrivilegeEscalation", "seccompProfile_restricted", "capabilities_restricted"])
def test_restricted_linux_only_checks_skip_windows_pods(check):
    assert found(check, pod(os={"name": "windows"}), RESTRICTED) is None


def test_an_ephemeral_container_is_judged_like_the_others():
    spec = pod(ephemeralContainers=[{"name": "debug", "image": "d", "securityContext": {"privileged": True}}])
    assert found("privileged", spec) == "containers 'debug' must not set securityContext.privileged=true"


def test_a_volume_with_two_sources_names_both():
    spec = pod(volumes=[{"name": "odd", "nfs": {"server": "s"}, "hostPath": {"path": "/x"}}])
    assert found("restrictedVolumes", spec, RESTRICTED) == "volumes 'odd' (hostPath, nfs) use restricted volume types"


def test_seccomp_restricted_names_every_unconfined_profile():
    unconfined = {"seccompProfile": {"type": "Unconfined"}}
    assert found("seccompProfile_restricted", pod(init=unconfined, app=unconfined), RESTRICTED) == (
        "seccompProfile.type init='Unconfined', app='Unconfined'")


@pytest.mark.parametrize(("container", "check"), [
    ({"seccompProfile": {"type": "Unconfined"}}, "seccompProfile_restricted"),
    ({"capabilities": {"add": ["SYS_ADMIN"]}}, "capabilities_restricted"),
])
def test_at_restricted_a_restricted_check_replaces_its_baseline_namesake(container, check):
    """check_seccompProfile_restricted.go and check_capabilities_restricted.go override the baseline checks."""
    spec = pod(init={"seccompProfile": {"type": "RuntimeDefault"}, "allowPrivilegeEscalation": False,
                     "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True},
               app={"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
                    "seccompProfile": {"type": "RuntimeDefault"}} | container)
    assert [v.check for v in pod_security.violations({}, spec, RESTRICTED)] == [check]


def test_each_violation_carries_its_checks_level():
    spec = pod(app={"privileged": True}, volumes=[{"name": "n", "nfs": {"server": "s"}}])
    levels = {v.check: v.level for v in pod_security.violations({}, spec, RESTRICTED)}
    assert levels["privileged"] == BASELINE and levels["restrictedVolumes"] == RESTRICTED


def test_an_unknown_level_is_refused_naming_the_levels():
    with pytest.raises(ValueError, match=r"^Pod Security level 'strict' is not one of privileged, baseline, restricted$"):
        pod_security.checks_at("strict")


def test_an_invalid_enforce_label_means_restricted_and_says_so():
    assert pod_security.enforce_level({pod_security.ENFORCE_LABEL: "strict"}) == (
        RESTRICTED, "label pod-security.kubernetes.io/enforce='strict' is not one of privileged, baseline, restricted; "
                    "Pod Security admission then enforces restricted")
