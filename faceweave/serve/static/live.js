// faceweave live page: the camera goes to the server over WebRTC and comes back swapped.
// Signalling is one REST call (POST /v1/live/offer, the API key in a header); the server reports fps and latency
// over a data channel the page opens ("stats"). Leaving the page closes the peer connection, which ends the session.
"use strict";

const $ = (id) => document.getElementById(id);
let pc = null;
let camera = null;
let sessionId = null;

function authHeaders() {
  const key = $("api-key").value.trim();
  if (key) localStorage.setItem("faceweave-key", key);
  return key ? { Authorization: "Bearer " + key } : {};
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return body.error.message + (body.error.hint ? " — " + body.error.hint : "");
  } catch (_) {
    return "HTTP " + response.status;
  }
}

async function listCameras() {
  try {
    const devices = await navigator.mediaDevices.enumerateDevices();
    const select = $("camera");
    for (const d of devices.filter((x) => x.kind === "videoinput")) {
      const option = document.createElement("option");
      option.value = d.deviceId;
      option.textContent = d.label || "camera " + (select.options.length);
      select.appendChild(option);
    }
  } catch (_) { /* no permission yet: the default camera is used */ }
}

function iceGathered(peer) {
  // the server takes one offer with every candidate in it (no trickle ICE)
  if (peer.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const check = () => {
      if (peer.iceGatheringState === "complete") {
        peer.removeEventListener("icegatheringstatechange", check);
        resolve();
      }
    };
    peer.addEventListener("icegatheringstatechange", check);
    setTimeout(resolve, 3000);
  });
}

function showStats(s) {
  $("fps").textContent = s.fps_out.toFixed(1);
  $("latency").textContent = s.latency_p50_ms.toFixed(0);
  $("latency95").textContent = s.latency_p95_ms.toFixed(0);
  $("dropped").textContent = String(s.dropped);
}

async function start(event) {
  event.preventDefault();
  showError("");
  if (!$("consent").checked) { showError("Please confirm consent first."); return; }
  const source = $("source").files[0];
  if (!source) { showError("Pick a source photo."); return; }
  const deviceId = $("camera").value;
  try {
    camera = await navigator.mediaDevices.getUserMedia({
      video: deviceId ? { deviceId: { exact: deviceId } } : { width: 640, height: 480 }, audio: false,
    });
  } catch (err) {
    showError("No camera: " + (err.name === "NotAllowedError" ? "permission was denied — allow the camera for this page"
                                                              : err.message));
    return;
  }
  $("local").srcObject = camera;
  pc = new RTCPeerConnection({ iceServers: [] });
  camera.getVideoTracks().forEach((t) => pc.addTrack(t, camera));
  const channel = pc.createDataChannel("stats");
  channel.onmessage = (m) => showStats(JSON.parse(m.data));
  pc.ontrack = (e) => { $("remote").srcObject = e.streams[0] || new MediaStream([e.track]); };
  pc.onconnectionstatechange = () => {
    $("state").textContent = pc ? pc.connectionState : "closed";
    if (pc && (pc.connectionState === "failed" || pc.connectionState === "closed")) stop();
  };
  await pc.setLocalDescription(await pc.createOffer());
  await iceGathered(pc);
  const form = new FormData();
  form.append("source", source);
  form.append("sdp", pc.localDescription.sdp);
  form.append("type", pc.localDescription.type);
  form.append("consent", "true");
  if ($("label").checked) form.append("settings", JSON.stringify({ provenance_label: true }));
  $("start").disabled = true;
  const response = await fetch("/v1/live/offer", { method: "POST", headers: authHeaders(), body: form });
  if (!response.ok) {
    showError(await errorText(response));
    stop();
    return;
  }
  const answer = await response.json();
  sessionId = answer.id;
  await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
  $("session").hidden = false;
  $("stop").disabled = false;
}

function stop() {
  if (pc) { pc.close(); pc = null; }
  if (camera) { camera.getTracks().forEach((t) => t.stop()); camera = null; }
  if (sessionId) {
    fetch(`/v1/live/sessions/${sessionId}`, { method: "DELETE", headers: authHeaders() }).catch(() => {});
    sessionId = null;
  }
  $("state").textContent = "stopped";
  $("start").disabled = false;
  $("stop").disabled = true;
}

$("api-key").value = localStorage.getItem("faceweave-key") || "";
$("live-form").addEventListener("submit", (e) => { start(e).catch((err) => { showError(err.message); stop(); }); });
$("stop").addEventListener("click", stop);
window.addEventListener("pagehide", () => { if (pc) pc.close(); });
listCameras();
