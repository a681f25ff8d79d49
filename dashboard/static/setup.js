// Rollcall dashboard, campus set-up: camera connection tests and snapshots, and the entry-zone editor.
// Plain JavaScript, no libraries: points are kept in the camera picture's own pixels (the image's natural
// size), whatever size the picture is shown at.
"use strict";

(() => {
  const token = () => document.querySelector('meta[name="csrf-token"]').content;
  // an answer's JSON, or the one-line reason of an error page (pages answer errors in HTML)
  const answer = async (response) => {
    if ((response.headers.get("content-type") || "").includes("json")) return response.json();
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    return { error: (page.querySelector("[role=alert]") || page.body).textContent.trim() };
  };
  const post = (url, payload) => fetch(url, {
    method: "POST", credentials: "same-origin",
    headers: { "X-CSRF-Token": token(), "Content-Type": "application/json" },
    body: JSON.stringify(payload || {}),
  });

  // ----------------------------------------------------------------------------- cameras
  function startCameras() {
    for (const button of document.querySelectorAll("button.probe")) {
      button.addEventListener("click", async () => {
        const cell = button.closest("td"), out = cell.querySelector(".probe-result");
        out.className = "probe-result muted";
        out.textContent = "testing…";
        try {
          const response = await post(`/setup/cameras/${encodeURIComponent(button.dataset.camera)}/test`);
          const data = await answer(response);
          out.textContent = data.result || data.error;
          out.className = "probe-result " + (data.ok ? "ok" : "error");
        } catch (error) {
          out.textContent = `failed: ${error}`;
          out.className = "probe-result error";
        }
      });
    }
    for (const button of document.querySelectorAll("button.snap")) {
      button.addEventListener("click", () => {
        const cell = button.closest("td"), figure = cell.querySelector("figure.snapshot");
        const img = figure.querySelector("img"), out = cell.querySelector(".probe-result");
        out.textContent = "taking a snapshot…";
        out.className = "probe-result muted";
        img.onload = () => { figure.hidden = false; out.textContent = `${img.naturalWidth}x${img.naturalHeight}`; };
        img.onerror = () => { figure.hidden = true; out.textContent = "no picture (try Test connection for the reason)"; out.className = "probe-result error"; };
        img.src = `/setup/cameras/${encodeURIComponent(button.dataset.camera)}/snapshot.jpg?at=${Date.now()}`;
      });
    }
  }

  // ----------------------------------------------------------------------------- entry zone
  function startZone() {
    const editor = document.getElementById("zone-editor");
    const img = document.getElementById("zone-snapshot"), svg = document.getElementById("zone-drawing");
    const status = document.getElementById("zone-status");
    const saved = svg.querySelector("polygon.saved"), drawn = svg.querySelector("polygon.drawn");
    let points = [];
    const text = (pts) => pts.map(([x, y]) => `${x},${y}`).join(" ");
    const show = () => {
      drawn.setAttribute("points", text(points));
      editor.dataset.points = JSON.stringify(points);
    };
    const ready = () => {
      svg.setAttribute("viewBox", `0 0 ${img.naturalWidth} ${img.naturalHeight}`);
      svg.setAttribute("preserveAspectRatio", "none");
      saved.setAttribute("points", text(JSON.parse(editor.dataset.zone || "[]")));
      editor.dataset.ready = "yes";
    };
    if (img.complete && img.naturalWidth) ready(); else img.addEventListener("load", ready);
    img.addEventListener("error", () => {
      status.textContent = "No snapshot from the room camera: check it on the Cameras page.";
      status.className = "error";
    });
    svg.addEventListener("click", (event) => {
      if (!img.naturalWidth) return;
      const box = svg.getBoundingClientRect();
      const x = (event.clientX - box.left) * img.naturalWidth / box.width;
      const y = (event.clientY - box.top) * img.naturalHeight / box.height;
      points.push([Math.round(x * 10) / 10, Math.round(y * 10) / 10]);
      show();
    });
    document.getElementById("zone-undo").addEventListener("click", () => { points.pop(); show(); });
    document.getElementById("zone-clear").addEventListener("click", () => { points = []; show(); });
    document.getElementById("zone-save").addEventListener("click", async () => {
      const response = await post(`/setup/doors/${encodeURIComponent(editor.dataset.door)}/zone`, { zone: points });
      const data = await answer(response);
      status.textContent = data.message || data.error;
      status.className = response.ok ? "ok" : "error";
      if (response.ok) {
        editor.dataset.zone = JSON.stringify(data.zone);
        saved.setAttribute("points", text(data.zone));
        points = [];
        show();
      }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const page = document.body.dataset.page;
    if (page === "setup-cameras") startCameras();
    else if (page === "setup-zone") startZone();
  });
})();
