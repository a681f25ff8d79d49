"""`rollcall scenario run` end to end on the default and hard-case scenarios: rendered (cached), served
by the embedded RTSP server, decoded over RTSP/TCP, one JSON document out. Scores whose parts are not
built yet must be null with a reason, never a number."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

from infra.foundation.paths import PROJECT_ROOT, scenarios_dir
from infra.foundation.config import EXAMPLE_CONFIG, load_config
from infra.devstack import stack as embedded
from infra.scenario.runner import tracking_rate

DEFAULT_SPEC = PROJECT_ROOT / "infra" / "scenarios" / "default.toml"
SCENARIOS = PROJECT_ROOT / "infra" / "scenarios"


def run_scenario(stack_dir, spec, *, load: float = 0.0, timeout: float = 400, config=None, extra=()) -> dict:
    """`rollcall scenario run SPEC --json [--load CORES]` on the test stack; its JSON document. ``spec``: a path
    or a scenario name in infra/scenarios ("class-rush"); ``config``: a config file instead of the shipped
    example. Asserts the run succeeded, ran under the load asked
    for, and left no database or topic behind."""
    spec = spec if os.path.sep in str(spec) else SCENARIOS / f"{spec}.toml"
    env = {**os.environ, "ROLLCALL_STACK_DIR": str(stack_dir)}
    if config is not None:
        env["ROLLCALL_CONFIG"] = str(config)
    command = [sys.executable, "-m", "infra.cli.main", "scenario", "run", str(spec), "--json", "--load", str(load),
               *extra]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["load"]["cores"] == load, document["load"]
    if load:  # the hog really ran beside the system. It competes like any program, so it gets its cores only
        # in part when the system wants them too (0.74 of 1 measured beside the default scenario on 2 cores)
        assert document["load"]["burned_cores"] >= 0.4 * load, document["load"]
    assert document["run"]["left_behind"] == [], (document["run"], result.stderr[-3000:])
    assert not leftovers(document["run"]), (document["run"], result.stderr[-3000:])
    return document


def leftovers(run: dict) -> list[str]:
    """The run's database and topics still on the test stack (they must be gone)."""

    state = embedded.current_state()

    async def look() -> list[str]:
        conn = await asyncpg.connect(state.database_url)
        try:
            names = [r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database")]
        finally:
            await conn.close()
        admin = AIOKafkaAdminClient(bootstrap_servers=state.kafka_bootstrap_servers)
        await admin.start()
        try:
            names += await admin.list_topics()
        finally:
            await admin.close()
        return [n for n in names if n == run["database"] or n.endswith(run["topic_suffix"])]

    return asyncio.run(look())


def test_scenario_run_json_on_default_scenario(stack, stack_dir):
    document = run_scenario(stack_dir, DEFAULT_SPEC)
    for section, key in (("attendance", "precision"), ("attendance", "recall"), ("handoff", "accuracy"),
                         ("events", "recognitions"), ("events", "presence"), ("frames", "decoded"),
                         ("frames", "received")):
        assert key in document[section], (section, key)
    # Door recognition over RTSP, from different photos than the enrolment ones: each enrolled person
    # once with the right id, each visitor unknown, exactly one event per passage.
    recognition = document["recognition"]
    assert recognition["recognised"] == ["macron", "ardern", "obama"], recognition
    assert recognition["missed"] == [] and recognition["wrong_ids"] == [], recognition
    assert recognition["unknown_events"] == 2 and recognition["visitors"] == 2, recognition
    assert recognition["one_event_per_passage"] and document["events"]["recognitions"] == 5, recognition
    assert recognition["latency_p50_ms"] is not None
    # The example config turns the review queue on: each visitor's best crop is waiting for an operator.
    assert recognition["review_queue_written"] == 2, recognition
    # Room camera: each arrival is one room track (presence events decoded against schemas/presence.v1.json
    # by the reader); each enrolled person's track has their identity from the door, visitors stay unknown.
    handoff = document["handoff"]
    assert document["events"]["presence"] >= 10, document["events"]
    assert handoff["unmatched_arrivals"] == [] and handoff["unmatched_tracks"] == 0, json.dumps(handoff)
    assert handoff["tracks_per_person"] == {p: 1 for p in ("ardern", "macron", "obama", "visitor-biden",
                                                          "visitor-sunak")}, json.dumps(handoff)
    assert handoff["correct"] == ["ardern", "macron", "obama"] and handoff["accuracy"] == 1.0, json.dumps(handoff)
    assert handoff["visitors_given_an_identity"] == {}, json.dumps(handoff)  # a visitor never takes someone's identity
    # Not built yet: null, with the reason given.
    for dotted in ("attendance.precision", "attendance.recall"):
        section, key = dotted.split(".")
        if document[section][key] is None:
            assert dotted in document["not_measured"]
    frames = document["frames"]
    # One loop of each camera's video over RTSP: every frame arrives (a little slack for the loop edge); the
    # room camera decodes every one, the door only part (keyframes while nobody is at it, the default).
    assert frames["expected"] == 2 * 750
    assert frames["received"] >= 0.98 * frames["expected"], frames
    door, room = frames["per_camera"]["door-a101"], frames["per_camera"]["room-a101"]
    assert room["decoded"] >= 0.98 * room["received"], frames
    assert 0 < door["decoded"] < 0.8 * door["received"], frames
    assert set(frames["per_camera"]) == {"door-a101", "room-a101"}
    for camera in frames["per_camera"].values():
        assert camera["error"] is None
    assert sorted(document["ground_truth"]["expected_present"]) == ["ardern", "macron", "obama"]
    # The room camera's tracking rate against its minimum: frames its tracker analysed per second of video.
    tracking = frames["room_tracking"]["room-a101"]
    room = frames["per_camera"]["room-a101"]
    assert 0 < tracking["tracked"] <= room["decoded"], (tracking, room)
    assert abs(tracking["achieved_fps"] - tracking["tracked"] / tracking["video_s"]) < 0.01, tracking
    assert tracking["video_s"] >= 0.98 * 75, tracking
    if tracking["min_fps"] is not None:
        assert tracking["met"] == (tracking["tracked"] + 1 >= tracking["min_fps"] * tracking["video_s"]), tracking
    assert document["load"] == {"cores": 0.0, "processes": 0, "burned_cores": 0.0}


def test_scenario_run_hard_cases(stack, stack_dir):
    """infra/scenarios/hard-cases.toml: Macron and Ardern one second apart, a visitor between them and
    Obama, and Obama hidden from the room camera for 3.5 s once seated."""
    document = run_scenario(stack_dir, "hard-cases", timeout=300)
    assert document["recognition"]["recognised"] == ["macron", "ardern", "obama"], document["recognition"]
    handoff = document["handoff"]
    # Both of the close pair get their own identity (never each other's), through the handoff.
    assert handoff["correct"] == ["ardern", "macron", "obama"] and handoff["accuracy"] == 1.0, json.dumps(handoff)
    assert handoff["identity_sources"]["macron"] == handoff["identity_sources"]["ardern"] == "handoff", json.dumps(handoff)
    # The visitor stays unknown and takes nobody's identity.
    assert handoff["visitors_given_an_identity"] == {}, json.dumps(handoff)
    # Obama's track is lost while hidden and picked up again: still one track, identity carried over.
    assert handoff["tracks_per_person"]["obama"] == 1 and handoff["reacquired"] == ["obama"], json.dumps(handoff)
    assert handoff["identity_sources"]["obama"] == "reacquired", json.dumps(handoff)


def test_scenario_run_with_unknown_room_is_one_line(stack, stack_dir, tmp_path):
    spec = tmp_path / "elsewhere.toml"
    spec.write_text(DEFAULT_SPEC.read_text().replace('room = "A101"', 'room = "Z999"')
                    .replace('"photos/', f'"{DEFAULT_SPEC.parent}/photos/').replace('name = "default"', 'name = "elsewhere"'))
    env = {**os.environ, "ROLLCALL_STACK_DIR": str(stack_dir)}
    result = subprocess.run([sys.executable, "-m", "infra.cli.main", "scenario", "run", str(spec), "--json"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert not (tmp_path / "elsewhere").exists()
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "session.room 'Z999' has no door" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_scenario_run_with_impossible_load_is_one_line(stack_dir):
    env = {**os.environ, "ROLLCALL_STACK_DIR": str(stack_dir)}
    result = subprocess.run([sys.executable, "-m", "infra.cli.main", "scenario", "run", str(DEFAULT_SPEC), "--json",
                             "--load", "1000"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "--load 1000" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_tracking_rate_against_the_minimum():
    """The report's per-camera tracking rate: analysed frames per second of delivered video against the
    camera's minimum, one frame of slack (the frames before the first clean keyframe are never analysed)."""
    from types import SimpleNamespace


    config = load_config(EXAMPLE_CONFIG, environ={})
    camera = config.camera("room-a101").model_copy(update={"min_tracking_fps": 2.0, "analysis_fps": 4.0})
    for tracked, met in ((150, True), (149, True), (148, False), (300, True)):
        stage = SimpleNamespace(frames_tracked={"room-a101": tracked}, max_gap_s={"room-a101": 0.512})
        rate = tracking_rate(stage, config, camera, 75.0)
        assert rate == {"tracked": tracked, "max_gap_s": 0.51, "video_s": 75.0,
                        "achieved_fps": round(tracked / 75.0, 2), "min_fps": 2.0, "met": met}, rate
    stage = SimpleNamespace(frames_tracked={}, max_gap_s={})
    assert tracking_rate(stage, config, camera, 0.0)["achieved_fps"] is None  # no video delivered: no rate


def _room_tracking_met(document: dict) -> None:
    for camera, tracking in document["frames"]["room_tracking"].items():
        assert tracking["met"], (camera, tracking)  # the scheduler gave the room camera its minimum


def test_default_scenario_under_load(stack, stack_dir):
    """The default scenario with one core kept busy by another process: attendance, handoff and room
    tracking as on a quiet machine (this marked nobody present before the scheduler and the fitted
    person detector)."""
    document = run_scenario(stack_dir, "default", load=1)
    attendance, handoff = document["attendance"], document["handoff"]
    assert attendance["precision"] == 1.0 and attendance["recall"] >= 0.98, json.dumps(attendance)
    assert handoff["accuracy"] >= 0.95 and handoff["visitors_given_an_identity"] == {}, json.dumps(handoff)
    _room_tracking_met(document)


def test_class_rush_under_load(stack, stack_dir):
    """class-rush (16 enrolled within two minutes, pairs side by side, a tailgater, a student who turns
    back) with one core kept busy: attendance precision 1.0 and recall at least 0.98, handoff accuracy at
    least 0.95, no visitor given an identity, the door recognises every enrolled student, the student who
    turned back is not present, whoever the door recognised is never plain absent, and the room camera gets
    its minimum tracking rate. (Until 2026-12-02's third session recall and handoff held only with the room
    camera near 3.5 fps; test_class_rush_at_the_minimum_tracking_rate holds the design to the rate the
    scheduler guarantees.)"""
    document = run_scenario(stack_dir, "class-rush", load=1, timeout=600)
    _class_rush_right(document)
    _room_tracking_met(document)


def test_class_rush_at_the_minimum_tracking_rate(stack, stack_dir, tmp_path):
    """class-rush with the room camera analysed at exactly its minimum tracking rate ([scheduling]
    room_min_fps), on a quiet machine: what a busy machine comes down to once the scheduler has given the
    room camera its minimum and nothing more. Attendance and handoff must be as right as at 4 fps:
    correctness that needed spare CPU shows here, whatever the machine's other tenants do."""
    minimum = load_config(EXAMPLE_CONFIG, environ={}).scheduling.room_min_fps
    text = EXAMPLE_CONFIG.read_text()
    room = 'url = "embedded:default/room"\nanalysis_fps = 4\n'
    assert room in text  # the example's room camera, as this test rewrites it
    config_path = tmp_path / "rollcall.toml"
    config_path.write_text(text.replace(room, f'url = "embedded:default/room"\nanalysis_fps = {minimum:g}\n'))
    document = run_scenario(stack_dir, "class-rush", timeout=600, config=config_path)
    tracking = document["frames"]["room_tracking"]["room-a101"]
    assert tracking["achieved_fps"] <= minimum + 0.05 and tracking["met"], tracking
    _class_rush_right(document)


def _class_rush_right(document: dict) -> None:
    attendance, handoff = document["attendance"], document["handoff"]
    assert attendance["precision"] == 1.0 and attendance["wrongly_present"] == [], json.dumps(attendance)
    assert attendance["recall"] >= 0.98, json.dumps(attendance)
    assert handoff["accuracy"] >= 0.95 and handoff["visitors_given_an_identity"] == {}, json.dumps(handoff)
    recognition = document["recognition"]
    assert recognition["missed"] == [] and recognition["wrong_ids"] == [], json.dumps(recognition)
    statuses = {person: row["status"] for person, row in attendance["rows"].items()}
    assert statuses.get("bus-b") != "present", statuses  # turned back at the door
    # evidence does not vanish: whoever the door recognised is at worst unconfirmed, never plain absent
    absent = [p for p in recognition["recognised"] if statuses.get(p, "absent") == "absent"]
    assert absent == [], (absent, statuses)


def member_decisions(document) -> str:
    """What the group's members decided, from their logs (kept in the run's folder): for failure messages,
    since a group run's story is spread over several processes."""
    folder = scenarios_dir() / document["scenario"] / "runs" / document["run"]["id"]
    words = ("recognition ", "handoff ", "promoted", "resumed", "standby of", "dark")
    lines = []
    for log in sorted(folder.glob("processor-*.log")):
        lines += [f"{log.stem}: {line[11:23]} {line.split(': ', 1)[-1][:150]}"
                  for line in log.read_text(errors="replace").splitlines() if any(w in line for w in words)]
    return "\n".join(sorted(lines, key=lambda line: line.split(": ", 1)[1]))


def test_failover_when_the_room_cameras_processor_is_killed(stack, stack_dir):
    """Three processors in one group; the one running the room camera is SIGKILLed 20 s into the default
    scenario. Its cameras move within the group's session timeout, the room's tracks go on under their ids
    and identities with the new owner (its standby, which kept tracking the room unpublished), and no camera
    is analysed twice once the group has settled."""
    document = run_scenario(stack_dir, "default", extra=["--processors", "3", "--kill-one-at", "20"])
    failover = document["failover"]
    assert failover["killed"]["cameras"] == ["room-a101"], failover["killed"]
    assert failover["max_gap_s"] <= 15, failover
    assert failover["double_analysed_s"] == 0, failover
    owners = failover["per_camera"]["room-a101"]["owners"]
    assert len(owners) == 2 and owners[0] == failover["killed"]["processor_id"], owners
    decisions = member_decisions(document)
    assert document["attendance"]["precision"] == 1.0, (document["attendance"], decisions)
    # the room camera's standby saw who came in while its owner was gone (obama, 18.5 s at the door)
    assert document["attendance"]["recall"] >= 0.98, (document["attendance"], decisions)
    handoff = document["handoff"]
    assert handoff["visitors_given_an_identity"] == {}, (handoff, decisions)
    for person in ("macron", "ardern"):  # in the room before the kill: one track each, across the move
        assert handoff["tracks_per_person"][person] == 1, (handoff["track_list"], decisions)
        track = next(t for t in handoff["track_list"] if t["arrival"] == person)
        assert track["person_id"] == person, track
        assert document["attendance"]["rows"][person]["status"] == "present", document["attendance"]


def test_kill_without_a_group_is_one_line(stack_dir):
    env = {**os.environ, "ROLLCALL_STACK_DIR": str(stack_dir)}
    result = subprocess.run([sys.executable, "-m", "infra.cli.main", "scenario", "run", str(DEFAULT_SPEC),
                             "--kill-one-at", "5"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "rollcall: error: --kill-one-at needs --processors 2 or more (someone must take the cameras over) "
        "and a time of 0 s or more"]
