// What the demo page shows a person: the overlay drawing and the messages for what went wrong.
// Pure functions of their arguments; demo.js owns the state and calls them.

export const BOX_COLOR = "#00ff00";
export const LABEL_COLOR = "#ffd400"; // label background: apart from the box colour, so outlines stay outlines
export const LANDMARK_COLOR = "#00e5ff";

// Boxes, labels with scores, and landmarks, in the canvas's own pixels (= video pixels).
export function drawDetections(ctx, width, height, detections) {
  ctx.clearRect(0, 0, width, height);
  ctx.lineWidth = 3;
  ctx.font = "14px system-ui, sans-serif";
  ctx.textBaseline = "top";
  for (const d of detections) {
    const [x1, y1, x2, y2] = d.box;
    ctx.strokeStyle = BOX_COLOR;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const text = `${d.label} ${d.score.toFixed(2)}`;
    const labelWidth = ctx.measureText(text).width + 8;
    const above = y1 >= 20; // room above the box; otherwise the label goes inside its top edge
    const top = above ? y1 - 20 : y1;
    ctx.fillStyle = LABEL_COLOR;
    ctx.fillRect(x1 - 1.5, top, labelWidth, above ? 18.5 : 20); // above: stops at the outline
    ctx.fillStyle = "#000";
    ctx.fillText(text, x1 + 3, top + 3);
    ctx.fillStyle = LANDMARK_COLOR;
    for (const [x, y] of d.landmarks || []) {
      ctx.beginPath();
      ctx.arc(x, y, 3, 0, 2 * Math.PI);
      ctx.fill();
    }
  }
}

export function appDownMessage(host) {
  return `The demo app at ${host} does not answer: is "make demo" still running? Retrying.`;
}

// The app's error bodies are {code, type, message} (scripts/demo/backend.py lists the types);
// `what` names the model and version asked for.
export function errorMessage(status, body, what) {
  const type = body && body.type;
  const message = (body && body.message) || `HTTP ${status}`;
  switch (type) {
    case "server_unavailable":
      // The app's message names the address and says to run `make serve`: not repeated here.
      return `TorchServe is not answering, so no detections; the page retries every second and `
        + `resumes by itself. ${message}`;
    case "model_not_ready":
      return `Model ${what} is not ready yet (loading, or no worker free). Waiting for it. (${message})`;
    case "token_error":
      return `The demo app could not renew its TorchServe token: ${message}`;
    case "unauthorized":
      return "This demo needs its access token: open the URL the app printed at start (ending in #token=...).";
    default:
      if (status === 404) return `Model ${what} is not served by TorchServe: choose another one. (${message})`;
      return `The frame was refused (${status} ${type || ""}): ${message}`;
  }
}

// getUserMedia's errors, by name, as what to do about them.
export function cameraMessage(err) {
  switch (err && err.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Camera access was denied: allow the camera for this page (the camera icon in the "
        + "address bar, or the site settings), then reload.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No camera is available: connect a camera (or check that the system sees one), then reload.";
    case "NotReadableError":
      return "The camera could not be started: another program may be using it. Close it, then reload.";
    default:
      return `The camera could not be opened: ${err && err.message ? err.message : err}`;
  }
}

export const INSECURE_PAGE_MESSAGE = "This browser allows the camera only on secure pages: open the demo at "
  + "http://127.0.0.1 or http://localhost on this machine, or serve it over HTTPS.";
