"""The metadata server: where the agent learns its project, zone and instance, and its token.

In a Workload Identity pod this is the GKE metadata server, which serves a subset of the GCE one
(project-id, instance/zone, instance/hostname, tokens; not instance/name).

GCE_METADATA_HOST (host:port, as google-auth honours it) is read per request rather than at import
time, so a harness can point the agent at a fake server.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import requests
from google.auth import credentials as gcredentials

from attacher.retry import HttpStatusError, RetryPolicy

DEFAULT_HOST = "metadata.google.internal"
FLAVOR = {"Metadata-Flavor": "Google"}
TIMEOUT_SECONDS = 5


@dataclass(frozen=True)
class Identity:
    project: str
    zone: str
    instance: str

    @property
    def region(self) -> str:
        return self.zone.rsplit("-", 1)[0]


class MetadataClient:
    def __init__(self, retry: RetryPolicy, session: requests.Session | None = None):
        self._retry = retry
        self._session = session or requests.Session()

    @staticmethod
    def root() -> str:
        host = os.environ.get("GCE_METADATA_HOST") or os.environ.get("GCE_METADATA_ROOT") or DEFAULT_HOST
        return f"http://{host}/computeMetadata/v1/"

    def get_text(self, path: str) -> str:
        return self._retry.call(f"metadata {path}", lambda: self._get(path).text)

    def get_json(self, path: str) -> dict:
        return self._retry.call(f"metadata {path}", lambda: self._get(path).json())

    def _get(self, path: str) -> requests.Response:
        response = self._session.get(self.root() + path, headers=FLAVOR, timeout=TIMEOUT_SECONDS)
        if response.status_code != 200:
            raise HttpStatusError(f"metadata server ({path})", response.status_code, response.text)
        if response.headers.get("Metadata-Flavor") != "Google":
            raise HttpStatusError(f"metadata server ({path}) without Metadata-Flavor: Google", 502, response.text)
        return response

    def project(self) -> str:
        return self.get_text("project/project-id")

    def zone(self) -> str:
        return self.get_text("instance/zone").rsplit("/", 1)[-1]  # "projects/<number>/zones/<zone>"

    def instance_name(self) -> str:
        """The VM's name, from instance/hostname ("<name>.<zone>.c.<project>.internal"): under
        Workload Identity the GKE metadata server does not serve instance/name, and GKE nodes
        never have custom hostnames."""
        return self.get_text("instance/hostname").split(".", 1)[0]

    def identity(self) -> Identity:
        return Identity(project=self.project(), zone=self.zone(), instance=self.instance_name())


class MetadataCredentials(gcredentials.Credentials):
    """Access tokens of the node's (or Workload Identity's) service account from the metadata server.

    google.auth.compute_engine.Credentials would do, but it fixes the metadata host at import time
    and makes extra lookups; this is the one call the agent needs.
    """

    def __init__(self, metadata: MetadataClient):
        super().__init__()
        self._metadata = metadata
        self._universe_domain = "googleapis.com"

    def refresh(self, request) -> None:
        token = self._metadata.get_json("instance/service-accounts/default/token")
        self.token = token["access_token"]
        # google-auth compares expiry with a naive UTC now
        self.expiry = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) + datetime.timedelta(
            seconds=int(token["expires_in"])
        )
