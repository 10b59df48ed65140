"""A minimal Kubernetes API client: read a node, JSON-patch its taints or its runtime label.

The official client (with aiohttp, pydantic, its models) would triple the image for two calls.
Endpoints: KUBECONFIG (a harness; bearer-token users only) or the in-cluster service account.
"""

from __future__ import annotations

import base64
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass

import requests

from attacher.config import ConfigError
from attacher.retry import HttpStatusError, RetryPolicy

SERVICEACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TIMEOUT_SECONDS = 15
CONFLICT_ATTEMPTS = 5
_SUPPORTED_USER_KEYS = {"token", "tokenFile"}


@dataclass(frozen=True)
class KubeEndpoint:
    server: str
    token: str | None = None
    token_file: str | None = None  # re-read per request: projected tokens rotate
    verify: str | bool = True  # CA bundle path, or False for insecure-skip-tls-verify


def load_endpoint(env: Mapping[str, str], serviceaccount_dir: str = SERVICEACCOUNT_DIR) -> KubeEndpoint:
    kubeconfig = env.get("KUBECONFIG")
    if kubeconfig:
        return _from_kubeconfig(kubeconfig)
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise ConfigError(["neither KUBECONFIG nor KUBERNETES_SERVICE_HOST is set: no way to reach the Kubernetes API"])
    host = f"[{host}]" if ":" in host else host
    return KubeEndpoint(
        server=f"https://{host}:{port}",
        token_file=os.path.join(serviceaccount_dir, "token"),
        verify=os.path.join(serviceaccount_dir, "ca.crt"),
    )


def _from_kubeconfig(path: str) -> KubeEndpoint:
    import yaml  # only harnesses use a kubeconfig

    if os.pathsep in path:
        raise ConfigError([f"KUBECONFIG={path!r}: give one file, not a list"])
    try:
        with open(path, encoding="utf-8") as handle:
            doc = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError([f"KUBECONFIG={path!r}: cannot read it: {exc}"]) from None

    def named(section: str, name: str) -> dict:
        for item in doc.get(section) or []:
            if item.get("name") == name:
                return item.get(section[:-1]) or {}
        raise ConfigError([f"KUBECONFIG={path!r}: {section[:-1]} {name!r} (from current-context) is not defined"])

    context = named("contexts", doc.get("current-context", ""))
    cluster = named("clusters", context.get("cluster", ""))
    user = named("users", context.get("user", ""))
    unsupported = sorted(set(user) - _SUPPORTED_USER_KEYS)
    if unsupported:
        raise ConfigError(
            [f"KUBECONFIG={path!r}: user fields {unsupported} are not supported; allowed: token, tokenFile"]
        )
    verify: str | bool = True
    if cluster.get("insecure-skip-tls-verify"):
        verify = False
    elif cluster.get("certificate-authority-data"):
        with tempfile.NamedTemporaryFile("wb", suffix=".crt", delete=False) as handle:
            handle.write(base64.b64decode(cluster["certificate-authority-data"]))
        verify = handle.name
    elif cluster.get("certificate-authority"):
        verify = os.path.join(os.path.dirname(path), cluster["certificate-authority"])
    if not cluster.get("server"):
        raise ConfigError([f"KUBECONFIG={path!r}: cluster has no server"])
    token_file = user.get("tokenFile")
    if token_file:
        token_file = os.path.join(os.path.dirname(path), token_file)
    return KubeEndpoint(server=cluster["server"].rstrip("/"), token=user.get("token"), token_file=token_file, verify=verify)


class KubeClient:
    def __init__(self, endpoint: KubeEndpoint, retry: RetryPolicy):
        self._endpoint = endpoint
        self._retry = retry
        self._session = requests.Session()
        self._session.verify = endpoint.verify

    def _headers(self) -> dict[str, str]:
        token = self._endpoint.token
        if self._endpoint.token_file:
            with open(self._endpoint.token_file, encoding="utf-8") as handle:
                token = handle.read().strip()
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _request(self, method: str, path: str, what: str, *, json: object = None, content_type: str | None = None) -> dict:
        def once() -> dict:
            headers = self._headers()
            if content_type:
                headers["Content-Type"] = content_type
            response = self._session.request(
                method, self._endpoint.server + path, headers=headers, json=json, timeout=TIMEOUT_SECONDS
            )
            if response.status_code != 200:
                raise HttpStatusError(what, response.status_code, response.text)
            return response.json()

        return self._retry.call(what, once)

    def get_node(self, name: str) -> dict:
        return self._request("GET", f"/api/v1/nodes/{name}", "nodes.get")

    def json_patch_node(self, name: str, operations: list[dict]) -> dict:
        return self._request(
            "PATCH", f"/api/v1/nodes/{name}", "nodes.patch",
            json=operations, content_type="application/json-patch+json",
        )


def _taint_indexes(node: dict, key: str) -> list[int]:
    taints = (node.get("spec") or {}).get("taints") or []
    return [i for i, taint in enumerate(taints) if taint.get("key") == key]


def remove_taint(client: KubeClient, node_name: str, key: str, read_earlier: dict | None = None) -> str:
    """Remove every taint with this key and nothing else; 'removed' or 'absent' (already gone).

    A JSON patch of `test` + `remove` per index is atomic: if the taints changed since the read
    (the test fails, HTTP 422), read again and retry, a bounded number of times. `read_earlier`, the
    node as read at the start of the pass, saves a read when it carries the taint (the `test`
    catches any change since); without the taint it proves nothing, so the node is read again.
    """
    node = read_earlier if read_earlier is not None and _taint_indexes(read_earlier, key) else None
    for _ in range(CONFLICT_ATTEMPTS):
        node = node or client.get_node(node_name)
        indexes = _taint_indexes(node, key)
        if not indexes:
            return "absent"
        operations: list[dict] = []
        for i in reversed(indexes):
            operations += [
                {"op": "test", "path": f"/spec/taints/{i}/key", "value": key},
                {"op": "remove", "path": f"/spec/taints/{i}"},
            ]
        try:
            client.json_patch_node(node_name, operations)
            return "removed"
        except HttpStatusError as exc:
            if exc.status not in (409, 422):
                raise
            node = None
    raise RuntimeError(f"taints of node {node_name} changed under us {CONFLICT_ATTEMPTS} times in a row")


def set_label(client: KubeClient, node_name: str, key: str, value: str) -> str:
    """Set one label of the node and nothing else; 'set' or 'unchanged'.

    A replace is preceded by a `test` of the value just read, so a concurrent writer makes the patch
    fail (HTTP 422) instead of being overwritten; the agent's next pass reads again.
    """
    labels = (client.get_node(node_name).get("metadata") or {}).get("labels") or {}
    if labels.get(key) == value:
        return "unchanged"
    path = "/metadata/labels/" + key.replace("~", "~0").replace("/", "~1")  # JSON pointer escaping, RFC 6901
    if key in labels:
        operations = [{"op": "test", "path": path, "value": labels[key]}, {"op": "replace", "path": path, "value": value}]
    else:
        operations = [{"op": "add", "path": path, "value": value}]
    client.json_patch_node(node_name, operations)
    return "set"
