"""tools/coldstart.py: cold starts reconstructed from recorded cluster records (tests/coldstart_fixtures.py)."""

from __future__ import annotations

import json
import os
import stat
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from components.config import WebuiConfig
from components.disk_attacher import NAMESPACE as ATTACHER_NS
from components.webui import launch_args
from tests import coldstart_fixtures as fx
from tools import coldstart as cli
from tools.startup import recording as records
from tools.startup.gantt import draw
from tools.startup.report import phase_values, render
from tools.startup.timeline import go_seconds, reconstruct


def seconds(cold, name: str) -> float | None:
    return next(p for p in cold.phases if p.name == name).seconds


def problem(cold, name: str) -> str | None:
    return next(p for p in cold.phases if p.name == name).problem


def only(stories, **kwargs):
    result = reconstruct(fx.recording(stories, **kwargs))
    assert len(result.cold_starts) == 1, result.skipped
    return result.cold_starts[0]


STORY = fx.THREE[2]


def test_the_committed_fixtures_are_what_the_builder_writes(tmp_path):
    fx.write(tmp_path)
    built = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(fx.ROOT) for p in fx.ROOT.rglob("*") if p.is_file())
    assert built == committed
    assert all((tmp_path / p).read_bytes() == (fx.ROOT / p).read_bytes() for p in built)


def test_a_cold_start_is_split_into_the_phases_between_its_records():
    cold = only([STORY])
    assert {p.name: p.seconds for p in cold.phases} == pytest.approx({
        "autoscaler": 38.0, "node create": 55.0, "node ready": 24.0, "runtime disk": 8.6, "scheduling": 0.4,
        "pod setup": 7.0, "image pull": 2.2, "container start": 2.0, "WebUI ready": 62.0, "first image": 6.5})
    assert cold.total.seconds == pytest.approx(204.5)


def test_the_image_pull_is_the_kubelets_own_measurement_including_waiting():
    assert seconds(only([replace(STORY, pull_s=3.7)]), "image pull") == pytest.approx(4.0)


def test_go_durations_as_the_kubelet_prints_them():
    assert (go_seconds("1m5.2s"), go_seconds("850ms"), go_seconds("1.9s"), go_seconds("soon")) == (65.2, 0.85, 1.9, None)


def test_the_scale_up_comes_from_gkes_visibility_log_once_the_event_expired():
    cold = only([replace(STORY, scale_up_in="visibility")])
    assert seconds(cold, "autoscaler") == 38.0
    assert cold.milestones["scale-up triggered"].source.startswith("GKE autoscaler visibility: scale-up decision")


def test_the_runtime_disk_breaks_down_into_the_attachers_steps():
    cold = only([STORY])
    assert [s.name for s in cold.steps] == list(fx.ATTACHER_STEPS)
    assert cold.steps[2].seconds == pytest.approx(1.85)


def test_attacher_steps_of_a_pod_gone_with_its_node_come_from_cloud_logging():
    cold = only([replace(STORY, attacher_logs_in="cloud")])
    assert seconds(cold, "runtime disk") == pytest.approx(8.6)
    assert len(cold.steps) == len(fx.ATTACHER_STEPS)


def test_events_in_any_order_give_the_same_timeline():
    in_order = only([STORY])
    for seed in range(5):
        assert only([STORY], shuffle_seed=seed).phases == in_order.phases


def test_a_repeated_event_counts_from_its_first_record():
    rec = fx.recording([STORY])
    pod = rec.pods[0]
    rec.events.insert(0, fx.event(pod, "TriggeredScaleUp", "pod triggered scale-up: [...]",
                                  STORY.created + timedelta(seconds=300), "cluster-autoscaler"))
    assert seconds(reconstruct(rec).cold_starts[0], "autoscaler") == 38.0


def test_a_missing_scale_up_event_is_reported_not_found_with_what_was_looked_for():
    cold = only([replace(STORY, scale_up_in="none")])
    assert seconds(cold, "autoscaler") is None
    assert problem(cold, "autoscaler").startswith("not found: scale-up triggered (no TriggeredScaleUp event")
    assert problem(cold, "node create").startswith("not found: scale-up triggered")
    assert seconds(cold, "node ready") == 24.0


def test_missing_attacher_lines_leave_the_runtime_disk_and_scheduling_not_found():
    cold = only([replace(STORY, attacher_logs_in="none")])
    assert problem(cold, "runtime disk").startswith("not found: node untainted")
    assert problem(cold, "scheduling").startswith("not found: node untainted")
    assert cold.steps == []


def test_the_first_image_ignores_the_probes_own_requests():
    cold = only([replace(STORY, first_image=None)])
    assert problem(cold, "first image").startswith("not found: first image served")
    assert cold.total.seconds == 198.0 and cold.total.detail == "pod created -> pod ready"


def test_a_phase_that_ends_before_it_starts_is_out_of_order_not_negative():
    cold = reconstruct(records.load(fx.ROOT / "out-of-order")).cold_starts[0]
    assert problem(cold, "runtime disk") == "out of order: node untainted (09:16:06) is before node Ready (09:16:13)"
    assert seconds(cold, "runtime disk") is None


def test_a_skew_within_the_one_second_resolution_of_timestamps_is_zero():
    cold = only([replace(STORY, scheduled=125.0)])  # untaint at 125.6 s (ms), PodScheduled truncated to 125 s
    assert problem(cold, "scheduling") is None and seconds(cold, "scheduling") == 0.0


def test_a_pod_whose_node_predates_it_is_not_a_cold_start():
    result = reconstruct(fx.recording([STORY], warm=[fx.WARM]))
    assert [c.pod for c in result.cold_starts] == [STORY.pod]
    assert result.skipped == [f"{fx.WARM.pod}: not a cold start (its node predates it)"]


def test_a_pod_without_its_node_or_a_scale_up_event_cannot_be_told_apart():
    rec = fx.recording([replace(STORY, scale_up_in="none")])
    rec.nodes = []
    result = reconstruct(rec)
    assert result.cold_starts == []
    assert result.skipped[0].startswith(f"{STORY.pod}: cannot tell (no TriggeredScaleUp event and its node")


def test_median_and_p90_per_phase_over_several_cold_starts():
    result = reconstruct(records.load(fx.ROOT / "three-cold-starts"))
    autoscaler = phase_values(result.cold_starts)["autoscaler"]
    assert sorted(autoscaler) == [35.0, 38.0, 41.0]
    rows = {line.split()[0]: line.split()[1:] for line in render(result).split("per phase over")[1].splitlines()[2:]
            if line.strip()}
    assert rows["autoscaler"] == ["3", "38.0", "41.0"]
    assert rows["total"] == ["3", "204.5", "218.2"]


def test_a_phase_no_cold_start_recorded_says_so_in_the_summary():
    table = render(reconstruct(records.load(fx.ROOT / "gaps")))
    assert [line.split() for line in table.splitlines() if line.startswith("  autoscaler ") and " 0 " in line] == [
        ["autoscaler", "0", "-", "-", "not", "found", "in", "any"]]


def test_last_keeps_the_latest_cold_starts():
    result = reconstruct(records.load(fx.ROOT / "three-cold-starts"), last=2)
    assert [c.pod for c in result.cold_starts] == [fx.THREE[1].pod, fx.THREE[2].pod]


def test_the_gantt_chart_is_a_png(tmp_path):
    result = reconstruct(records.load(fx.ROOT / "three-cold-starts"))
    draw(result.cold_starts, tmp_path / "gantt.png")
    assert (tmp_path / "gantt.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_prints_the_tables_and_draws_the_chart(tmp_path, capsys):
    assert cli.main(["--from", str(fx.ROOT / "three-cold-starts"), "--png", str(tmp_path / "g.png")]) == 0
    out = capsys.readouterr().out
    assert out.count("cold start of webui-") == 3 and "per phase over 3 cold start(s)" in out
    assert (tmp_path / "g.png").exists()


def test_cli_exits_1_when_there_is_no_cold_start(tmp_path, capsys):
    rec = fx.recording([STORY], warm=[fx.WARM])
    rec.pods = [p for p in rec.pods if p["metadata"]["name"] == fx.WARM.pod]
    records.save(rec, tmp_path)
    assert cli.main(["--from", str(tmp_path)]) == 1
    assert "no cold start found in the records" in capsys.readouterr().out


def test_cli_names_an_unreadable_recording(tmp_path, capsys):
    (tmp_path / "pods.json").write_text("[]")
    assert cli.main(["--from", str(tmp_path)]) == 2
    assert f"{tmp_path / 'pods.json'}: expected a Kubernetes List" in capsys.readouterr().err


def test_a_recording_without_its_pod_list_says_what_is_missing(tmp_path, capsys):
    records.save(fx.recording([STORY]), tmp_path)
    (tmp_path / "pods.json").unlink()
    assert cli.main(["--from", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "not found: pods.json" in out and "without the pod list there is no cold start to reconstruct" in out


def test_cli_refuses_last_below_one(capsys):
    assert cli.main(["--from", "x", "--last", "0"]) == 2
    assert "--last: 0 is not allowed" in capsys.readouterr().err


def fake_kubectl(directory: Path, bin_dir: Path) -> None:
    """A kubectl that answers `get` and `logs` from a recording, as the real one prints them."""
    script = bin_dir / "kubectl"
    script.write_text(f"""#!{sys.executable}
import json, pathlib, sys
root = pathlib.Path({str(directory)!r})
args = sys.argv[1:]
assert args[:2] == ["--context", "gke_sd"], args
args = args[2:]
if args[0] == "get":
    kind = args[1]
    doc = json.loads((root / (kind + ".json")).read_text())
    if "-n" in args:
        ns = args[args.index("-n") + 1]
        doc["items"] = [i for i in doc["items"] if i["metadata"].get("namespace") == ns]
    print(json.dumps(doc))
elif args[0] == "logs":
    ns, pod, container = args[2], args[3], args[5]
    assert args[6] == "--timestamps", args
    path = root / "logs" / ns / pod / (container + ".log")
    if not path.exists():
        sys.exit('Error from server (NotFound): pods "' + pod + '" not found')
    sys.stdout.write(path.read_text())
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_live_mode_reads_the_cluster_through_kubectl_and_parses_the_same(tmp_path, monkeypatch, capsys):
    fake_kubectl(fx.ROOT / "three-cold-starts", tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    saved = tmp_path / "saved"
    assert cli.main(["--context", "gke_sd", "--save", str(saved)]) == 0
    live = capsys.readouterr().out
    assert cli.main(["--from", str(fx.ROOT / "three-cold-starts")]) == 0
    offline = capsys.readouterr().out
    # Cloud Logging was not asked (no --project): the first cold start's attacher lines and its scale-up
    # decision (its event expired) are not found live.
    assert live.count("not found: node untainted") == 2 and live.count("not found: scale-up triggered") == 2
    assert "not found" not in offline
    assert json.loads((saved / "pods.json").read_text())["items"]


def fake_gcloud(directory: Path, bin_dir: Path) -> None:
    """A gcloud whose `logging read` prints the recording's Cloud Logging entries that the filter asks for."""
    script = bin_dir / "gcloud"
    script.write_text(f"""#!{sys.executable}
import json, pathlib, sys
args = sys.argv[1:]
assert args[:2] == ["logging", "read"] and args[3:5] == ["--project", "sd-gke-dev"] and "--format=json" in args, args
entries = json.loads((pathlib.Path({str(directory)!r}) / "cloud-logging.json").read_text())
if 'jsonPayload.event="step"' in args[2] and 'resource.labels.container_name="agent"' in args[2]:
    entries = [e for e in entries if e["jsonPayload"].get("event") == "step"]
elif 'logs/container.googleapis.com%2Fcluster-autoscaler-visibility"' in args[2] and "scaleUp:*" in args[2]:
    entries = [e for e in entries if "scaleUp" in e["jsonPayload"].get("decision", {{}})]
else:
    sys.exit("unexpected filter: " + args[2])
print(json.dumps(entries))
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_live_mode_reads_the_attacher_lines_of_gone_pods_from_cloud_logging(tmp_path, monkeypatch, capsys):
    fake_kubectl(fx.ROOT / "three-cold-starts", tmp_path)
    fake_gcloud(fx.ROOT / "three-cold-starts", tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert cli.main(["--context", "gke_sd", "--project", "sd-gke-dev", "--cluster", "sd-gke"]) == 0
    out = capsys.readouterr().out
    assert "not found" not in out and "GKE autoscaler visibility" in out


def test_cloud_logging_needs_both_project_and_cluster(capsys):
    assert cli.main(["--context", "gke_sd", "--project", "sd-gke-dev"]) == 2
    assert "--project and --cluster go together" in capsys.readouterr().err


def test_live_mode_without_kubectl_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert cli.main(["--context", "gke_sd"]) == 2
    assert "kubectl is not installed" in capsys.readouterr().err


def test_the_recordings_namespaces_are_the_components():
    assert records.ATTACHER_NAMESPACE == ATTACHER_NS


def test_the_webui_logs_its_api_calls_for_the_first_image():
    assert "--api-log" in launch_args(WebuiConfig())
