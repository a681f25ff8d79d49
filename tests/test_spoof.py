"""Proxy attendance at the door, end to end (`rollcall scenario run infra/scenarios/spoof.toml`): two
visitors hold up pictures of enrolled students who stay away, a printed photo and a phone screen, among the
default scenario's genuine arrivals. The liveness check (processor/stages/liveness.py) must make both
recognitions suspect: no identity, no attendance for the pictured students, both in the review queue as
suspected spoofs; and the genuine arrivals must be recognised and attended as without the attacks."""

from __future__ import annotations

from tests.test_scenario_run import SCENARIOS, run_scenario


def test_printed_photo_and_phone_screen_at_the_door_make_no_attendance(stack, stack_dir):
    document = run_scenario(stack_dir, SCENARIOS / "spoof.toml", timeout=400)
    recognition, attendance = document["recognition"], document["attendance"]
    liveness = recognition["liveness"]
    print("\nliveness:", liveness, "\nattendance:", attendance)
    # the attacks: suspect, each showing the student it pretended to be, never their identity
    assert sorted(s["pictured_person_id"] for s in liveness["suspect"]) == ["collins", "hanks"], liveness
    assert all(s["score"] < 0.5 for s in liveness["suspect"]), liveness
    assert recognition["wrong_ids"] == [], recognition  # nobody recognised as hanks or collins
    assert attendance["absent_attended"] == [] and "hanks" not in attendance["rows"] and \
        "collins" not in attendance["rows"], attendance
    assert recognition["review_queue_suspected_spoofs"] == 2, recognition
    # the genuine arrivals: recognised, live, present, as in the default scenario
    assert recognition["recognised"] == ["macron", "ardern", "obama"] and recognition["missed"] == [], recognition
    assert set(liveness["live_scores"]) >= {"macron", "ardern", "obama"}, liveness
    assert all(score >= 0.5 for score in liveness["live_scores"].values()), liveness
    assert attendance["recall"] == 1.0 and attendance["precision"] == 1.0, attendance
    assert attendance["missed"] == [] and attendance["visitor_rows"] == [], attendance
