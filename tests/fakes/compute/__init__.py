"""A local fake of the Compute Engine REST API (compute.v1) that sd-gke's Google-facing code is tested against.

Why it checks everything: a fake that accepts anything hides exactly the bugs that hurt on GCP
(misspelt fields, wrong enum values, 64-bit integers in the wrong encoding). So every request and every
response is checked against the compute.v1 discovery document shipped with google-api-python-client,
and a field the schema allows but the fake does not model, or a list filter it cannot evaluate, is
answered 400 and recorded too, so a test never passes on something the fake ignored.

- schema.py: the discovery document, request routing and the schema checks (encoding rules there);
- resources.py: the disks, images and instances, and what each method does to them;
- listing.py: the list filters the fake evaluates;
- operations.py: the operations mutating calls return, and requestId;
- faults.py: injected HTTP errors, failed operations, held requests;
- errors.py: the error bodies;
- server.py: FakeCompute, the HTTP server that ties them together and records every exchange.

Library pitfall (google-cloud-compute 1.48): ExtendedOperation.result() polls through a
Zone/GlobalOperationsClient that the transport builds *without* the caller's client_options, i.e.
against https://compute.googleapis.com. Code under test should wait with its own operations client
built like its other clients; `FakeCompute.client()` gives test code clients whose result() polls
the fake.
"""

from tests.fakes.compute.resources import API_ROOT
from tests.fakes.compute.server import FakeCompute

__all__ = ["API_ROOT", "FakeCompute"]
