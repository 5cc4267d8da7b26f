// Live detection demo: camera -> JPEG frames -> /api/frame -> detections drawn over the video.
//
// What is shown: by default the frame that was analysed, drawn on a canvas over the live video
// together with its boxes, so boxes sit on the faces (the picture is as late as the answer). With
// "Live video" ticked the camera shows through and the boxes of the last answer trail moving faces
// by the end-to-end latency.
//
// Latest frame, never a queue: at most `maxInFlight` frames wait for an answer; a camera frame that
// arrives while they all wait becomes "the waiting frame", replacing (dropping) the previous one, and
// is sent as soon as an answer frees a slot. So latency stays bounded by about one server round trip
// plus one frame however slow the server is, and the overlay shows the newest answer only.
//
// State for automation (documented in docs/streaming.md and docs/demo.md): window.demoState, and a
// "demo:result" event on window for every answer drawn, detail {seq, latencyMs, stages, detections}
// (stages: waitMs, encodeMs, requestMs, handlerMs).
// An ES module (no build step): index.html loads it with type="module"; view.js draws and words.
import {
  INSECURE_PAGE_MESSAGE, appDownMessage, cameraMessage, drawDetections, errorMessage,
} from "./view.js";

const SEND_MAX_SIDE = 640; // frames are sent at most this wide/high; boxes are scaled back
const JPEG_QUALITY = 0.8;
const RETRY_MS = 1000; // while the server fails, at most one frame per second
const MODELS_REFRESH_MS = 3000; // while a version is loading, its readiness is asked again
const FPS_WINDOW_MS = 2000;
const LATENCY_WINDOW = 100; // p50 over the last this many answers

const state = {
  framesSent: 0,
  framesProcessed: 0,
  framesDropped: 0,
  inFlightMax: 0,
  fps: 0,
  latencyP50Ms: null,
  model: null,
  version: null,
  smallFaces: false, // the "Small faces" box: sent with every frame as small_faces=true|false
  lastDetections: [], // [{label, score, box: [x1, y1, x2, y2]}] in video pixels
  error: null, // null or a readable message
};
window.demoState = state;

const $ = (id) => document.getElementById(id);
const video = $("video");
const overlay = $("overlay");
const ctx = overlay.getContext("2d");
const still = $("still"); // the analysed frame whose answer is drawn, in the default view
const stillCtx = still.getContext("2d");
const grab = document.createElement("canvas"); // the frame being encoded, at send size
const grabCtx = grab.getContext("2d");

const token = new URLSearchParams(location.hash.slice(1)).get("token");
const clientId = self.crypto && crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2);
let maxInFlight = 2; // from /api/config, lowered by the "Frames in flight" field
let defaultModel = "face_detector";
let inFlight = 0;
let waiting = null; // capture time (performance.now()) of the waiting frame, or null
let retryAt = 0; // no frame is sent before this time (after a failure)
let modelsRefresh = null; // timer of the next readiness check while a version loads
let seq = 0;
let shownSeq = 0; // the frame whose answer the overlay shows; older answers are not drawn
let shown = []; // the answer drawn: detections with landmarks, in video pixels, before the threshold
let selected = { model: null, version: null, smallFaces: false }; // what the panel asks for; demoState
// says what answered (a new object on every change: answers to an earlier choice are not drawn)
const latencies = [];
const processedAt = [];
const problems = { camera: null, server: null };
let hadServerProblem = false;

function headers(extra) {
  const out = { "X-Demo-Client": clientId, ...extra };
  if (token) out.Authorization = `Bearer ${token}`;
  return out;
}

function setProblem(kind, message) {
  problems[kind] = message;
  state.error = problems.camera || problems.server || null;
  const box = $("message");
  box.classList.remove("recovered");
  if (state.error) {
    box.textContent = state.error;
    box.hidden = false;
  } else if (kind === "server" && hadServerProblem) {
    box.textContent = "Connected again: detections are back.";
    box.classList.add("recovered");
    setTimeout(() => { if (!state.error) box.hidden = true; }, 3000);
  } else {
    box.hidden = true;
  }
}

// --- server side: config, models, frames ----------------------------------------------------------

async function getJson(path) {
  const response = await fetch(path, { headers: headers({}) });
  const body = await response.json().catch(() => null);
  return { response, body };
}

async function loadConfig() {
  try {
    const { response, body } = await getJson("/api/config");
    if (!response.ok) throw new Error(explain(response.status, body));
    maxInFlight = body.maxInFlight;
    defaultModel = body.defaultModel;
    selected = { ...selected, model: defaultModel, version: null }; // default version until the list is in
    state.model = defaultModel;
    $("inflight").max = String(maxInFlight);
    $("inflight").value = String(maxInFlight);
    return true;
  } catch (err) {
    setProblem("server", err instanceof TypeError ? appDown() : err.message);
    return false;
  }
}

async function loadModels() {
  let answer;
  try {
    answer = await getJson("/api/models");
  } catch (err) {
    setProblem("server", appDown());
    return false;
  }
  if (!answer.response.ok) {
    setProblem("server", explain(answer.response.status, answer.body));
    return false;
  }
  fillModels(answer.body.models);
  if (problems.server && !state.framesSent) setProblem("server", null); // no frame says otherwise
  // A version marked "(not ready)" (workers still loading, e.g. after TorchServe came back) is
  // asked again until it is ready, so the selector does not keep saying so once it answers.
  clearTimeout(modelsRefresh);
  const loading = answer.body.models.some((m) => m.versions.some((v) => !v.ready));
  modelsRefresh = loading ? setTimeout(loadModels, MODELS_REFRESH_MS) : null;
  return true;
}

function fillModels(models) {
  const select = $("model");
  const current = select.value;
  select.textContent = "";
  for (const model of models) {
    for (const v of model.versions) {
      const option = document.createElement("option");
      option.value = `${model.name}\t${v.version}`;
      option.textContent = `${model.name} ${v.version}` + (v.version === model.default ? " (default)" : "")
        + (v.ready ? "" : " (not ready)");
      option.dataset.default = String(v.version === model.default);
      select.append(option);
    }
  }
  if (!select.options.length) {
    setProblem("server", "TorchServe has no model loaded: see docs/versions.md to load one.");
    return;
  }
  const fallback = [...select.options].find((o) => o.value.startsWith(`${defaultModel}\t`)
    && o.dataset.default === "true") || select.options[0];
  select.value = [...select.options].some((o) => o.value === current) ? current : fallback.value;
  if (select.value !== current) choose();
}

function choose() {
  const [model, version] = $("model").value.split("\t");
  selected = { ...selected, model, version: version || null }; // new object: old answers are not drawn
  state.model = model;
  state.version = selected.version;
  shown = [];
  draw();
}

function chooseSmallFaces() {
  selected = { ...selected, smallFaces: $("small-faces").checked }; // a new object, as in choose()
  state.smallFaces = selected.smallFaces;
  shown = []; // boxes found with the other setting would mislead until the first new answer
  draw();
}

const appDown = () => appDownMessage(location.host);
const chosen = () => `${selected.model || defaultModel}${selected.version ? " " + selected.version : ""}`;
const explain = (status, body) => errorMessage(status, body, chosen());

async function send(capturedAt) {
  const frame = ++seq;
  const asked = selected;
  let picture = null; // Promise of an ImageBitmap of the frame sent
  inFlight += 1;
  state.inFlightMax = Math.max(state.inFlightMax, inFlight);
  state.framesSent += 1;
  // Where the end-to-end latency goes, per frame (the "demo:result" event carries it).
  const stages = { waitMs: performance.now() - capturedAt, encodeMs: 0, requestMs: 0, handlerMs: 0 };
  try {
    const started = performance.now();
    const scale = Math.min(1, SEND_MAX_SIDE / Math.max(video.videoWidth, video.videoHeight));
    grab.width = Math.round(video.videoWidth * scale);
    grab.height = Math.round(video.videoHeight * scale);
    grabCtx.drawImage(video, 0, 0, grab.width, grab.height);
    // Both copy the pixels when called, before the next frame can reuse `grab`.
    picture = createImageBitmap(grab);
    const blob = await new Promise((resolve) => grab.toBlob(resolve, "image/jpeg", JPEG_QUALITY));
    const encoded = performance.now();
    stages.encodeMs = encoded - started;
    const query = new URLSearchParams({
      model: asked.model || defaultModel, threshold: threshold(), small_faces: String(asked.smallFaces),
    });
    if (asked.version) query.set("version", asked.version);
    let response;
    try {
      response = await fetch(`/api/frame?${query}`, {
        method: "POST",
        body: blob,
        headers: headers({ "Content-Type": "image/jpeg", "X-Frame-Seq": String(frame) }),
      });
    } catch (err) {
      fail(appDown());
      return;
    }
    const body = await response.json().catch(() => null);
    stages.requestMs = performance.now() - encoded; // the app, TorchServe and both hops
    if (response.ok && body) {
      state.framesProcessed += 1;
      stages.handlerMs = Object.values(body.timings_ms || {}).reduce((a, b) => a + b, 0);
      answered(frame, capturedAt, body, scale, asked, await picture, stages);
      picture = null;
    } else if (response.status === 429) {
      state.framesDropped += 1; // refused by the app's own bound: another tab of this page?
      retryAt = performance.now() + 100;
    } else {
      fail(explain(response.status, body));
    }
  } finally {
    if (picture) picture.then((bitmap) => bitmap.close(), () => {});
    inFlight -= 1;
    pump();
  }
}

function fail(message) {
  retryAt = performance.now() + RETRY_MS;
  hadServerProblem = true;
  shown = []; // boxes of an old frame over a moving video would mislead
  still.hidden = true; // and so would an old frame: show the live camera
  draw();
  setProblem("server", message);
}

function answered(frame, capturedAt, body, scale, asked, bitmap, stages) {
  if (problems.server) {
    setProblem("server", null);
    loadModels(); // versions may have changed while the server was away
  }
  const current = frame > shownSeq && asked === selected; // not late, not for an earlier choice
  if (!current) {
    bitmap.close();
    return;
  }
  shownSeq = frame;
  shown = body.detections.map((d) => ({
    label: d.label,
    score: d.score,
    box: d.box.map((v) => v / scale),
    landmarks: d.landmarks ? d.landmarks.map(([x, y]) => [x / scale, y / scale]) : null,
  }));
  state.model = body.model;
  state.version = body.version;
  still.width = overlay.width;
  still.height = overlay.height;
  stillCtx.drawImage(bitmap, 0, 0, still.width, still.height);
  bitmap.close();
  still.hidden = $("live").checked;
  draw(); // the same task as the picture: a screen never shows one without the other
  const now = performance.now();
  latencies.push(now - capturedAt);
  if (latencies.length > LATENCY_WINDOW) latencies.shift();
  processedAt.push(now);
  updateRates(now);
  window.dispatchEvent(new CustomEvent("demo:result", {
    detail: { seq: frame, latencyMs: now - capturedAt, stages, detections: state.lastDetections },
  }));
}

function updateRates(now) {
  while (processedAt.length && processedAt[0] < now - FPS_WINDOW_MS) processedAt.shift();
  const span = processedAt.length > 1 ? now - processedAt[0] : FPS_WINDOW_MS;
  state.fps = processedAt.length > 1 ? Math.round(((processedAt.length - 1) / span) * 10000) / 10 : 0;
  const sorted = [...latencies].sort((a, b) => a - b);
  state.latencyP50Ms = sorted.length ? Math.round(sorted[Math.floor((sorted.length - 1) / 2)] * 10) / 10 : null;
}

// --- camera frames: latest frame only -----------------------------------------------------------

const canSend = () => inFlight < Math.min(maxInFlight, Number($("inflight").value) || 1)
  && performance.now() >= retryAt;

function onCameraFrame(now) {
  if (!video.videoWidth) return;
  if (canSend()) {
    if (waiting !== null) state.framesDropped += 1; // a newer frame is here: send that one instead
    waiting = null;
    send(now);
  } else {
    if (waiting !== null) state.framesDropped += 1;
    waiting = now; // the video element keeps showing this frame until a newer one replaces it
  }
}

function pump() {
  if (waiting !== null && canSend()) {
    const capturedAt = waiting;
    waiting = null;
    send(capturedAt); // drawImage(video) grabs the frame shown now: the waiting one
  }
}

function watchFrames() {
  if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
    const next = (now) => { onCameraFrame(now); video.requestVideoFrameCallback(next); };
    video.requestVideoFrameCallback(next);
  } else { // no per-frame callback: sample at display rate, one frame per 1/30 s at most
    let last = 0;
    const next = (now) => {
      if (now - last >= 33) { last = now; onCameraFrame(now); }
      requestAnimationFrame(next);
    };
    requestAnimationFrame(next);
  }
}

async function startCamera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setProblem("camera", INSECURE_PAGE_MESSAGE);
    $("placeholder").textContent = "No camera";
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } },
      audio: false,
    });
  } catch (err) {
    setProblem("camera", cameraMessage(err));
    $("placeholder").textContent = "No camera";
    return;
  }
  const track = stream.getVideoTracks()[0];
  track.addEventListener("ended", () => setProblem("camera", "The camera stopped (unplugged?): reload the page."));
  video.srcObject = stream;
  video.addEventListener("loadedmetadata", () => {
    overlay.width = video.videoWidth; // canvas pixels = video pixels: boxes need no scaling
    overlay.height = video.videoHeight;
    $("placeholder").hidden = true;
    draw();
  });
  await video.play().catch(() => {});
  watchFrames();
}

// --- drawing and the panel ---------------------------------------------------------------------

const threshold = () => Number($("threshold").value).toFixed(2);

function draw() {
  const min = Number(threshold());
  const visible = shown.filter((d) => d.score >= min);
  state.lastDetections = visible.map((d) => ({ label: d.label, score: d.score, box: d.box }));
  drawDetections(ctx, overlay.width, overlay.height, visible);
}

function render() {
  updateRates(performance.now());
  $("fps").textContent = state.fps.toFixed(1);
  $("latency").textContent = state.latencyP50Ms === null ? "\u2013" : state.latencyP50Ms.toFixed(0);
  $("dropped").textContent = String(state.framesDropped);
  const seen = state.framesSent + state.framesDropped;
  $("dropped-share").textContent = seen ? `(${((100 * state.framesDropped) / seen).toFixed(1)} %)` : "";
  $("sent").textContent = String(state.framesSent);
  $("inflight-max").textContent = String(state.inFlightMax);
  $("served").textContent = state.model ? `${state.model} ${state.version || ""}` : "\u2013";
}

$("model").addEventListener("change", choose);
$("small-faces").addEventListener("change", chooseSmallFaces);
$("live").addEventListener("change", () => { still.hidden = $("live").checked || !shown.length; });
$("threshold").addEventListener("input", () => {
  $("threshold-value").textContent = threshold();
  draw();
});

async function main() {
  setInterval(render, 250);
  chooseSmallFaces(); // a reload may have kept the box ticked
  const configured = await loadConfig();
  startCamera();
  if (!configured) {
    while (!(await loadConfig())) await new Promise((r) => setTimeout(r, 3000));
  }
  while (!(await loadModels())) await new Promise((r) => setTimeout(r, 3000));
}

main();
