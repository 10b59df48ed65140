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
        """Write the images, then create result.json if absent; False when another attempt committed first."""
        attempt = agent.new_attempt()
        names = [contract.image_name(job_id, attempt, i) for i in range(len(images))]
        try:
            for name, image in zip(names, images, strict=True):
                self.bucket.blob(name).upload_from_string(image, content_type="image/png", if_generation_match=0,
                                                        retry=self.retry)
            document = json.dumps({**metadata, "images": names}, indent=2).encode()
            self.bucket.blob(contract.result_name(job_id)).upload_from_string(
                document, content_type="application/json", if_generation_match=0, retry=self.retry)
        except exceptions.PreconditionFailed:
            return False
        except exceptions.GoogleAPIError as err:
            raise agent.RetryableError(f"bucket: {err}") from None
        return True
