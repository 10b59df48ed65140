"""Where the seconds of sd-gke's cold starts go: the last N cold starts, reconstructed from what the cluster
recorded, as a table per cold start, the median/p90 per phase, and a Gantt chart.

    python -m tools.coldstart --context gke_PROJECT_REGION_CLUSTER [--project P --cluster C] [--last 5] [--png F]
    python -m tools.coldstart --from DIR [--png F]          # a recording (see tools/startup/recording.py)
    python -m tools.coldstart --context CTX --save DIR      # record a live cluster for later

Milestones, phases and their sources: tools/startup/timeline.py. A phase without its records is
printed "not found: ..." with what was looked for. Exit 0 with cold starts, 1 with none, 2 when the
records cannot be read or collected.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tools.startup import recording as records
from tools.startup.report import render
from tools.startup.timeline import reconstruct


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.coldstart", description=__doc__.split("\n\n")[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--context", help="kube context of a live cluster (kubectl config get-contexts)")
    source.add_argument("--from", dest="recorded", type=Path, help="a recorded directory instead of a live cluster")
    p.add_argument("--project", help="with --cluster: read the disk attacher's steps from Cloud Logging too")
    p.add_argument("--cluster", help="the GKE cluster's name, for the Cloud Logging filter")
    p.add_argument("--freshness", default="1d", help="how far back Cloud Logging is read (gcloud --freshness)")
    p.add_argument("--last", type=int, default=5, help="how many of the latest cold starts to show")
    p.add_argument("--png", type=Path, help="write the Gantt chart here")
    p.add_argument("--save", type=Path, help="also write what was collected to this directory (a recording)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.last < 1:
        print(f"--last: {args.last} is not allowed; expected a whole number of cold starts, 1 or more", file=sys.stderr)
        return 2
    if bool(args.project) != bool(args.cluster):
        print("--project and --cluster go together (the Cloud Logging filter needs both)", file=sys.stderr)
        return 2
    try:
        recording = (records.load(args.recorded) if args.recorded else
                     records.collect(args.context, args.project, args.cluster, args.freshness))
    except records.RecordingError as err:
        print(f"cannot read the records: {err}", file=sys.stderr)
        return 2
    if args.save:
        records.save(recording, args.save)
    result = reconstruct(recording, last=args.last)
    sys.stdout.write(render(result))
    if args.png and result.cold_starts:
        from tools.startup.gantt import draw

        draw(result.cold_starts, args.png)
        print(f"Gantt chart: {args.png}")
    return 0 if result.cold_starts else 1


if __name__ == "__main__":
    sys.exit(main())
