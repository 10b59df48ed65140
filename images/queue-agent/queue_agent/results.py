"""Results in Cloud Storage: an attempt's images under its own prefix, then the one commit object."""

from __future__ import annotations

import json
from typing import Any

from google.api_core import exceptions
from google.cloud.storage.retry import DEFAULT_RETRY

from queue_agent import agent, contract


class BucketResults:
    """Needs storage.objects.get and .create only (roles/storage.objectViewer + objectCreator on the
    bucket): nothing is ever overwritten, which would also need storage.objects.delete
    (https://cloud.google.com/storage/docs/access-control/iam-permissions#object_permissions)."""

    def __init__(self, client: Any, bucket: str, retry_seconds: float):
        self.bucket = client.bucket(bucket)
        # Every call here is idempotent (a read, or a create with ifGenerationMatch=0), so each is
        # retried, for at most retry_seconds, before the attempt gives up and the job is handed back.
        self.retry = DEFAULT_RETRY.with_timeout(retry_seconds)

    def exists(self, job_id: str) -> bool:
        try:
            return self.bucket.blob(contract.result_name(job_id)).exists(retry=self.retry)
        except exceptions.GoogleAPIError as err:
            raise agent.RetryableError(f"bucket: {err}") from None

    def commit(self, job_id: str, images: list[bytes], metadata: dict[str, Any]) -> bool:
        """Write the images, then create result.json if absent; True when this attempt committed, False when
        another had; returns only once result.json is known to exist (RetryableError otherwise).

        Every write is a create with ifGenerationMatch=0, retried by the client on connection errors among
        others (googleapis/python-storage@v3.17.1 google/cloud/storage/retry.py `_RETRYABLE_TYPES`), so a
        write applied whose reply was lost is retried and answered 412 Precondition Failed
        (https://cloud.google.com/storage/docs/request-preconditions#special-case). On an attempt's own
        image that 412 can only mean this attempt's earlier try landed; on result.json it may be another
        attempt's commit or this one's, so the object is read back before anyone is told the job is done."""
        attempt = agent.new_attempt()
        names = [contract.image_name(job_id, attempt, i) for i in range(len(images))]
        try:
            for name, image in zip(names, images, strict=True):
                self._create(name, image, "image/png")
            document = json.dumps({**metadata, "images": names}, indent=2).encode()
            if self._create(contract.result_name(job_id), document, "application/json"):
                return True
        except exceptions.GoogleAPIError as err:
            raise agent.RetryableError(f"bucket: {err}") from None
        if not self.exists(job_id):
            raise agent.RetryableError(f"bucket: {contract.result_name(job_id)} answered 412 but does not exist")
        return False

    def _create(self, name: str, content: bytes, content_type: str) -> bool:
        """Create `name`; False when it already existed (412 to ifGenerationMatch=0)."""
        try:
            self.bucket.blob(name).upload_from_string(content, content_type=content_type, if_generation_match=0,
                                                      retry=self.retry)
        except exceptions.PreconditionFailed:
            return False
        return True
