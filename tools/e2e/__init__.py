"""Proof with real processes (issue 17 item 5): the request queue, workers and stand-in WebUIs on loopback,
driven by tools/loadtest.py, measured against the ideal shared queue (tools/sim/ideal.py).

    python -m tools.e2e [--generation-seconds 0.3] [--json out.json]      (make e2e)

Every scenario starts its own processes: the real request queue (`python -m request_queue`,
images/request-queue), and per pod a stand-in WebUI (tools/standin_webui.py: one FIFO generation lock, as
WebUI v1.10.1's queue_lock) with the real worker beside it (`python -m queue_agent` with QUEUE_FRONT_URL,
images/queue-agent), started as components/worker.py starts it. The batch scenario adds the real Pub/Sub
emulator and the jobs queue of tests/jobs/harness.py. Generation times are scaled down so a run fits in
minutes; every criterion is relative to them.

- spike: 100 requests at once with no pod; pod A starts at once, pod B `stagger` seconds later. 0 errors;
  while a request waits, each pod starts its next generation within 1 s of ending one (the stand-ins'
  own logs); p99 within 10% of the ideal shared queue fed with the recorded ready times and durations.
- steady: Poisson arrivals at 60% of 2 ready pods: p99 within 10% of the ideal on the same arrivals; the
  path's own overhead (latency - X-Queue-Wait - generation) p50 at most 50 ms.
- batch: the same kind of interactive load while 1,000 batch jobs wait on Pub/Sub, against the same
  arrivals with no batch: p95 within one generation time.
- overload: more requests at once than 2 pods and QUEUE_MAX_DEPTH hold: the excess gets 429 within one
  generation time, every accepted request succeeds.
Exit 0 when every criterion holds, 1 otherwise.

`processes` starts and stops the real processes; `load` drives tools/loadtest.py against the request queue;
`measures` reads a run against the stand-ins' logs; `scenarios` runs each scenario and checks its criteria;
`report` runs them all and prints the table; `python -m tools.e2e` runs its `main`.
"""
