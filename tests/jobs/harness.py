"""The parts the queue tests and tools/bench_jobs.py run together: the real Pub/Sub emulator, a queue
(jobs topic and subscription with a dead-letter policy, completions and dead-letter topics with a
subscription each), tests/fakes/storage.py and tests/fakes/webui.py, and agents, in-process or as
`python -m queue_agent` processes."""

from __future__ import annotations

import io
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AGENT_ROOT = ROOT / "images" / "queue-agent"
if str(AGENT_ROOT) not in sys.path:
    sys.path.insert(0, str(AGENT_ROOT))

from google.cloud import pubsub_v1, storage  # noqa: E402
from queue_agent import agent, contract  # noqa: E402
from queue_agent.results import BucketResults  # noqa: E402

from tests.fakes.storage import FakeStorage  # noqa: E402
from tests.fakes.webui import FakeWebui, _reply  # noqa: E402

PROJECT = "sd-gke-test"
AUTH = "sd:secret"
PNG = b"\x89PNG\r\n\x1a\n" + b"stand-in image"
_names = itertools.count()
SHARED_EMULATOR = "SDGKE_SHARED_PUBSUB_EMULATOR"
"""host:port of an emulator already running for many test sessions (tools/mutate.py starts one for the
queue agent's mutants): a session given it starts none."""


def queue_number() -> str:
    """A name no other test process gives a queue, so sessions can share an emulator."""
    return f"{os.getpid()}-{next(_names)}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def session_emulator() -> Iterator[str]:
    """The emulator a test session uses: the shared one when SHARED_EMULATOR names it, else one of its own."""
    shared = os.environ.get(SHARED_EMULATOR)
    if not shared:
        with pubsub_emulator() as host:
            yield host
        return
    with _clients_pointed_at(shared):
        yield shared


@contextmanager
def _clients_pointed_at(host: str) -> Iterator[None]:
    """PUBSUB_EMULATOR_HOST set to `host` (the Pub/Sub clients read it), then put back as it was."""
    previous = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = host
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = previous


@contextmanager
def pubsub_emulator(host: str | None = None) -> Iterator[str]:
    """`gcloud beta emulators pubsub start` on `host` (a free loopback port unless given); its host:port;
    stopped (the whole process group: gcloud starts java) on exit. PUBSUB_EMULATOR_HOST points the clients at it."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise RuntimeError("the queue tests need the Google Cloud CLI's Pub/Sub emulator: gcloud is not on PATH "
                           "(install google-cloud-cli and google-cloud-cli-pubsub-emulator)")
    host = host or f"127.0.0.1:{free_port()}"
    log = open(os.environ.get("TMPDIR", "/tmp") + f"/pubsub-emulator-{host.rsplit(':', 1)[1]}.log", "wb")  # noqa: SIM115
    process = subprocess.Popen([gcloud, "beta", "emulators", "pubsub", "start", f"--host-port={host}",
                                f"--project={PROJECT}"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://{host}/", timeout=1).read()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the Pub/Sub emulator did not start; see {log.name}") from None
                time.sleep(0.3)
        with _clients_pointed_at(host):
            yield host
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if not closed(host, timeout=20):
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            closed(host, timeout=20)
        log.close()


def closed(host: str, timeout: float) -> bool:
    """Whether `host` refuses connections within `timeout` seconds. gcloud exits at SIGTERM at once, and the
    emulator's JVM, in its process group, goes on answering while it shuts down (for longer on a loaded machine):
    a test that stops the emulator to see Pub/Sub gone must not get answers from it."""
    address, port = host.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((address, int(port)), timeout=1).close()
        except OSError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


@dataclass
class Queue:
    """One jobs queue on the emulator, with names of its own."""

    max_attempts: int = 5
    ack_deadline_seconds: int = 10
    publisher: pubsub_v1.PublisherClient = field(default_factory=pubsub_v1.PublisherClient)
    subscriber: pubsub_v1.SubscriberClient = field(default_factory=pubsub_v1.SubscriberClient)
    number: str = field(default_factory=queue_number)
    """Names the topics and subscriptions: a Queue with another's number recreates it (on a restarted emulator)."""

    def __post_init__(self) -> None:
        n = self.number
        self.topic = f"projects/{PROJECT}/topics/jobs-{n}"
        self.subscription = f"projects/{PROJECT}/subscriptions/jobs-{n}"
        self.dead_letter_topic = f"projects/{PROJECT}/topics/jobs-dead-{n}"
        self.dead_letters = f"projects/{PROJECT}/subscriptions/jobs-dead-{n}"
        self.completions_topic = f"projects/{PROJECT}/topics/jobs-done-{n}"
        self.completions = f"projects/{PROJECT}/subscriptions/jobs-done-{n}"
        for topic in (self.topic, self.dead_letter_topic, self.completions_topic):
            self.publisher.create_topic(name=topic)
        self.subscriber.create_subscription(request={
            "name": self.subscription, "topic": self.topic, "ack_deadline_seconds": self.ack_deadline_seconds,
            "dead_letter_policy": {"dead_letter_topic": self.dead_letter_topic,
                                   "max_delivery_attempts": self.max_attempts},
        })
        for name, topic in ((self.dead_letters, self.dead_letter_topic), (self.completions, self.completions_topic)):
            self.subscriber.create_subscription(request={"name": name, "topic": topic})

    def publish(self, job_id: str, payload: dict | bytes, **attributes: str) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.publisher.publish(self.topic, data, job_id=job_id, **attributes).result(timeout=30)

    def drain(self, subscription: str) -> list:
        """Every message waiting on `subscription`, acked."""
        messages = []
        while True:
            response = self._pull_now(subscription, 100)
            if not response.received_messages:
                return messages
            messages += [m.message for m in response.received_messages]
            self.subscriber.acknowledge(subscription=subscription,
                                        ack_ids=[m.ack_id for m in response.received_messages])

    def _pull_now(self, subscription: str, count: int):
        """What is there now: the emulator otherwise holds an empty pull until its timeout."""
        return self.subscriber.pull(request={"subscription": subscription, "max_messages": count,
                                             "return_immediately": True}, timeout=10)

    def backlog(self) -> int:
        """Messages still undelivered or unacked on the jobs subscription (pulled, then handed back)."""
        response = self._pull_now(self.subscription, 1000)
        if response.received_messages:
            self.subscriber.modify_ack_deadline(subscription=self.subscription, ack_deadline_seconds=0,
                                                ack_ids=[m.ack_id for m in response.received_messages])
        return len(response.received_messages)

    def settings(self, bucket: str, **overrides) -> agent.Settings:
        values = dict(subscription=self.subscription, completions_topic=self.completions_topic,
                      dead_letter_topic=self.dead_letter_topic, bucket=bucket, max_attempts=self.max_attempts,
                      ack_deadline_seconds=self.ack_deadline_seconds, ready_poll_seconds=0.05,
                      storage_retry_seconds=1.0, pull_timeout_seconds=1.0, webui_auth=AUTH)
        return agent.Settings(**{**values, **overrides})


class AgentThread:
    """An agent running in this process, as `python -m queue_agent` runs it (the SIGTERM path is `stop`)."""

    def __init__(self, settings: agent.Settings):
        self.stop = threading.Event()
        self.agent = agent.Agent(settings, pubsub_v1.SubscriberClient(), pubsub_v1.PublisherClient(),
                                 BucketResults(storage.Client(), settings.bucket, settings.storage_retry_seconds),
                                 agent.Webui(settings.webui_url, settings.webui_auth))
        self.thread = threading.Thread(target=self.agent.run, args=(self.stop,), name="queue-agent", daemon=True)

    def __enter__(self) -> AgentThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the agent did not stop"


def agent_process(settings: agent.Settings, storage_host: str) -> subprocess.Popen:
    """`python -m queue_agent` with the environment the Deployment gives it."""
    env = {**os.environ, "PYTHONPATH": str(AGENT_ROOT), "STORAGE_EMULATOR_HOST": storage_host,
           "JOBS_SUBSCRIPTION": settings.subscription, "JOBS_COMPLETIONS_TOPIC": settings.completions_topic,
           "JOBS_DEAD_LETTER_TOPIC": settings.dead_letter_topic, "JOBS_BUCKET": settings.bucket,
           "JOBS_MAX_ATTEMPTS": str(settings.max_attempts),
           "JOBS_ACK_DEADLINE_SECONDS": str(settings.ack_deadline_seconds),
           "JOBS_READY_POLL_SECONDS": str(settings.ready_poll_seconds),
           "JOBS_STORAGE_RETRY_SECONDS": str(settings.storage_retry_seconds),
           "JOBS_DRAIN_SECONDS": str(settings.drain_seconds),
           "SD_API_URL": settings.webui_url, "SD_API_AUTH": settings.webui_auth or ""}
    return subprocess.Popen([sys.executable, "-W", "ignore", "-m", "queue_agent"], env=env, cwd=AGENT_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_until(condition, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class Ledger:
    """Every submitted job's fate, from the bucket and the dead-letter topic."""

    submitted: set[str]
    completed: set[str]
    dead_lettered: dict[str, str]  # job id -> reason
    duplicated: set[str]  # jobs whose result was committed more than once
    lost: set[str]
    redelivered: int = 0  # results committed by a second or later delivery: the faults did bite
    replies_lost: int = 0  # writes the bucket applied and whose reply it dropped

    def counts(self) -> dict[str, int]:
        return {"submitted": len(self.submitted), "completed": len(self.completed),
                "dead_lettered": len(self.dead_lettered), "duplicated": len(self.duplicated), "lost": len(self.lost),
                "completed_after_redelivery": self.redelivered}


def ledger(queue: Queue, fake: FakeStorage, bucket: str, submitted: set[str], dead: list | None = None) -> Ledger:
    dead = queue.drain(queue.dead_letters) if dead is None else dead
    commits = Counter({name.split("/", 1)[0]: n for (b, name), n in fake.creates.items()
                       if b == bucket and name.endswith("/" + contract.RESULT)})
    reasons = {m.attributes.get("job_id"): m.attributes.get("reason", "(forwarded by Pub/Sub: "
               + m.attributes.get("CloudPubSubDeadLetterSourceDeliveryCount", "?") + " attempts)") for m in dead}
    completed = {job for job in commits if job in submitted}
    redelivered = sum(json.loads(fake.read(bucket, contract.result_name(job)))["delivery_attempt"] > 1
                      for job in completed)
    return Ledger(submitted=submitted, completed=completed, dead_lettered=reasons,
                  duplicated={job for job, n in commits.items() if n > 1},
                  lost=submitted - completed - set(reasons), redelivered=redelivered)


def stand_ins(generation_seconds: float = 0.0) -> tuple[FakeWebui, FakeStorage]:
    return (FakeWebui(auth=AUTH, generation_seconds=generation_seconds, model_loaded=True, image=PNG),
            FakeStorage(buckets=("results",)))


class FaultyWebui(FakeWebui):
    """The stand-in WebUI, failing every generation of the prompts in `doomed` (a job no retry can save)."""

    def __init__(self, doomed: set[str], **kwargs):
        super().__init__(**kwargs)
        self.doomed = doomed

    def _handle(self, request) -> None:
        if _prompt(request) in self.doomed:
            _reply(request, 500, b'{"error":"OutOfMemoryError"}')
            return
        super()._handle(request)


class HoldingWebui(FakeWebui):
    """The stand-in WebUI, holding the generation of one prompt until the test sets `release`; `holding`
    is set once that request has arrived, so a test can act while the worker is busy with it."""

    def __init__(self, prompt: str, **kwargs):
        super().__init__(**kwargs)
        self.prompt = prompt
        self.holding = threading.Event()
        self.release = threading.Event()

    def _handle(self, request) -> None:
        if _prompt(request) == self.prompt:
            self.holding.set()
            self.release.wait()
        super()._handle(request)


class StubbornWebui(HoldingWebui):
    """The stand-in WebUI, whose generation of one prompt holds its turn and ignores /sdapi/v1/interrupt
    until the test sets `release` (a sampler that does not reach its next step); `holding` is set once
    that generation has begun, so requests sent meanwhile queue behind it, as in WebUI."""

    def _handle(self, request) -> None:
        FakeWebui._handle(self, request)  # held in _generate, inside the FIFO turn, not before it

    def _generate(self, request) -> bool:
        if request.headers.get("X-Loadtest-Request") != self.prompt:
            return super()._generate(request)
        self.holding.set()
        self.release.wait()
        return False


def _prompt(request) -> str | None:
    """The prompt of a txt2img request (None for any other), its body left for the handler to read."""
    if request.command != "POST" or request.path != "/sdapi/v1/txt2img":
        return None
    body = request.rfile.read(int(request.headers["Content-Length"]))
    request.rfile = io.BytesIO(body)
    return json.loads(body).get("prompt")


@dataclass
class FaultPlan:
    """The faults of one run: every `webui_fault_every`-th and `bucket_fault_every`-th job meets a failing
    WebUI or bucket for one attempt, `duplicates` jobs are published twice, `doomed` jobs fail on every
    attempt, `refused` jobs carry a payload no attempt can run, and agent 0 is SIGKILLed mid-job and
    agent 1 SIGTERMed (then both replaced) once `kill_after` results are in; the replies to the first
    `lost_image_replies` image writes are lost after the bucket applied them."""

    jobs: int = 30
    pods: int = 2
    webui_fault_every: int = 7
    bucket_fault_every: int = 11
    duplicates: int = 3
    doomed: int = 2
    refused: int = 2
    kill_after: int = 5
    generation_seconds: float = 0.05
    lost_image_replies: int = 0


def run_fault_matrix(plan: FaultPlan, timeout: float = 300.0) -> Ledger:
    """Submit plan.jobs jobs to `plan.pods` pods (agent processes + stand-in WebUIs) under the plan's
    faults; the ledger once every job has a result or a dead letter (or `timeout` passed)."""
    queue = Queue(max_attempts=5)
    ids = [f"job-{i:04d}" for i in range(plan.jobs)]
    doomed = {f"doomed {i}" for i in range(plan.doomed)}
    payloads = {job: {"prompt": f"prompt {i}", "seed": i} for i, job in enumerate(ids)}
    for job, prompt in zip(ids[plan.jobs - plan.doomed:], sorted(doomed), strict=True):
        payloads[job] = {"prompt": prompt}
    for job in ids[plan.jobs - plan.doomed - plan.refused:plan.jobs - plan.doomed]:
        payloads[job] = {"prompt": "x", "stepz": 1}
    with FakeStorage(buckets=("results",)) as bucket, ExitStackOf() as stack:
        webuis = [stack.enter(FaultyWebui(doomed, auth=AUTH, generation_seconds=plan.generation_seconds,
                                          model_loaded=True, image=PNG)) for _ in range(plan.pods)]
        settings = [queue.settings("results", webui_url=w.url, drain_seconds=0.2) for w in webuis]
        agents = [stack.process(agent_process(s, bucket.url)) for s in settings]
        # faults start once every agent is ready: its readiness check would otherwise meet the WebUI's
        wait_until(lambda: all(w.served for w in webuis), timeout=timeout, what="the agents' readiness")
        bucket.lose_replies(plan.lost_image_replies, ".png")
        for i, job in enumerate(ids):
            if i % plan.webui_fault_every == 1:
                webuis[i % plan.pods].failures += 1
            if i % plan.bucket_fault_every == 2:
                bucket.fail(3)
            queue.publish(job, payloads[job], batch_id="faults")
            if i < plan.duplicates:
                queue.publish(job, payloads[job], batch_id="faults")
        dead: list = []

        def settled() -> bool:
            dead.extend(queue.drain(queue.dead_letters))
            return not ledger(queue, bucket, "results", set(ids), dead=list(dead)).lost

        wait_until(lambda: sum(1 for (_, n) in bucket.creates if n.endswith("/" + contract.RESULT)) >= plan.kill_after,
                   timeout=timeout, what="the first results")
        agents[0].send_signal(signal.SIGKILL)
        agents[1 % plan.pods].send_signal(signal.SIGTERM)
        for i in {0, 1 % plan.pods}:
            agents[i].wait(timeout=60)
            agents[i] = stack.process(agent_process(settings[i], bucket.url))
        wait_until(settled, timeout=timeout, what="every job settled")
        result = ledger(queue, bucket, "results", set(ids), dead=list(dead))
        problems = list(bucket.problems)
        result.replies_lost = bucket.replies_lost
    if problems:
        raise AssertionError(f"requests the storage.v1 document refuses: {problems[:3]}")
    return result


class ExitStackOf:
    """Servers entered and agent processes started, all stopped on exit."""

    def __init__(self) -> None:
        self.servers: list = []
        self.processes: list[subprocess.Popen] = []

    def enter(self, server):
        self.servers.append(server.start())
        return server

    def process(self, process: subprocess.Popen) -> subprocess.Popen:
        self.processes.append(process)
        return process

    def __enter__(self) -> ExitStackOf:
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()
        for server in self.servers:
            server.stop()


def worker_process(front_url: str, webui_url: str, heartbeat: str, name: str = "webui-0",
                   batch: agent.Settings | None = None, storage_host: str | None = None,
                   **extra: str) -> subprocess.Popen:
    """`python -m queue_agent` as the worker beside a WebUI, with the environment components/worker.py gives
    it (the downward API's POD_NAME and POD_IP; the JOBS_* settings only with `batch`); its log next to the heartbeat."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("JOBS_", "QUEUE_", "SD_"))}
    env.update({"PYTHONPATH": str(AGENT_ROOT), "QUEUE_FRONT_URL": front_url, "POD_NAME": name,
                "POD_IP": "127.0.0.1", "SD_API_URL": webui_url, "SD_API_AUTH": AUTH, "JOBS_HEARTBEAT": heartbeat,
                "JOBS_READY_POLL_SECONDS": "0.05", **extra})
    if batch is not None:
        assert storage_host is not None, "batch work commits its results to the storage stand-in"
        env.update({"STORAGE_EMULATOR_HOST": storage_host, "JOBS_SUBSCRIPTION": batch.subscription,
                    "JOBS_COMPLETIONS_TOPIC": batch.completions_topic,
                    "JOBS_DEAD_LETTER_TOPIC": batch.dead_letter_topic, "JOBS_BUCKET": batch.bucket,
                    "JOBS_MAX_ATTEMPTS": str(batch.max_attempts),
                    "JOBS_ACK_DEADLINE_SECONDS": str(batch.ack_deadline_seconds),
                    "JOBS_STORAGE_RETRY_SECONDS": str(batch.storage_retry_seconds)})
    with open(heartbeat + ".log", "ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, "-W", "ignore", "-m", "queue_agent"], env=env, cwd=AGENT_ROOT,
                                stdout=subprocess.DEVNULL, stderr=log)
