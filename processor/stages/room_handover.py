"""The room stage's part in a processor group (processor/group/): a room camera's live tracks checkpointed
to a compacted topic, resumed by the camera's next owner, and the people who came in while the camera was
dark handed their identities like any entry. Mixed into :class:`processor.stages.room.RoomStage`, whose
fields it uses (trackers, live, matcher, publish, checkpoint_topic, checkpoints, ...)."""

from __future__ import annotations

import logging
import time
from collections import deque

import numpy as np

from processor.appearance import describe_person
from processor.checkpoints import RoomCheckpoint, TrackState
from processor.frames import Frame
from processor.stages.room_state import EntryLooks, Live, isolated
from processor.stages.track_resume import resume_pairs

log = logging.getLogger("rollcall.room")


class RoomHandover:
    def checkpoint(self, camera_id: str, at: float) -> RoomCheckpoint | None:
        """Publish the camera's live tracks (keyed by camera on the compacted checkpoint topic)."""
        tracker = self.trackers.get(camera_id)
        if tracker is None or not self.checkpoint_topic or camera_id in self.shadow:
            return None
        tracks = []
        for track in tracker.open_tracks:
            live = self.live.get(track.track_id)
            if live is None:
                continue
            tracks.append(TrackState(
                track_id=track.track_id, person_id=live.person_id, identity_source=live.identity_source,
                handoff=live.handoff, first_seen=live.first_seen, last_seen=live.last_seen, box=track.box,
                frame_size=live.frame_size, face_decided=live.face_decided,
                look=[round(float(v), 5) for v in track.look.ravel()] if track.look is not None else None,
                entered_via=track.entered_via if self.matcher.is_pending(track.track_id) else None))
        checkpoint = RoomCheckpoint(camera_id=camera_id, owner=self.owner, at=at, tracks=tracks)
        self.publish(self.checkpoint_topic, camera_id, checkpoint.encode(), best_effort=True)
        self._checkpointed[camera_id] = at
        return checkpoint

    def _resume(self, camera_id: str, tracker, frame: Frame) -> None:
        """This processor's first frame of the camera: take up the tracks of its last checkpoint."""
        checkpoint = self.checkpoints(camera_id)
        if checkpoint is None or frame.captured_at - checkpoint.at > self.checkpoint_max_age_s:
            return
        self._take_up(camera_id, tracker, checkpoint.tracks, frame.captured_at, frame.pts_s)
        self._gaps[camera_id] = (checkpoint.at, frame.captured_at)
        # the handoff waits for the newcomers of the gap (seen, then described) before deciding anything here
        self.matcher.hold(camera_id, frame.captured_at + self.gap_entry_window_s + 2.5)
        self.resumed[camera_id] = self.resumed.get(camera_id, 0) + len(checkpoint.tracks)
        log.info("camera %s: resumed %d track(s) from %s's checkpoint of %.1f s ago", camera_id, len(checkpoint.tracks),
                 checkpoint.owner, frame.captured_at - checkpoint.at)

    def _take_up(self, camera_id: str, tracker, tracks: list[TrackState], now: float, pts_s: float) -> None:
        """Checkpointed tracks become this processor's, lost a moment ago: found again (paired with a new
        track) they continue, id and identity; not found within ``reacquire_s`` they exit."""
        room_id = self.rooms.get(camera_id, "unknown")
        states = []
        for state in tracks:
            look = np.asarray(state.look, np.float32) if state.look else None
            states.append((state.track_id, state.box, look, state.entered_via, max(0.0, now - state.last_seen)))
            self.live[state.track_id] = Live(
                room_id, camera_id, state.first_seen, state.last_seen, state.box, state.frame_size,
                last_update=now, person_id=state.person_id, identity_source=state.identity_source,
                handoff=state.handoff, face_decided=state.face_decided)
            if state.entered_via is not None and state.person_id is None:
                try:  # its handoff was still open: the door's recognitions reach this processor too
                    self.matcher.add_entry(state.entered_via, state.track_id, state.first_seen)
                    self._entry_looks[state.track_id] = EntryLooks()
                except (KeyError, ValueError) as exc:
                    log.warning("resumed track %s: its handoff cannot be reopened: %s", state.track_id, exc)
            else:  # decided: one identity, one live track, for the handoffs still to come
                self.matcher.add_live(camera_id, state.track_id, state.person_id)
        tracker.resume(states, pts_s)

    def _gap_entry(self, event, wall: float) -> None:
        """A track that appears, away from the entry zones, in the first ``gap_entry_window_s`` after the
        camera was resumed, once every checkpointed track has been found again: someone who came in while
        the camera was dark. Their handoff is decided like any entry's (through the room's only door; with
        several doors they stay unknown), entered at the middle of the gap since when exactly is unknown,
        and only once their clothing has been seen (:meth:`_describe_gap_entries`): with the time unknown,
        the clothing is what tells two such newcomers apart. Left ambiguous, they stay unknown."""
        gap = self._gaps.get(event.camera_id)
        if gap is None:
            return
        dark_from, resumed_at = gap
        if wall - resumed_at > self.gap_entry_window_s:
            del self._gaps[event.camera_id]
            return
        doors = [d.id for d in self.config.doors if d.room_camera == event.camera_id]
        if len(doors) != 1 or self.trackers[event.camera_id].resuming:
            return  # which door is unknown, or the newcomer may be a checkpointed person not found yet
        self._gap_waiting[event.track_id] = (doors[0], (dark_from + resumed_at) / 2, wall, EntryLooks())
        log.info("camera %s: track %s came in while the camera was dark (%.1f s)", event.camera_id,
                 event.track_id, resumed_at - dark_from)

    def _describe_gap_entries(self, tracker, frame: Frame, detections: list) -> None:
        """The clothing of the newcomers of the failover gap; each becomes an entry once described
        (``looks_per_entry`` looks, or 2 s of trying)."""
        if not self._gap_waiting:
            return
        boxes = np.array([d.box for d in detections], np.float64).reshape(-1, 4)
        for track in tracker.open_tracks:
            waiting = self._gap_waiting.get(track.track_id)
            if waiting is None or track.state != "active" or track.last_pts_s != frame.pts_s:
                continue
            door, entered, seen_at, looks = waiting
            look = describe_person(frame.image, track.box)
            if look is not None:
                looks.add(look, isolated(track.box, boxes), self.looks_per_entry)
            if looks.done(self.looks_per_entry) or frame.captured_at - seen_at > 2.0:
                del self._gap_waiting[track.track_id]
                x1, _, x2, y2 = track.box
                try:
                    self.matcher.add_entry(door, track.track_id, entered, position=((x1 + x2) / 2, y2),
                                           appearance=looks.mean(), reopen=False)
                except (KeyError, ValueError) as exc:
                    log.warning("track %s: not taken as an entry of the failover gap: %s", track.track_id, exc)
        for track_id in [t for t in self._gap_waiting if t not in self.live]:
            del self._gap_waiting[track_id]  # gone before it was described

    def _follow_owner(self, camera_id: str, tracker, frame: Frame) -> None:
        """A standby pairs its tracks with the owner's at each checkpoint, each of its tracks taken where it
        was at the checkpoint's moment (it keeps their recent places): at a promotion the owner's last places
        are seconds old and people have walked on, and a checkpoint reaches the standby a frame or two late
        (someone walking to a seat was left with two tracks, the owner's entered one never ending)."""
        checkpoint = self.checkpoints(camera_id) if self.checkpoints is not None else None
        self._watch_owner(camera_id, checkpoint, frame.captured_at)
        mine = [t for t in tracker.open_tracks if t.state == "active" and t.track_id in self.live]
        places = self._places.setdefault(camera_id, {})
        for track in mine:
            trail = places.setdefault(track.track_id, deque())
            trail.append((frame.captured_at, track.box))
            while trail and frame.captured_at - trail[0][0] > self.follow_max_age_s:
                trail.popleft()
        for track_id in [t for t in places if t not in self.live]:
            del places[track_id]
        if checkpoint is None or checkpoint.at == self._followed_at.get(camera_id):
            return
        self._followed_at[camera_id] = checkpoint.at
        if frame.captured_at - checkpoint.at > self.follow_max_age_s:
            return  # older than what is remembered (the owner is late or gone): the pairs made so far hold
        at_checkpoint = [(t, min(places[t.track_id], key=lambda place: abs(place[0] - checkpoint.at)))
                         for t in mine if places.get(t.track_id)]
        pairs = resume_pairs([(st.box, np.asarray(st.look, np.float32) if st.look else None,
                               abs(checkpoint.at - st.last_seen)) for st in checkpoint.tracks],
                             [(box, t.look) for t, (_, box) in at_checkpoint])
        paired = {at_checkpoint[i][0].track_id: checkpoint.tracks[k].track_id for i, k in pairs.items()}
        owner_ids = set(paired.values())
        live_ids = {t.track_id for t in mine}
        for own, owners in self._owner_ids.get(camera_id, {}).items():  # unseen this time: the last pair holds
            if own not in paired and own in live_ids and owners not in owner_ids:
                paired[own] = owners
                owner_ids.add(owners)
        self._owner_ids[camera_id] = paired

    def _watch_owner(self, camera_id: str, checkpoint: RoomCheckpoint | None, now: float) -> None:
        """Tell the processor (``on_owner_silent``) when the owner's checkpoints stop and when they resume."""
        silent = checkpoint is not None and now - checkpoint.at > self.owner_silent_s
        if silent == (camera_id in self._owner_silent):
            return
        if silent:
            self._owner_silent.add(camera_id)
            log.info("camera %s: its owner %s has not checkpointed for %.1f s; tracking at the full rate",
                     camera_id, checkpoint.owner, now - checkpoint.at)
        else:
            self._owner_silent.discard(camera_id)
            log.info("camera %s: its owner is heard again; back to the standby rate", camera_id)
        if self.on_owner_silent is not None:
            self.on_owner_silent(camera_id, silent)

    def promote(self, camera_id: str) -> None:
        """This processor's standby of the camera becomes its owner: what the standby tracked goes out now.
        The standby's tracks paired with the owner's (by id when the standby took them up from a checkpoint,
        else as paired while following the owner's checkpoints, else jointly by place and look) continue the
        owner's ids and identities (the owner saw more frames); the others keep what the standby's own
        handoff decided: the people who came in while the owner was gone. The owner's tracks nobody
        continues are taken up as lost, as in a plain takeover: found again they go on, else they exit (the owner
had published their entries)."""
        self.shadow.discard(camera_id)
        self._owner_silent.discard(camera_id)
        followed = self._owner_ids.pop(camera_id, {})
        self._followed_at.pop(camera_id, None)
        self._places.pop(camera_id, None)
        tracker = self.trackers.get(camera_id)
        if tracker is None:
            return  # nothing warm yet: the first frame resumes from the checkpoint as a plain takeover would
        checkpoint = self.checkpoints(camera_id) if self.checkpoints is not None else None
        states = {t.track_id: t for t in checkpoint.tracks} if checkpoint is not None else {}
        mine = [t for t in tracker.open_tracks if t.state == "active" and t.track_id in self.live]
        found = {tid: states[owner] for tid, owner in followed.items()
                 if owner in states and tracker.track(owner) is None}
        taken = {state.track_id for state in found.values()}
        found.update(self._pair_with_checkpoint(
            [t for t in mine if t.track_id not in states and t.track_id not in found],
            [st for tid, st in states.items() if tracker.track(tid) is None and tid not in taken]))
        for track in mine:
            state = states.get(track.track_id) or found.get(track.track_id)
            if state is not None and track.track_id != state.track_id:
                self._rename(camera_id, tracker, track.track_id, state.track_id)
            live = self.live[track.track_id]
            if state is not None and state.person_id is not None:
                live.person_id, live.handoff = state.person_id, state.handoff
                live.identity_source = state.identity_source
                live.first_seen = min(live.first_seen, state.first_seen)
                self.matcher.set_identity(camera_id, track.track_id, state.person_id)
            self._emit("update" if state is not None else "enter", track.track_id, live)
        continued = {t.track_id for t in mine}
        unfound = [st for tid, st in states.items() if tid not in continued and tracker.track(tid) is None]
        if unfound and camera_id in self._last_pts:  # taken up as lost: found again they go on, else they exit
            self._take_up(camera_id, tracker, unfound, time.time(), self._last_pts[camera_id])
        log.info("camera %s: standby promoted with %d live track(s), %d continuing the owner's", camera_id,
                 len(mine), sum(1 for t in mine if t.track_id in states))

    def _pair_with_checkpoint(self, tracks: list, states: list) -> dict:
        """The standby's own tracks found where a checkpointed one was: track id -> its TrackState."""
        if not tracks or not states:
            return {}
        now = time.time()
        pairs = resume_pairs([(st.box, np.asarray(st.look, np.float32) if st.look else None,
                               max(0.0, now - st.last_seen)) for st in states],
                             [(t.box, t.look) for t in tracks])
        return {tracks[i].track_id: states[k] for i, k in pairs.items()}

    def _rename(self, camera_id: str, tracker, old: str, new: str) -> None:
        if tracker.rename(old, new) is None:
            return
        self.live[new] = self.live.pop(old)
        for per_track in (self._entry_looks, self._gap_waiting):
            if old in per_track:
                per_track[new] = per_track.pop(old)
        self.matcher.rename_track(camera_id, old, new)

    def release(self, camera_id: str, *, moved: bool) -> None:
        """This processor stops running the camera. ``moved``: another member takes it over, so its tracks
        are checkpointed and forgotten without exit events (the new owner continues them); otherwise the
        camera left the campus and its tracks end here (exit events)."""
        tracker = self.trackers.get(camera_id)
        if tracker is None:
            return
        if moved or camera_id in self.shadow:  # a standby's tracks were never published: they just go
            if camera_id not in self.shadow:
                last = max((live.last_seen for live in self.live.values() if live.camera_id == camera_id),
                           default=0.0)
                self.checkpoint(camera_id, max(last, self._checkpointed.get(camera_id, 0.0)))
            for track in tracker.drop():
                self.live.pop(track.track_id, None)
                self._entry_looks.pop(track.track_id, None)
                self.matcher.track_exited(track.track_id, room_camera=camera_id)  # gone from this processor
        else:
            self._flush_tracker(tracker)
        del self.trackers[camera_id]
        if (trace := self.traces.pop(camera_id, None)) is not None:
            trace.close()  # a camera taken up again later starts a new trace: its tracker starts anew
        for per_camera in (self._last_pts, self._counts, self._occupancy_sent, self._checkpointed, self._gaps,
                           self._owner_ids, self._followed_at, self._places):
            per_camera.pop(camera_id, None)
        self._owner_silent.discard(camera_id)

