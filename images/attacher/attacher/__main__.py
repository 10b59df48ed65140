"""`python -m attacher [--once]` runs the agent; `python -m attacher gc --grace-seconds N` the GC.

Exit codes: 0 done, 1 the pass (or a GC deletion) failed, 2 bad configuration, 143 SIGTERM in the
middle of a --once pass. SIGTERM never detaches or deletes anything.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.")  # Python EOL notices

from attacher import log  # noqa: E402 - after the warnings filter
from attacher.config import ConfigError, agent_config_from_env, gc_config_from_env  # noqa: E402
from attacher.retry import RetryPolicy  # noqa: E402

if TYPE_CHECKING:
    from attacher.agent import Deps
    from attacher.config import AgentConfig

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_TERMINATED = 0, 1, 2, 143


class Terminated(BaseException):
    """Raised in the main thread by SIGTERM: unwinds without any cleanup that touches the disk."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def build_deps(cfg: AgentConfig, retry: RetryPolicy) -> Deps:
    """Real endpoints from the environment; the Kubernetes endpoint is resolved first so that a
    missing one is a configuration error before anything else. The Compute client library is
    imported later, by compute_for_project, while the pass reads the node."""
    from attacher.kube import KubeClient, load_endpoint

    kube = KubeClient(load_endpoint(os.environ), retry)

    from attacher.agent import Deps
    from attacher.compute import Compute, make_clients
    from attacher.devices import DirectoryDevices, HostDevices
    from attacher.metadata import MetadataClient, MetadataCredentials

    metadata = MetadataClient(retry)
    credentials = MetadataCredentials(metadata)
    return Deps(
        metadata=metadata,
        compute_for_project=lambda project: Compute(make_clients(credentials, cfg.compute_endpoint), project, retry),
        kube=kube,
        devices=DirectoryDevices(cfg.device_dir) if cfg.device_dir else HostDevices(),
    )


def run_agent(once: bool, after_step: Callable[[str], None] | None = None) -> int:
    try:
        cfg = agent_config_from_env(os.environ)
        deps = build_deps(cfg, RetryPolicy())
    except ConfigError as exc:
        log.emit("config", status="failed", problems=exc.problems)
        return EXIT_CONFIG
    from attacher.agent import run_pass
    from attacher.server import serve

    log.emit(
        "start",
        mode="once" if once else "serve",
        image=cfg.image.path,
        runtime_hash=cfg.runtime_hash,
        node=cfg.node_name,
        dry_devices=cfg.device_dir is not None,
    )
    if once:
        try:
            result = run_pass(cfg, deps, after_step or (lambda step: None))
        except log.StepFailed as exc:
            log.emit("pass", status="failed", step=exc.step, error=exc.message)
            return EXIT_FAILED
        log.emit("pass", status="ok", disk=result.disk, recipe_hash=result.recipe_hash)
        return EXIT_OK
    stop = threading.Event()
    try:
        serve(cfg, deps, stop)
    except Terminated:
        log.emit("terminated", message="SIGTERM: exiting, nothing detached or deleted")
    return EXIT_OK


def run_gc(grace_seconds: int) -> int:
    from attacher.compute import Compute, make_clients
    from attacher.gc import collect
    from attacher.metadata import MetadataClient, MetadataCredentials

    try:
        cfg = gc_config_from_env(os.environ, grace_seconds)
    except ConfigError as exc:
        log.emit("config", status="failed", problems=exc.problems)
        return EXIT_CONFIG
    retry = RetryPolicy()
    metadata = MetadataClient(retry)
    try:
        zones = cfg.zones or (metadata.zone(),)
        compute = Compute(make_clients(MetadataCredentials(metadata), cfg.compute_endpoint), metadata.project(), retry)
        report = collect(compute, zones, cfg.grace_seconds)
    except Exception as exc:  # noqa: BLE001 - one clear line, no traceback; the next CronJob run retries
        log.emit("gc", status="failed", error=f"{type(exc).__name__}: {exc}")
        return EXIT_FAILED
    return EXIT_FAILED if report.failed else EXIT_OK


def main(argv: Sequence[str] | None = None, after_step: Callable[[str], None] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["gc"]:
        parser = argparse.ArgumentParser(prog="python -m attacher gc", description="delete orphaned runtime disks")
        parser.add_argument("--grace-seconds", type=int, default=3600, help="minimum disk age (default 3600)")
        args = parser.parse_args(argv[1:])
        return run_gc(args.grace_seconds)
    parser = argparse.ArgumentParser(prog="python -m attacher", description="mount the sd-gke runtime disk")
    parser.add_argument("--once", action="store_true", help="one pass, then exit 0 (done) or non-zero")
    args = parser.parse_args(argv)
    return run_agent(args.once, after_step)


if __name__ == "__main__":
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        code = main()
    except Terminated:
        log.emit("terminated", message="SIGTERM during a pass: exiting, nothing detached or deleted")
        code = EXIT_TERMINATED
    except KeyboardInterrupt:
        code = EXIT_TERMINATED
    sys.exit(code)
