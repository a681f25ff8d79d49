// Rollcall dashboard, enrolment from a webcam or a video file: the camera's live preview, a few seconds
// recorded in the browser (MediaRecorder, WebM) and posted like a video file; the server picks the frames.
// Plain JavaScript, no libraries.
"use strict";

(() => {
  const $ = (selector) => document.querySelector(selector);
  const token = () => document.querySelector('meta[name="csrf-token"]').content;
  const form = $("#video-enrol");
  let stream = null;

  function say(text, kind) {
    $("#video-summary").textContent = text;
    $("#video-summary").className = kind || "";
  }

  function row(frame, time, ok, text, code) {
    const tr = document.createElement("tr");
    tr.className = ok ? "ok" : "error";
    tr.dataset.frame = frame;
    if (code) tr.dataset.code = code;
    for (const cell of [String(frame), `${Number(time).toFixed(2)} s`, text]) {
      const td = document.createElement("td");
      td.textContent = cell;
      tr.append(td);
    }
    return tr;
  }

  function show(data) {
    const body = $("#video-results tbody");
    body.replaceChildren();
    if (data.error) { say(data.error, "error"); return; }
    say(data.summary, data.accepted.length ? "summary" : "error");
    $("#video-results").hidden = false;
    for (const a of data.accepted) body.append(row(a.frame, a.time_s, true, `enrolled (quality ${a.quality})${a.renewed ? ", renewed" : ""}`));
    for (const r of data.rejected) body.append(row(r.frame, r.time_s, false, r.reason, r.code));
  }

  async function send(video, filename) {
    const body = new FormData(form);
    body.delete("video");
    body.append("video", video, filename);
    say("Picking the sharpest, most varied frames and enrolling them…");
    const response = await fetch(form.action, { method: "POST", body, credentials: "same-origin",
                                                headers: { "X-CSRF-Token": token() } });
    const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
    show(data);
  }

  async function startCamera() {
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
    } catch (error) {
      say(`The camera cannot be opened (${error.name}): allow this page to use it, or upload a video file.`, "error");
      return;
    }
    const preview = $("#preview");
    preview.addEventListener("playing", () => {
      preview.dataset.live = "yes";  // frames are arriving: recording may start
      $("#capture").disabled = false;
      say("Camera on: ask the person to face it and turn their head a little while recording.");
    }, { once: true });
    preview.srcObject = stream;
  }

  function record(seconds) {
    return new Promise((resolve, reject) => {
      const type = ["video/webm;codecs=vp8", "video/webm"].find((t) => MediaRecorder.isTypeSupported(t)) || "";
      const recorder = new MediaRecorder(stream, type ? { mimeType: type } : {});
      const chunks = [], bar = $("#capture-progress progress"), count = $("#capture-progress .count");
      const started = performance.now();
      $("#capture-progress").hidden = false;
      bar.max = seconds;
      const timer = setInterval(() => {
        const elapsed = Math.min(seconds, (performance.now() - started) / 1000);
        bar.value = elapsed;
        count.textContent = `recording ${elapsed.toFixed(1)} of ${seconds} s`;
      }, 100);
      recorder.ondataavailable = (event) => { if (event.data.size) chunks.push(event.data); };
      recorder.onerror = (event) => { clearInterval(timer); reject(event.error); };
      recorder.onstop = () => {
        clearInterval(timer);
        bar.value = seconds;
        count.textContent = `recorded ${seconds} s`;
        resolve(new Blob(chunks, { type: "video/webm" }));
      };
      recorder.start(500);
      setTimeout(() => recorder.stop(), seconds * 1000);
    });
  }

  async function capture() {
    if (!form.reportValidity()) return;
    $("#capture").disabled = true;
    try {
      await send(await record(Number($("#capture").dataset.seconds)), "webcam.webm");
    } catch (error) {
      say(`Recording failed (${error && error.name}): upload a video file instead.`, "error");
    } finally {
      $("#capture").disabled = false;
    }
  }

  $("#camera-start").addEventListener("click", startCamera);
  $("#capture").addEventListener("click", capture);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const file = form.querySelector("input[name=video]").files[0];
    if (!file) { say("Choose a video file first (or record from the webcam).", "error"); return; }
    send(file, file.name);
  });
})();
