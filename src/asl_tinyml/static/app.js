// asl-tinyml live page: webcam frames -> WebSocket /ws -> top-3 + spelled text; photo upload -> POST /predict.
"use strict";

const FPS = 12;            // frames sent per second (the server accepts up to its max_fps)
const FRAME_WIDTH = 320;   // frames are downscaled to this width (the server finds the hand and crops to it)
const JPEG_QUALITY = 0.8;
const REPLY_TIMEOUT_MS = 3000;

const $ = (id) => document.getElementById(id);
const video = $("video"), canvas = $("canvas"), ctx = canvas.getContext("2d");
let ws = null, running = true, inFlight = false, sentAt = 0, reconnectDelay = 500;
let replies = [], serverMs = 0, motionOn = false;

function setStatus(text, kind) {
  const el = $("status");
  el.textContent = text;
  el.className = "status" + (kind ? " " + kind : "");
}

function showLabel(label) {
  return label === "space" ? "␣ space" : label === "del" ? "⌫ del" : label;
}

function renderTop(list, top) {
  list.replaceChildren(...top.map(({ label, prob }) => {
    const li = document.createElement("li");
    li.className = "pred";
    li.dataset.label = label;
    const name = document.createElement("span");
    name.className = "label";
    name.textContent = showLabel(label);
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.width = (100 * prob).toFixed(1) + "%";
    bar.append(fill);
    const pct = document.createElement("span");
    pct.className = "prob";
    pct.textContent = (100 * prob).toFixed(0) + "%";
    li.append(name, bar, pct);
    return li;
  }));
}

function renderMotion(m) {
  if (!m) return;
  renderTop($("motion-top"), m.top || []);
  const mp = typeof m.mediapipe_ms === "number" ? ` · MediaPipe ${m.mediapipe_ms.toFixed(0)} ms` : "";
  const model = typeof m.ms === "number" ? ` · model ${m.ms.toFixed(2)} ms` : "";
  const seen = m.hand ? (m.hand_source === "hand detector" ? "hand seen (hand detector: no body in view)" : "hand seen")
    : m.note || "no hand";
  $("motion-note").textContent = seen + ` · ${m.frames} frames` + model + mp
    + (m.commit ? ` · typed “${m.commit}”` : "");
}

function setupMotion(info) {
  motionOn = !!info;
  $("motion-card").hidden = !motionOn;
  $("motion-help").hidden = !motionOn;
  if (!motionOn) return;
  const words = info.modes.includes("words");
  $("word-mode-label").hidden = !words;
  $("word-mode").checked = info.mode === "words";
  $("motion-mode").textContent = info.mode === "words" ? "(words)" : "(j, z)";
}

function renderState(msg) {
  if (typeof msg.text === "string") $("text").textContent = msg.text;
  $("hold").style.width = (100 * (msg.progress || 0)).toFixed(0) + "%";
  $("candidate").textContent = msg.candidate ? showLabel(msg.candidate) : "–";
}

// --- WebSocket ----------------------------------------------------------------------------------
function wsUrl() {
  const url = new URL("ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

function connect() {
  ws = new WebSocket(wsUrl());
  ws.onopen = () => { reconnectDelay = 500; inFlight = false; setStatus("connected", "ok"); };
  ws.onclose = () => {
    setStatus(`disconnected; retrying in ${(reconnectDelay / 1000).toFixed(1)} s`, "err");
    setTimeout(connect, reconnectDelay);
    reconnectDelay = Math.min(reconnectDelay * 2, 8000);
  };
  ws.onmessage = (event) => {
    const msg = JSON.parse(event.data);
    if (msg.type === "prediction") {
      inFlight = false;
      const now = performance.now();
      replies.push(now);
      serverMs = msg.ms;
      renderTop($("top"), msg.top);
      $("hand").textContent = msg.hand === false ? "no hand found" : msg.hand ? "hand found" : "";
      renderState(msg);
      renderMotion(msg.motion);
    } else if (msg.type === "motion") {
      renderState(msg);
      renderMotion(msg.motion);
    } else if (msg.type === "state" || msg.type === "hello") {
      if (msg.type === "hello") setupMotion(msg.motion);
      if (msg.mode) $("motion-mode").textContent = msg.mode === "words" ? "(words)" : "(j, z)";
      renderState(msg);
    } else if (msg.type === "error") {
      inFlight = false;
      setStatus("server: " + msg.error, "err");
    }
  };
}

function sendJson(obj) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
}

// --- camera -------------------------------------------------------------------------------------
function cameraNote(text) {
  const note = $("camera-note");
  note.textContent = text;
  note.hidden = false;
}

async function startCamera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    cameraNote("No camera here: the browser allows cameras only on https:// or localhost pages. You can still upload a photo below.");
    return;
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({
      video: { facingMode: "user", width: { ideal: 640 }, height: { ideal: 480 } }, audio: false,
    });
    video.srcObject = stream;
    $("toggle").disabled = false;
  } catch (err) {
    const why = err && err.name === "NotAllowedError" ? "Camera permission was denied."
      : err && err.name === "NotFoundError" ? "No camera was found." : `The camera could not start (${err && err.name}).`;
    cameraNote(why + " You can still upload a photo below.");
  }
}

function sendFrame() {
  if (!running || !ws || ws.readyState !== WebSocket.OPEN || video.readyState < 2 || !video.videoWidth) return;
  const now = performance.now();
  if (inFlight && now - sentAt < REPLY_TIMEOUT_MS) return;   // one frame in flight at a time
  const scale = Math.min(1, FRAME_WIDTH / video.videoWidth);
  canvas.width = Math.round(video.videoWidth * scale);
  canvas.height = Math.round(video.videoHeight * scale);
  ctx.drawImage(video, 0, 0, canvas.width, canvas.height);
  inFlight = true;
  sentAt = now;
  canvas.toBlob((blob) => {
    if (blob && ws.readyState === WebSocket.OPEN) ws.send(blob); else inFlight = false;
  }, "image/jpeg", JPEG_QUALITY);
}

function updateRate() {
  const now = performance.now();
  replies = replies.filter((t) => now - t < 2000);
  $("rate").textContent = running ? `${(replies.length / 2).toFixed(1)} frames/s · ${serverMs.toFixed(1)} ms` : "paused";
}

// --- upload -------------------------------------------------------------------------------------
async function upload(file) {
  const err = $("upload-error"), preview = $("upload-preview");
  err.hidden = true;
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  const form = new FormData();
  form.append("file", file);
  try {
    const res = await fetch(`predict?topk=3&classes=${$("classes").value}`, { method: "POST", body: form });
    const body = await res.json();
    if (!res.ok) throw new Error(typeof body.detail === "string" ? body.detail : res.statusText);
    renderTop($("upload-top"), body.top);
    if (body.label === "no hand found") { err.textContent = "No hand found in this photo."; err.hidden = false; }
  } catch (e) {
    $("upload-top").replaceChildren();
    err.textContent = "Upload failed: " + e.message;
    err.hidden = false;
  }
}

// --- wiring -------------------------------------------------------------------------------------
$("toggle").onclick = () => {
  running = !running;
  $("toggle").textContent = running ? "Pause" : "Resume";
};
$("mirror").onchange = () => video.classList.toggle("mirror", $("mirror").checked);
video.classList.toggle("mirror", $("mirror").checked);
$("space").onclick = () => sendJson({ type: "space" });
$("backspace").onclick = () => sendJson({ type: "backspace" });
$("clear").onclick = () => sendJson({ type: "clear" });
$("classes").onchange = () => sendJson({ type: "classes", classes: $("classes").value });
$("word-mode").onchange = () => sendJson({ type: "mode", mode: $("word-mode").checked ? "words" : "letters" });
$("copy").onclick = async () => {
  const text = $("text").textContent;
  try {
    await navigator.clipboard.writeText(text);
    setStatus("copied", "ok");
  } catch {
    const range = document.createRange();
    range.selectNodeContents($("text"));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    setStatus("select and copy the text by hand (clipboard not allowed here)", "err");
  }
};
$("upload").onchange = (e) => { if (e.target.files.length) upload(e.target.files[0]); };

connect();
startCamera();
setInterval(sendFrame, 1000 / FPS);
setInterval(updateRate, 500);
