"""The scheduler: one inference gate served by priority, per-camera rates against their minimum, a
shortfall said once, and room tracking served before door extras when the model time is scarce."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import numpy as np
import pytest

from processor.batcher import Batcher, DemandQueue
from processor.frames import Frame, FrameBuffer
from processor.scheduler import EXTRA, OWED, RECOGNISING, SPARE, InferenceGate, Scheduler
from processor.stages.base import BatchStage
from dashboard.health import parse_metrics


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_gate_serves_owed_before_extra_and_fifo_within_a_priority():
    async def main():
        gate = InferenceGate()
        order: list[str] = []

        async def call(name: str, priority: int, hold: float = 0.0):
            async with gate.turn(priority):
                order.append(name)
                await asyncio.sleep(hold)

        first = asyncio.create_task(call("holder", EXTRA, 0.05))
        await asyncio.sleep(0.01)
        waiting = [asyncio.create_task(call(n, p)) for n, p in
                   (("extra-1", EXTRA), ("owed-1", OWED), ("extra-2", EXTRA), ("owed-2", OWED))]
        await asyncio.gather(first, *waiting)
        return order

    assert asyncio.run(main()) == ["holder", "owed-1", "owed-2", "extra-1", "extra-2"]


def test_gate_survives_a_waiter_cancelled_while_waiting():
    async def main():
        gate = InferenceGate()
        served: list[str] = []

        async def call(name: str, hold: float = 0.0):
            async with gate.turn(OWED):
                served.append(name)
                await asyncio.sleep(hold)

        holder = asyncio.create_task(call("holder", 0.05))
        await asyncio.sleep(0.01)
        cancelled = asyncio.create_task(call("cancelled"))
        later = asyncio.create_task(call("later"))
        await asyncio.sleep(0.01)
        cancelled.cancel()
        await asyncio.gather(holder, later)
        # the gate is free again afterwards
        async with asyncio.timeout(1):
            await call("after")
        return served

    assert asyncio.run(main()) == ["holder", "later", "after"]


def test_rates_behind_and_door_activity():
    clock = Clock()
    scheduler = Scheduler(window_s=4.0, clock=clock)
    scheduler.register("room", "room", 2.0)
    scheduler.register("door", "door", 5.0, idle=2.0)
    for _ in range(4):  # 1 frame a second over 4 s: half the room's minimum
        clock.now += 1.0
        scheduler.analysed("room")
        scheduler.analysed("door", 3)
    assert scheduler.rate("room") == 1.0
    assert scheduler.behind("room") and scheduler.priority(["room"]) == OWED
    assert not scheduler.extras_allowed("room", "room_faces")
    # door: 3 fps is enough while nobody is there (idle 2), not while a face is in view (5)
    assert not scheduler.behind("door") and scheduler.priority(["door"]) == SPARE
    scheduler.set_active("door", True)
    assert scheduler.behind("door") and scheduler.priority(["door", "door"]) == OWED
    for _ in range(8):
        clock.now += 0.25
        scheduler.analysed("room")
    assert scheduler.rate("room") >= 2.0 and not scheduler.behind("room")
    assert scheduler.extras_allowed("room", "room_faces")


def test_shortfall_is_said_once_and_only_when_frames_were_shed(caplog):
    clock = Clock()
    scheduler = Scheduler(window_s=4.0, clock=clock)
    scheduler.register("room-a", "room", 2.0)
    clock.now += 5.0
    scheduler.analysed("room-a", 4)  # 1 fps over the window
    # nothing shed: the camera itself delivers little (it is down or slow), not a compute shortfall
    assert scheduler.check({"room-a": 0}) == []
    with caplog.at_level(logging.WARNING, logger="rollcall.scheduler"):
        lines = scheduler.check({"room-a": 3})
    assert len(lines) == 1 and "room-a" in lines[0] and "short by 1.0 fps" in lines[0], lines
    assert any("room-a" in r.getMessage() for r in caplog.records)
    assert scheduler.check({"room-a": 3}) == []  # still short: not said again
    clock.now += 1.0
    scheduler.analysed("room-a", 8)
    # met again (3 fps), but a rate wavering around the minimum is one shortfall: over only after a window
    assert scheduler.check({"room-a": 0}) == []
    clock.now += 4.5  # nothing analysed: a dip, the same shortfall, not a new line
    assert scheduler.check({"room-a": 2}) == []
    met_at = None
    for _ in range(12):
        clock.now += 1.0
        scheduler.analysed("room-a", 3)
        if met_at is None and scheduler.rate("room-a") >= 2.0:
            met_at = clock.now
        lines = scheduler.check({"room-a": 1})
        if lines:
            break
    assert len(lines) == 1 and "again" in lines[0], lines
    assert met_at is not None and clock.now - met_at >= 4.0  # a whole window at the minimum


def test_idle_doors_beyond_their_idle_rate_come_after_the_rooms_extras():
    clock = Clock()
    scheduler = Scheduler(window_s=4.0, clock=clock)
    scheduler.register("room", "room", 2.0)
    scheduler.register("door-a", "door", 5.0, idle=2.0)
    scheduler.register("door-b", "door", 5.0, idle=2.0)
    for _ in range(4):  # every camera at 8 fps: nobody is behind, an active door neither
        clock.now += 1.0
        for camera in ("room", "door-a", "door-b"):
            scheduler.analysed(camera, 8)
    assert scheduler.priority(["room"]) == EXTRA
    assert scheduler.priority(["door-a", "door-b"]) == SPARE
    scheduler.set_active("door-b", True)  # an undecided face at door b: its extra frames serve a recognition
    assert scheduler.priority(["door-b"]) == RECOGNISING and scheduler.priority(["door-a", "door-b"]) == RECOGNISING

    async def main():
        gate, served = InferenceGate(), []

        async def call(name, priority):
            async with gate.turn(priority):
                served.append(name)
                await asyncio.sleep(0.01)

        holder = asyncio.create_task(call("holder", EXTRA))
        await asyncio.sleep(0)
        waiting = [asyncio.create_task(call(name, lambda n=name: scheduler.priority([n])))
                   for name in ("door-a", "room", "door-b")]
        await asyncio.gather(holder, *waiting)
        return served

    assert asyncio.run(main()) == ["holder", "door-b", "room", "door-a"]


def test_a_turn_asked_first_goes_ahead_of_its_priority_but_not_of_a_better_one():
    async def main():
        gate, served = InferenceGate(), []

        async def call(name, priority, first=False):
            async with gate.turn(priority, first=first):
                served.append(name)
                await asyncio.sleep(0.01)

        holder = asyncio.create_task(call("holder", OWED))
        await asyncio.sleep(0)
        waiting = [asyncio.create_task(call(*args)) for args in
                   (("owed", OWED), ("extra-first", EXTRA, True), ("owed-first", OWED, True), ("extra", EXTRA))]
        await asyncio.gather(holder, *waiting)
        return served

    assert asyncio.run(main()) == ["holder", "owed-first", "owed", "extra-first", "extra"]


class SlowStage(BatchStage):
    """Stands in for a model: a fixed time per frame, on a worker thread, like onnxruntime."""

    def __init__(self, name: str, seconds_per_frame: float, scheduler: Scheduler):
        self.name = name
        self.seconds = seconds_per_frame
        self.scheduler = scheduler

    def process(self, batch, extras_for=None):
        time.sleep(self.seconds * len(batch))
        return batch


def test_room_gets_its_minimum_while_the_doors_could_use_everything():
    """Four door cameras offer 10 fps each of model work at 0.08 s a frame (batches of 8: 0.64 s), more
    than the whole model time; the room camera needs 0.25 s a frame and is owed 2 fps. Taking turns
    (FIFO) would give the room about one frame a second; served first, it gets its 2 fps, and the
    doors keep their idle rate from what is left."""

    async def main(room_minimum: float):
        loop = asyncio.get_running_loop()
        scheduler = Scheduler(window_s=2.0)
        doors = [f"door-{i}" for i in range(4)]
        buffers = {door: FrameBuffer(door, 2, loop) for door in doors}
        buffers["room"] = FrameBuffer("room", 1, loop)
        scheduler.register("room", "room", room_minimum, waiting=buffers["room"].__len__)
        for door in doors:
            scheduler.register(door, "door", 5.0, idle=0.5, waiting=buffers[door].__len__)
        image = np.zeros((4, 4, 3), np.uint8)
        analysed = {"door": 0, "room": 0}
        tasks = []
        for kind, cameras, seconds, max_batch in (("door", doors, 0.08, 8), ("room", ["room"], 0.25, 1)):
            batches, results = DemandQueue(), asyncio.Queue()
            batcher = Batcher(lambda cameras=cameras: {c: buffers[c] for c in cameras}, max_batch=max_batch,
                              max_wait_s=0.0)
            stage = SlowStage(kind, seconds, scheduler)
            tasks += [asyncio.create_task(batcher.run(batches)), asyncio.create_task(stage.run(batches, results))]

            async def count(results=results, kind=kind):
                while True:
                    analysed[kind] += len(await results.get())
            tasks.append(asyncio.create_task(count()))

        start = time.monotonic()
        seq = 0
        while time.monotonic() - start < 6.0:
            t = time.monotonic() - start
            for camera_id in doors + (["room"] if seq % 2 == 0 else []):  # the room camera offers 5 fps
                buffers[camera_id].put(Frame(camera_id, seq, t, time.time(), image))
            seq += 1
            await asyncio.sleep(0.1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return analysed

    served_first = asyncio.run(main(room_minimum=2.0))
    # 6 s: the room is owed 12 frames (a frame or so of slack for the start)
    assert served_first["room"] >= 11, served_first
    assert served_first["door"] >= 8, served_first  # the doors' idle rate, from what is left
    taking_turns = asyncio.run(main(room_minimum=0.01))  # the same with nothing owed: plain FIFO
    assert taking_turns["room"] <= 8, taking_turns


def test_health_page_reads_the_shortfall_from_the_processors_metrics():
    """What the processor's /metrics says of a short room camera is what the dashboard's health page shows."""
    from prometheus_client import generate_latest


    clock = Clock()
    scheduler = Scheduler(window_s=4.0, clock=clock)
    scheduler.register("room-short", "room", 2.0)
    clock.now += 5.0
    scheduler.analysed("room-short", 2)  # 0.5 fps
    scheduler.check({"room-short": 5})
    cameras = parse_metrics(generate_latest().decode())
    assert cameras["room-short"]["tracking_fps"] == 0.5, cameras["room-short"]
    assert cameras["room-short"]["min_fps"] == 2.0 and cameras["room-short"]["shortfall_fps"] == 1.5


def test_a_batch_of_idle_doors_is_served_at_the_priority_of_a_new_face_waiting_behind_it():
    """The face stage waits at the gate with a batch of a door nobody new is at (SPARE) when a face comes
    to another door: the stage holds that door's frames back, so its batch goes at the better priority,
    ahead of a room's extra frame, instead of after everything else."""
    clock = Clock()
    scheduler = Scheduler(window_s=4.0, clock=clock)
    scheduler.register("room", "room", 2.0)
    for door in ("door-a", "door-b"):
        scheduler.register(door, "door", 5.0, idle=2.0)
    for _ in range(4):  # every camera well above what it is owed
        clock.now += 1.0
        for camera in ("room", "door-a", "door-b"):
            scheduler.analysed(camera, 8)
    waiting: set[str] = set()
    assert scheduler.best_priority(waiting) is None

    async def main():
        gate, served = scheduler.gate, []
        stage = SlowStage("faces", 0.0, scheduler)
        stage.process = lambda batch, extras_for=None: served.append(batch[0].camera_id) or batch
        stage.waiting_priority = lambda: scheduler.best_priority(waiting)
        inbox, outbox = asyncio.Queue(), asyncio.Queue()

        async def room_extra():
            async with gate.turn(lambda: scheduler.priority(["room"])):
                served.append("room")

        async def holder():
            async with gate.turn(OWED):
                await asyncio.sleep(0.05)

        held = asyncio.create_task(holder())
        await asyncio.sleep(0)
        runner = asyncio.create_task(stage.run(inbox, outbox))
        await inbox.put([Frame("door-a", 0, 0.0, time.time(), np.zeros((4, 4, 3), np.uint8))])
        await asyncio.sleep(0.01)  # the stage waits at the gate with door a's SPARE batch
        room = asyncio.create_task(room_extra())
        await asyncio.sleep(0)
        scheduler.set_active("door-b", True)  # a face at door b: its frames wait for the stage
        waiting.add("door-b")
        await outbox.get()
        await asyncio.gather(held, room)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        return served

    assert asyncio.run(main()) == ["door-a", "room"]


def test_a_door_is_owed_its_frames_evenly_not_only_on_average():
    """An idle door that took plenty of spare frames is still owed one every 1 / idle rate seconds: its
    window's average would let it starve for seconds while other doors are busy, and an arrival in that gap
    goes unseen. A room camera's minimum stays an average over the window."""
    clock = Clock()
    scheduler = Scheduler(window_s=4.0, clock=clock)
    scheduler.register("room", "room", 2.0)
    scheduler.register("door", "door", 5.0, idle=2.0)
    for _ in range(30):  # 3 s at 10 fps each
        clock.now += 0.1
        scheduler.analysed("door")
        scheduler.analysed("room")
    assert scheduler.priority(["door"]) == SPARE and scheduler.priority(["room"]) == EXTRA
    clock.now += 0.4  # idle: one frame every 0.5 s is owed
    assert scheduler.rate("door") > 2.0 and scheduler.priority(["door"]) == SPARE
    clock.now += 0.2
    assert scheduler.rate("door") > 2.0 and scheduler.priority(["door"]) == OWED
    assert scheduler.priority(["room"]) == EXTRA  # 0.6 s without a frame, 7 fps over the window
    scheduler.analysed("door")
    assert scheduler.priority(["door"]) == SPARE
    scheduler.set_active("door", True)  # a face not decided yet: one frame every 0.2 s
    clock.now += 0.25
    assert scheduler.priority(["door"]) == OWED


def test_rooms_are_starved_when_behind_or_left_without_a_frame_for_two_spacings():
    """A room that ran well above its minimum keeps a good average for seconds while it gets nothing (five
    doors recognising at once): two minimum spacings without an analysed frame, with frames waiting, is
    starved already; a room with nothing waiting (its frames coasted or not come yet) is not."""
    clock = Clock()
    scheduler = Scheduler(window_s=4.0, clock=clock)
    waiting = {"room": 1}
    scheduler.register("room", "room", 2.0, waiting=lambda: waiting["room"])
    scheduler.register("door", "door", 5.0, idle=2.0, waiting=lambda: 5)
    for _ in range(30):  # 3 s at 10 fps
        clock.now += 0.1
        scheduler.analysed("room")
    assert not scheduler.rooms_starved()
    clock.now += 0.9  # 7 fps over the window, 0.9 s without a frame
    assert not scheduler.behind("room") and not scheduler.rooms_starved()
    clock.now += 0.2  # 1.1 s: more than two spacings of its 2 fps
    assert not scheduler.behind("room") and scheduler.rooms_starved()
    waiting["room"] = 0
    assert not scheduler.rooms_starved()
    waiting["room"] = 1
    scheduler.analysed("room")
    assert not scheduler.rooms_starved()
    clock.now += 3.5  # behind on average too
    assert scheduler.behind("room") and scheduler.rooms_starved()


class UnevenStage(BatchStage):
    """Batch i takes ``seconds[i]`` in its worker thread; batch 0 first waits (up to 1 s) for batch 1 to
    start, so with two in flight the later batch is done first however busy the machine is."""

    def __init__(self, seconds: list[float], scheduler: Scheduler, in_flight: int):
        self.name = "uneven"
        self.seconds = seconds
        self.scheduler = scheduler
        self.in_flight = in_flight
        self.running = 0
        self.most_running = 0
        self._counting = threading.Lock()
        self._second_started = threading.Event()

    def process(self, batch, extras_for=None):
        seq = batch[0].seq
        with self._counting:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        if seq == 1:
            self._second_started.set()
        if seq == 0:
            self._second_started.wait(1.0)
        time.sleep(self.seconds[seq])
        with self._counting:
            self.running -= 1
        return [frame.seq for frame in batch]


def test_batches_in_flight_overlap_at_the_gate_and_leave_in_the_order_they_came():
    """Two batches in flight on a two-slot gate: the second, quick one is done while the first is still in
    its call, yet its result waits for the first's; one batch in flight never overlaps."""

    async def main(in_flight: int):
        scheduler = Scheduler(window_s=2.0, gate=InferenceGate(slots=2))
        scheduler.register("door", "door", 5.0)
        stage = UnevenStage([0.15, 0.01, 0.01, 0.1], scheduler, in_flight)
        inbox, outbox = asyncio.Queue(), asyncio.Queue()
        image = np.zeros((4, 4, 3), np.uint8)
        for index in range(4):
            inbox.put_nowait([Frame("door", index, index / 10, time.time(), image)])
        running = asyncio.create_task(stage.run(inbox, outbox))
        order = [(await outbox.get())[0] for _ in range(4)]
        running.cancel()
        return order, stage.most_running

    assert asyncio.run(main(2)) == ([0, 1, 2, 3], 2)
    assert asyncio.run(main(1)) == ([0, 1, 2, 3], 1)


def test_a_failed_batch_in_flight_stops_the_stage_with_its_own_error():
    """The supervisor restarts a stage whose loop raised and says the error in one line: with batches in
    flight that is the failed batch's error, not a group of one."""

    class Failing(UnevenStage):
        def process(self, batch, extras_for=None):
            if batch[0].seq == 1:
                raise ValueError("a broken model session")
            return super().process(batch, extras_for)

    async def main():
        scheduler = Scheduler(window_s=2.0, gate=InferenceGate(slots=2))
        scheduler.register("door", "door", 5.0)
        stage = Failing([0.05, 0.0, 0.0], scheduler, in_flight=2)
        inbox, outbox = asyncio.Queue(), asyncio.Queue()
        image = np.zeros((4, 4, 3), np.uint8)
        for index in range(3):
            inbox.put_nowait([Frame("door", index, index / 10, time.time(), image)])
        await asyncio.wait_for(stage.run(inbox, outbox), 5)

    with pytest.raises(ValueError, match="a broken model session"):
        asyncio.run(main())


def test_a_free_gate_is_held_for_another_stages_owed_camera_never_for_its_own():
    """Room b is owed and has a frame waiting. A door batch (door work is not owed) is held back, its slot
    kept for the person stage that is about to ask; a batch of room a, which is not owed, is that person
    stage itself, and holding it would only keep room b's frame waiting behind it."""
    clock = Clock()
    scheduler = Scheduler(clock=clock, gate=InferenceGate(1, max_hold_s=30.0))
    scheduler.register("room-a", "room", minimum=2.0)
    scheduler.register("room-b", "room", minimum=2.0, waiting=lambda: 1)
    scheduler.register("door-a", "door", minimum=5.0, idle=2.0)
    scheduler.analysed("room-a", 40)  # well above its minimum
    scheduler.analysed("door-a", 40)
    assert scheduler.behind("room-b") and not scheduler.behind("room-a", 1.25)

    async def granted(cameras: list[str]) -> bool:
        async def take_turn():
            async with scheduler.gate.turn(EXTRA, cameras=cameras):
                pass

        turn = asyncio.create_task(take_turn())
        done, _ = await asyncio.wait([turn], timeout=0.2)
        turn.cancel()
        return bool(done)

    async def main():
        return await granted(["room-a"]), await granted(["door-a"])

    assert asyncio.run(main()) == (True, False)
    assert not scheduler.owed_waiting(["room-a"]) and scheduler.owed_waiting(["door-a"]) and scheduler.owed_waiting()


class RoomLikeStage(BatchStage):
    """Stands in for the person stage: a frame whose ``seq`` is in ``coasted`` needs no model call (its
    ``prepare`` says so), the others are detected in a worker thread; a camera's next frame depends on its
    last result (``one_round_per_camera``). The first frame's call waits (up to 1 s) for the frame named
    ``beside`` to start its call, and notes which calls had started by its end."""

    one_round_per_camera = True
    prepare_always = True

    def __init__(self, coasted: set[int], beside: int, in_flight: int):
        self.name = "room-like"
        self.coasted = coasted
        self.beside = beside
        self.in_flight = in_flight
        self.started: list[int] = []
        self.started_by_first_end: list[int] = []
        self._beside_started = threading.Event()
        self._noting = threading.Lock()

    def prepare(self, batch) -> bool:
        return batch[0].seq not in self.coasted

    def process(self, batch, extras_for=None):
        seq = batch[0].seq
        if seq not in self.coasted:
            with self._noting:
                self.started.append(seq)
            if seq == self.beside:
                self._beside_started.set()
            if seq == 0:
                self._beside_started.wait(1.0)
                with self._noting:
                    self.started_by_first_end = list(self.started)
        return [frame.seq for frame in batch]


def _run_room_like(stage: RoomLikeStage, cameras: list[str]):
    async def main():
        inbox, outbox = asyncio.Queue(), asyncio.Queue()
        image = np.zeros((4, 4, 3), np.uint8)
        for seq, camera in enumerate(cameras):
            inbox.put_nowait([Frame(camera, seq, seq / 10, time.time(), image)])
        running = asyncio.create_task(stage.run(inbox, outbox))
        order = [(await outbox.get())[0] for _ in cameras]
        running.cancel()
        return order

    return asyncio.run(main())


def test_a_coasted_room_frame_frees_its_place_at_once_and_the_next_camera_is_detected_beside_the_first():
    """Two room batches in flight: frame 1 (camera b) coasts, done in a moment while frame 0 (camera a) is in
    its call; its place goes to frame 2 (camera c), whose call runs beside frame 0's. Results leave in order.
    Had a round kept its place until its result left, frame 2 would wait for frame 0 to end."""
    stage = RoomLikeStage(coasted={1}, beside=2, in_flight=2)
    assert _run_room_like(stage, ["a", "b", "c", "d"]) == [0, 1, 2, 3]
    assert 2 in stage.started_by_first_end


def test_a_cameras_next_room_frame_waits_for_its_last_round_while_another_camera_goes_ahead():
    """Three room batches in flight; frames 0 and 1 are camera a's, frame 2 camera b's: frame 1 waits for
    frame 0's call to end (its motion plan follows from that detection), frame 2 runs beside frame 0."""
    stage = RoomLikeStage(coasted=set(), beside=2, in_flight=3)
    assert _run_room_like(stage, ["a", "a", "b", "c"]) == [0, 1, 2, 3]
    assert 2 in stage.started_by_first_end and 1 not in stage.started_by_first_end
    assert stage.started.index(1) > stage.started.index(0)
