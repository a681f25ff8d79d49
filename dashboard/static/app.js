// Rollcall dashboard: the little JavaScript the pages need. No libraries, no CDN.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]').content;
const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, text) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
};
const hhmmss = (iso) => (iso || "").slice(11, 19);

// Forms that ask before they act (erase).
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) event.preventDefault();
});

// ------------------------------------------------------------------------------------- live video
window.rollcallVideo = {};

function countFrames(cam, video) {
  const state = window.rollcallVideo[cam];
  const tick = () => { state.frames += 1; video.requestVideoFrameCallback(tick); };
  if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) video.requestVideoFrameCallback(tick);
}

function fallbackToMjpeg(cam, why) {
  const state = window.rollcallVideo[cam];
  if (state.mode === "mjpeg") return;
  if (state.pc) state.pc.close();
  state.mode = "mjpeg";
  state.reason = why;
  const video = $("#video-" + cam), img = $("#mjpeg-" + cam);
  video.hidden = true;
  img.hidden = false;
  $("#vstate-" + cam).textContent = "MJPEG (" + why + ")";
  readMjpeg(cam, img, state);
}

// The MJPEG stream read with fetch(): each part (by its Content-Length) shown as a blob image, so the
// page knows when a frame arrives (an <img src=mjpeg> gives no per-frame event) and reconnects on its own.
async function readMjpeg(cam, img, state) {
  const url = "/api/video/" + encodeURIComponent(cam) + "/mjpeg";
  const decoder = new TextDecoder("latin1");
  while (state.mode === "mjpeg") {
    try {
      const response = await fetch(url, { credentials: "same-origin" });
      if (!response.ok) throw new Error(response.statusText);
      const reader = response.body.getReader();
      let buffer = new Uint8Array(0);
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const joined = new Uint8Array(buffer.length + value.length);
        joined.set(buffer);
        joined.set(value, buffer.length);
        buffer = joined;
        for (;;) {
          const head = decoder.decode(buffer.subarray(0, Math.min(buffer.length, 200)));
          const end = head.indexOf("\r\n\r\n");
          const match = /Content-Length: (\d+)/i.exec(head);
          if (end < 0 || !match) break;
          const start = end + 4, length = Number(match[1]);
          if (buffer.length < start + length + 2) break;
          const jpeg = buffer.slice(start, start + length);
          buffer = buffer.slice(start + length + 2);
          const previous = img.src;
          img.src = URL.createObjectURL(new Blob([jpeg], { type: "image/jpeg" }));
          if (previous.startsWith("blob:")) URL.revokeObjectURL(previous);
          state.frames += 1;
        }
      }
    } catch (error) {
      $("#vstate-" + cam).textContent = "MJPEG reconnecting (" + (error.message || error) + ")";
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

async function startWebRtc(cam) {
  const state = window.rollcallVideo[cam];
  const video = $("#video-" + cam);
  const pc = new RTCPeerConnection({ iceServers: [] });
  state.pc = pc;
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.ontrack = (event) => {
    video.srcObject = event.streams[0] || new MediaStream([event.track]);
    video.play().catch(() => {});
  };
  pc.onconnectionstatechange = () => {
    $("#vstate-" + cam).textContent = "WebRTC " + pc.connectionState;
    if (pc.connectionState === "failed") fallbackToMjpeg(cam, "WebRTC failed");
  };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 2000);
  });
  const response = await fetch("/api/video/" + encodeURIComponent(cam) + "/offer", {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
    body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer" }),
  });
  if (!response.ok) throw new Error((await response.json()).error || response.statusText);
  await pc.setRemoteDescription(await response.json());
  countFrames(cam, video);
  // No picture within 10 s (blocked UDP, no codec): use the fallback.
  setTimeout(() => { if (state.mode === "webrtc" && video.currentTime === 0) fallbackToMjpeg(cam, "no WebRTC frames"); }, 10000);
}

function startCameras() {
  const forceMjpeg = new URLSearchParams(location.search).get("video") === "mjpeg" || !window.RTCPeerConnection;
  document.querySelectorAll("figure.camera").forEach((figure) => {
    const cam = figure.dataset.camera;
    window.rollcallVideo[cam] = { mode: "webrtc", frames: 0, pc: null };
    if (forceMjpeg) return fallbackToMjpeg(cam, "chosen");
    startWebRtc(cam).catch((error) => fallbackToMjpeg(cam, String(error.message || error)));
  });
}

// ------------------------------------------------------------------------------------- event feed
window.rollcallFeed = { received: 0 };

function describe(event) {
  if (event.event_type === "recognition") {
    const who = event.identity === "known" ? event.person_id : "unknown";
    return [who, `${event.camera_id}: ${event.identity === "known" ? "recognised " + who : "unknown face"} (track ${event.track_id}, score ${event.score.toFixed(2)})`];
  }
  const who = event.person_id || "unknown";
  const source = event.identity_source !== "none" ? ` via ${event.identity_source}` : "";
  return [who, `${event.camera_id}: ${event.kind} ${who}${source} (track ${event.track_id})`];
}

function addToFeed(event) {
  const feed = $("#feed");
  if (!feed) return;
  const [who, text] = describe(event);
  const item = el("li", { class: "ev ev-" + event.event_type + (who === "unknown" ? " unknown" : ""),
                          "data-type": event.event_type, "data-person": who });
  item.append(el("time", {}, hhmmss(event.published_at || event.frame_time)), " ",
              el("b", {}, event.event_type), " ", text);
  feed.prepend(item);
  while (feed.children.length > 200) feed.lastChild.remove();
}

let boardTimer = null;
function refreshBoardSoon() {
  if (boardTimer) return;
  boardTimer = setTimeout(() => { boardTimer = null; refreshBoard(); }, 300);
}

async function refreshBoard() {
  const response = await fetch("/api/presence", { credentials: "same-origin" });
  if (!response.ok) return;
  const data = await response.json();
  for (const room of data.rooms) {
    const box = document.querySelector(`.room[data-room="${CSS.escape(room.room_id)}"]`);
    if (!box) continue;
    const occupancy = room.occupancy ? ` · counted ${room.occupancy.people} (avg ${room.occupancy.people_avg.toFixed(1)})` : "";
    const list = el("ul", { class: "tracks" });
    for (const t of room.tracks) {
      const label = t.name ? `${t.name} (${t.person_id})` : (t.person_id || "unknown");
      list.append(el("li", { class: t.identity, "data-person": t.person_id || "unknown" },
                     `${label} · track ${t.track_id} · ${Math.round(t.dwell_s)} s`));
    }
    box.replaceChildren(el("h3", {}, room.room_id), el("p", { class: "count" }, `${room.people} in the room, ${room.known} known${occupancy}`), list);
  }
}

function startFeed(types, onEvent) {
  const source = new EventSource("/api/events/stream" + (types ? "?types=" + types : ""));
  const state = $("#feed-state");
  source.addEventListener("hello", () => { if (state) state.textContent = "live"; });
  source.onerror = () => { if (state) state.textContent = "reconnecting…"; };
  for (const type of ["recognition", "presence", "occupancy"]) {
    source.addEventListener(type, (message) => {
      window.rollcallFeed.received += 1;
      onEvent(JSON.parse(message.data));
    });
  }
  return source;
}

async function startLive() {
  startCameras();
  const recent = await fetch("/api/events/recent", { credentials: "same-origin" });
  if (recent.ok) (await recent.json()).events.forEach(addToFeed);
  startFeed("recognition,presence", (event) => {
    addToFeed(event);
    if (event.event_type === "presence") refreshBoardSoon();
  });
  refreshBoard();
  setInterval(refreshBoard, 5000);
}

// ------------------------------------------------------------------------------------- charts
function lineChart(container, series, options = {}) {
  const W = 640, H = 220, L = 40, B = 24, T = 8, R = 8;
  const points = series.flatMap((s) => s.points);
  const svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "svgchart");
  if (!points.length) {
    container.replaceChildren(el("p", { class: "muted" }, options.empty || "No data yet."));
    return;
  }
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  const y0 = options.ymin ?? 0, y1 = Math.max(options.ymax ?? 0, ...ys, y0 + 1);
  const sx = (x) => L + (x - x0) / (x1 - x0) * (W - L - R);
  const sy = (y) => H - B - (y - y0) / (y1 - y0) * (H - B - T);
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(svgNS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
  };
  add("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" });
  add("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" });
  add("text", { x: L - 4, y: sy(y1) + 4, "text-anchor": "end", class: "tick" }, (options.yfmt || String)(y1));
  add("text", { x: L - 4, y: sy(y0), "text-anchor": "end", class: "tick" }, (options.yfmt || String)(y0));
  const xfmt = options.xfmt || ((x) => new Date(x).toLocaleTimeString());
  add("text", { x: L, y: H - 6, class: "tick" }, xfmt(x0));
  add("text", { x: W - R, y: H - 6, "text-anchor": "end", class: "tick" }, xfmt(x1));
  series.forEach((s, i) => {
    if (!s.points.length) return;
    const d = s.points.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ");
    add("polyline", { points: d, class: "series s" + (s.cls ?? i), "data-name": s.name });
    if (s.points.length < 40) s.points.forEach((p) => add("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 2.5, class: "dot s" + (s.cls ?? i) }));
  });
  if (options.legend) series.forEach((s, i) => add("text", { x: L + 8 + i * 120, y: T + 12, class: "legend s" + (s.cls ?? i) }, s.name));
  container.replaceChildren(svg);
}

async function startAnalytics() {
  const select = $("#room");
  let points = [];
  const draw = () => {
    const t = points.map((p) => Date.parse(p.t));
    lineChart($("#occupancy-chart"), ["people", "people_avg", "known", "unknown"].map((key, i) => ({
      name: key, cls: i, points: points.map((p, j) => [t[j], p[key]]),
    })), { empty: "No occupancy events yet for this room." });
  };
  const load = async () => {
    if (!select || !select.value) return;
    const response = await fetch("/api/occupancy/" + encodeURIComponent(select.value), { credentials: "same-origin" });
    points = response.ok ? (await response.json()).points : [];
    draw();
  };
  if (select) select.addEventListener("change", load);
  await load();
  let pending = false;
  startFeed("occupancy", (event) => {
    if (!select || event.room_id !== select.value) return;
    points.push({ t: event.frame_time, people: event.people, people_avg: event.people_avg, known: event.known, unknown: event.unknown });
    if (points.length > 3600) points.shift();
    if (!pending) { pending = true; setTimeout(() => { pending = false; draw(); }, 1000); }
  });
  const response = await fetch("/api/analytics/attendance", { credentials: "same-origin" });
  if (!response.ok) return;
  const data = await response.json();
  const byCourse = {};
  for (const s of data.sessions) if (s.rate !== null) (byCourse[s.course_id] ||= []).push([Date.parse(s.starts_at), s.rate * 100]);
  const day = (x) => new Date(x).toISOString().slice(0, 10);
  const pct = (y) => Math.round(y) + " %";
  lineChart($("#session-chart"), Object.entries(byCourse).map(([name, pts]) => ({ name, points: pts })),
            { ymax: 100, xfmt: day, yfmt: pct, legend: true, empty: "No sessions held yet." });
  lineChart($("#course-chart"), Object.entries(data.courses).map(([name, weeks]) => ({
    name, points: weeks.filter((w) => w.rate !== null).map((w) => [Date.parse(w.week), w.rate * 100]),
  })), { ymax: 100, xfmt: day, yfmt: pct, legend: true, empty: "No sessions held yet." });
}

// ------------------------------------------------------------------------------------- enrolment
function startPeople() {
  const zipForm = $("#zip-import");
  zipForm.addEventListener("submit", (event) => { event.preventDefault(); importZip(zipForm); });
  const form = $("#enrol");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const report = $("#enrol-report");
    report.textContent = "Enrolling…";
    const response = await fetch(form.action, { method: "POST", body: new FormData(form), credentials: "same-origin",
                                                headers: { "X-CSRF-Token": csrf() } });
    const data = await response.json();
    report.replaceChildren();
    if (data.error) { report.append(el("p", { class: "error", role: "alert" }, data.error)); return; }
    report.append(el("p", { class: "summary" }, data.summary));
    const list = el("ul");
    for (const a of data.accepted) list.append(el("li", { class: "ok" }, `${a.photo}: accepted (quality ${a.quality})${a.renewed ? ", renewed" : ""}`));
    for (const r of data.rejected) list.append(el("li", { class: "error", "data-code": r.code }, `${r.photo}: ${r.reason}`));
    report.append(list);
  });
}

// Bulk enrolment: the answer is JSON lines (start, photo, person, end); each is shown as it arrives.
function zipResult(body, folder, person, photo, ok, text, code) {
  const row = el("tr", { class: ok ? "ok" : "error", "data-photo": folder ? `${folder}/${photo}` : photo, ...(code ? { "data-code": code } : {}) });
  for (const cell of [folder || "", person || "", photo, text]) row.append(el("td", {}, cell));
  body.append(row);
}

function showZipLine(form, line) {
  const body = $("#zip-results tbody", form), bar = $("#zip-progress progress", form), count = $("#zip-progress .count", form);
  if (line.event === "start") {
    bar.max = Math.max(line.photos, 1); count.textContent = `0 of ${line.photos} photos`;
    for (const r of line.refused) zipResult(body, r.folder, "", r.photo, false, r.reason, r.code);
  } else if (line.event === "photo") {
    bar.value = line.done; count.textContent = `${line.done} of ${line.total} photos (${line.folder})`;
  } else if (line.event === "person") {
    for (const a of line.accepted) zipResult(body, line.folder, line.person_id, a.photo, true, `accepted (quality ${a.quality})${a.renewed ? ", renewed" : ""}`);
    for (const r of line.rejected) zipResult(body, line.folder, line.person_id, r.photo, false, r.reason, r.code);
  } else if (line.event === "end" || line.event === "error") {
    $("#zip-summary", form).textContent = line.summary || line.error;
    $("#zip-summary", form).className = line.event === "end" ? "summary" : "error";
  }
}

async function importZip(form) {
  $("#zip-results tbody", form).replaceChildren();
  $("#zip-results", form).hidden = false; $("#zip-progress", form).hidden = false;
  $("#zip-summary", form).textContent = "Uploading…"; $("#zip-summary", form).className = "";
  const response = await fetch(form.action, { method: "POST", body: new FormData(form), credentials: "same-origin",
                                              headers: { "X-CSRF-Token": csrf() } });
  if (!response.ok) {
    const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
    $("#zip-summary", form).textContent = data.error; $("#zip-summary", form).className = "error";
    $("#zip-progress", form).hidden = true;
    return;
  }
  $("#zip-summary", form).textContent = "Enrolling…";
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    pending += value;
    const lines = pending.split("\n");
    pending = lines.pop();
    for (const text of lines) if (text.trim()) showZipLine(form, JSON.parse(text));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const pageName = document.body.dataset.page;
  if (pageName === "live") startLive();
  else if (pageName === "analytics") startAnalytics();
  else if (pageName === "people") startPeople();
});
