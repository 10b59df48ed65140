"""Pod Security admission: each rule of the standard, and the pack's policy over the recorded stacks.

A Deployment whose pods its namespace's level refuses is accepted by the API server and then never
gets a pod (admission judges pods, which the ReplicaSet creates). The rules, their allowed values and
which restricted check replaces which baseline one are those of kubernetes/pod-security-admission
v0.33.13 (policy/check_*.go); see policy/pod_security.py.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.test_policy import mutate, violations_of
from tools import policy_check

policy_check.policies()  # puts the pack's directory on sys.path, as the pack runs
import pod_security  # noqa: E402

NAMESPACE = "kubernetes:core/v1:Namespace"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
DAEMONSET = "kubernetes:apps/v1:DaemonSet"
CRONJOB = "kubernetes:batch/v1:CronJob"
POLICY = "k8s-pod-security-admission"


def restricted_pod() -> dict:
    """The smallest pod that meets Restricted."""
    return {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "app", "image": "app", "securityContext": {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}],
        "volumes": [{"name": "scratch", "emptyDir": {}}],
    }


def container_sc(pod: dict) -> dict:
    return pod["containers"][0]["securityContext"]


@dataclass(frozen=True)
class Rule:
    check: str
    level: str
    refused: Callable[[dict, dict], None]
    """Changes (metadata, pod) into what the rule forbids."""
    admitted: Callable[[dict, dict], None]
    """Changes them into the closest thing the rule allows."""


def _container(**values):
    return lambda meta, pod: container_sc(pod).update(values)


def _pod_sc(**values):
    return lambda meta, pod: pod["securityContext"].update(values)


def _pod(**values):
    return lambda meta, pod: pod.update(values)


def _volume(source: dict):
    return lambda meta, pod: pod["volumes"].append({"name": "extra", **source})


def _annotation(key: str, value: str):
    return lambda meta, pod: meta.setdefault("annotations", {}).update({key: value})


def _drop(*keys: str):
    def change(meta, pod):
        for key in keys:
            target, _, field = key.rpartition(".")
            (container_sc(pod) if target == "container" else pod["securityContext"]).pop(field)
    return change


def _both(*changes):
    def change(meta, pod):
        for c in changes:
            c(meta, pod)
    return change


RULES = [
    Rule("windowsHostProcess", "baseline", _container(windowsOptions={"hostProcess": True}),
         _container(windowsOptions={"hostProcess": False})),
    Rule("hostNamespaces", "baseline", _pod(hostNetwork=True), _pod(hostNetwork=False, hostPID=False, hostIPC=False)),
    Rule("privileged", "baseline", _container(privileged=True), _container(privileged=False)),
    Rule("capabilities_baseline", "baseline", _container(capabilities={"add": ["SYS_ADMIN"]}),
         _container(capabilities={"add": ["CHOWN", "NET_BIND_SERVICE"]})),
    Rule("hostPathVolumes", "baseline", _volume({"hostPath": {"path": "/mnt"}}), _volume({"configMap": {"name": "c"}})),
    Rule("hostPorts", "baseline", lambda m, p: p["containers"][0].update(ports=[{"containerPort": 80, "hostPort": 80}]),
         lambda m, p: p["containers"][0].update(ports=[{"containerPort": 80, "hostPort": 0}])),
    Rule("appArmorProfile", "baseline", _container(appArmorProfile={"type": "Unconfined"}),
         _container(appArmorProfile={"type": "Localhost", "localhostProfile": "k8s-app"})),
    Rule("appArmorProfile", "baseline", _annotation("container.apparmor.security.beta.kubernetes.io/app", "unconfined"),
         _annotation("container.apparmor.security.beta.kubernetes.io/app", "localhost/k8s-app")),
    Rule("seLinuxOptions", "baseline", _container(seLinuxOptions={"type": "spc_t"}),
         _container(seLinuxOptions={"type": "container_t", "level": "s0:c1,c2"})),
    Rule("seLinuxOptions", "baseline", _pod_sc(seLinuxOptions={"user": "system_u"}), _pod_sc(seLinuxOptions={})),
    Rule("procMount", "baseline", _container(procMount="Unmasked"), _container(procMount="Default")),
    Rule("seccompProfile_baseline", "baseline", _pod_sc(seccompProfile={"type": "Unconfined"}), _drop("pod.seccompProfile")),
    Rule("sysctls", "baseline", _pod_sc(sysctls=[{"name": "kernel.msgmax", "value": "1"}]),
         _pod_sc(sysctls=[{"name": "net.ipv4.tcp_keepalive_time", "value": "60"}])),
    Rule("restrictedVolumes", "restricted", _volume({"nfs": {"server": "nfs", "path": "/"}}),
         _volume({"persistentVolumeClaim": {"claimName": "c"}})),
    Rule("allowPrivilegeEscalation", "restricted", _container(allowPrivilegeEscalation=True),
         _container(allowPrivilegeEscalation=False)),
    Rule("allowPrivilegeEscalation", "restricted", _drop("container.allowPrivilegeEscalation"),
         _pod(os={"name": "linux"})),
    Rule("runAsNonRoot", "restricted", _container(runAsNonRoot=False),
         _both(_drop("pod.runAsNonRoot"), _container(runAsNonRoot=True))),
    Rule("runAsUser", "restricted", _container(runAsUser=0), _drop("pod.runAsUser")),
    Rule("seccompProfile_restricted", "restricted", _drop("pod.seccompProfile"),
         _both(_drop("pod.seccompProfile"), _container(seccompProfile={"type": "Localhost", "localhostProfile": "p.json"}))),
    Rule("capabilities_restricted", "restricted", _container(capabilities={"drop": ["NET_RAW"]}),
         _container(capabilities={"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]})),
]


def rule_id(rule: Rule) -> str:
    return f"{rule.check}-{RULES.index(rule)}"


def applied(change: Callable[[dict, dict], None]) -> tuple[dict, dict]:
    meta, pod = {}, restricted_pod()
    change(meta, pod)
    return meta, pod


def checks(meta: dict, pod: dict, level: str) -> list[str]:
    return [v.check for v in pod_security.violations(meta, pod, level)]


# --- the rules ------------------------------------------------------------------------------

def test_every_check_of_the_admission_controller_has_a_rule_here():
    assert {c.id for c in pod_security.CHECKS} == {r.check for r in RULES}


def test_a_restricted_pod_passes_every_level():
    for level in pod_security.LEVELS:
        assert checks({}, restricted_pod(), level) == []


@pytest.mark.parametrize("rule", RULES, ids=rule_id)
def test_rule_refuses_what_it_forbids_at_its_level_and_above(rule):
    meta, pod = applied(rule.refused)
    assert checks(meta, pod, rule.level) == [rule.check]
    assert checks(meta, pod, "restricted"), "a stricter level refuses it too"
    assert checks(meta, pod, "privileged") == []


@pytest.mark.parametrize("rule", RULES, ids=rule_id)
def test_rule_admits_what_it_allows(rule):
    meta, pod = applied(rule.admitted)
    assert checks(meta, pod, rule.level) == []


def test_restricted_reports_a_host_path_once_as_a_restricted_volume_type():
    meta, pod = applied(_volume({"hostPath": {"path": "/mnt"}}))
    assert checks(meta, pod, "restricted") == ["restrictedVolumes"]


def test_restricted_judges_added_capabilities_by_its_own_rule():
    meta, pod = applied(_container(capabilities={"drop": ["ALL"], "add": ["CHOWN"]}))
    assert checks(meta, pod, "baseline") == []
    assert checks(meta, pod, "restricted") == ["capabilities_restricted"]


def test_restricted_linux_only_rules_skip_windows_pods():
    meta, pod = applied(_both(_drop("container.allowPrivilegeEscalation", "pod.seccompProfile"), _pod(os={"name": "windows"})))
    assert checks(meta, pod, "restricted") == []


def test_init_containers_are_judged_like_containers():
    pod = restricted_pod()
    pod["initContainers"] = [copy.deepcopy(pod["containers"][0]) | {"name": "init"}]
    pod["initContainers"][0]["securityContext"]["privileged"] = True
    assert "privileged" in checks({}, pod, "baseline")


def test_a_namespace_without_the_label_gets_the_cluster_default_privileged():
    assert pod_security.enforce_level({}) == ("privileged", None)
    assert pod_security.enforce_level(None) == ("privileged", None)


def test_a_namespace_label_names_the_level_it_enforces():
    assert pod_security.enforce_level({pod_security.ENFORCE_LABEL: "baseline"}) == ("baseline", None)


def test_an_invalid_level_enforces_restricted_and_is_reported():
    level, problem = pod_security.enforce_level({pod_security.ENFORCE_LABEL: "strict"})
    assert level == "restricted"
    assert "'strict' is not one of privileged, baseline, restricted" in problem


def test_an_unknown_level_is_a_programming_error():
    with pytest.raises(ValueError, match="'strict' is not one of"):
        pod_security.checks_at("strict")


# --- the pack over the recorded stacks --------------------------------------------------------

def _enforce(level: str):
    def change(inputs: dict) -> None:
        inputs["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = level
    return change


def test_webui_in_a_baseline_namespace_is_refused_for_its_runtime_host_path(runs):
    """Today's main labelled sd-webui `baseline`: the ReplicaSet could never have created a pod."""
    run = runs["dev"]
    found = violations_of(run, POLICY, mutate(run, NAMESPACE, "webui-namespace", _enforce("baseline")))
    assert found == ["Deployment sd-webui/webui: namespace 'sd-webui' enforces Pod Security 'baseline', which "
                     "refuses its pods: hostPath volumes 'runtime' (hostPathVolumes)."]


def test_disk_attacher_in_a_baseline_namespace_is_refused(runs):
    run = runs["dev"]
    found = violations_of(run, POLICY, mutate(run, NAMESPACE, "runtime-disk-namespace", _enforce("baseline")))
    assert [m.split(": ", 1)[0] for m in found] == ["DaemonSet sd-system/disk-attacher"] * 2
    assert "(privileged)" in found[0] and "(hostPathVolumes)" in found[1]


def test_a_namespace_label_with_an_invalid_level_is_refused(runs):
    run = runs["dev"]
    found = violations_of(run, POLICY, mutate(run, NAMESPACE, "webui-namespace", _enforce("strict")))
    assert found[0].startswith("Namespace 'sd-webui': label pod-security.kubernetes.io/enforce='strict'")
    assert any("enforces Pod Security 'restricted'" in m for m in found[1:])


def test_a_workload_in_a_namespace_the_stack_does_not_declare_gets_the_cluster_default(runs):
    run = runs["dev"]
    moved = mutate(run, DAEMONSET, "runtime-disk-daemonset", lambda d: d["metadata"].update(namespace="kube-system"))
    assert violations_of(run, POLICY, moved) == []


def test_both_namespaces_enforce_privileged_and_report_at_restricted(run):
    for name in ("webui-namespace", "runtime-disk-namespace"):
        labels = run.one(NAMESPACE, name).inputs["metadata"]["labels"]
        assert {k: v for k, v in labels.items() if k.startswith("pod-security.kubernetes.io/")} == {
            "pod-security.kubernetes.io/enforce": "privileged",
            "pod-security.kubernetes.io/warn": "restricted",
            "pod-security.kubernetes.io/audit": "restricted",
        }


def test_webui_pod_meets_restricted_but_for_the_runtime_host_path(run):
    """Why `privileged` is the only enforce level for sd-webui, and nothing else in the pod needs it."""
    template = run.one(DEPLOYMENT, "webui-deployment").inputs["spec"]["template"]
    found = pod_security.violations(template["metadata"], template["spec"], "restricted")
    assert [(v.check, v.message) for v in found] == [
        ("restrictedVolumes", "volumes 'runtime' (hostPath) use restricted volume types")]


def test_disk_collector_meets_restricted(run):
    template = run.one(CRONJOB, "runtime-disk-gc").inputs["spec"]["jobTemplate"]["spec"]["template"]
    assert pod_security.violations(template["metadata"], template["spec"], "restricted") == []


def test_an_apparmor_annotation_on_the_pod_template_is_refused_where_the_namespace_forbids_it(runs):
    run = runs["dev"]
    annotated = mutate(run, DEPLOYMENT, "webui-deployment", lambda d: d["spec"]["template"].setdefault(
        "metadata", {}).setdefault("annotations", {}).update(
        {"container.apparmor.security.beta.kubernetes.io/webui": "unconfined"}))
    labelled = {r.name: r for r in mutate(run, NAMESPACE, "webui-namespace", _enforce("baseline"))}
    found = violations_of(run, POLICY, [labelled.get(r.name, r) if r.type == NAMESPACE else r for r in annotated])
    assert any("AppArmor profile container.apparmor.security.beta.kubernetes.io/webui='unconfined'" in m
               for m in found), found


def test_each_refusal_is_attached_to_the_workload_whose_pods_admission_refuses(runs):
    run = runs["dev"]
    resources = mutate(run, NAMESPACE, "webui-namespace", _enforce("strict"))
    deployment = run.one(DEPLOYMENT, "webui-deployment")
    found = [v for v in policy_check.evaluate(run, None, resources) if v.policy == POLICY]
    assert found and {v.urn for v in found} == {deployment.urn}
