// faceweave web page: submit a job, follow its server-sent events, preview and download the result.
// SSE is read with fetch() (not EventSource) so that the API key travels in a header, never in a URL.
"use strict";

const $ = (id) => document.getElementById(id);
const FINAL = new Set(["succeeded", "failed", "cancelled"]);

function authHeaders() {
  const key = $("api-key").value.trim();
  if (key) sessionStorage.setItem("faceweave-key", key);
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

function render(event) {
  $("job-state").textContent = event.state;
  const total = event.frames_total || 0;
  $("progress").value = total ? event.frames_done / total : (event.state === "succeeded" ? 1 : 0);
  let detail = total ? `${event.frames_done}/${total} frames` : "";
  if (event.fps) detail += ` · ${event.fps.toFixed(1)} fps`;
  if (event.eta_s) detail += ` · ETA ${Math.ceil(event.eta_s)} s`;
  if (event.error) detail = event.error.message;
  $("job-detail").textContent = detail;
}

async function followEvents(jobId) {
  const response = await fetch(`/v1/swaps/${jobId}/events`, { headers: authHeaders() });
  if (!response.ok) throw new Error(await errorText(response));
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let last = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (!data) continue;
      last = JSON.parse(data);
      render(last);
    }
  }
  return last;
}

async function showResult(jobId) {
  const response = await fetch(`/v1/swaps/${jobId}/result`, { headers: authHeaders() });
  if (!response.ok) throw new Error(await errorText(response));
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const box = $("preview-box");
  box.innerHTML = "";
  const el = document.createElement(blob.type.startsWith("video/") ? "video" : "img");
  el.id = "preview";
  el.src = url;
  if (el.tagName === "VIDEO") el.controls = true;
  else el.alt = "swapped result";
  box.appendChild(el);
  const ext = { "image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "video/mp4": ".mp4" }[blob.type] || "";
  const link = $("download");
  link.href = url;
  link.download = `faceweave-${jobId}${ext}`;
  link.hidden = false;
}

async function submit(event) {
  event.preventDefault();
  showError("");
  $("download").hidden = true;
  const form = new FormData();
  form.append("sources", $("source").files[0]);
  form.append("target", $("target").files[0]);
  form.append("consent", $("consent").checked ? "true" : "false");
  form.append("settings", JSON.stringify({
    selector: $("selector").value,
    blend: $("blend").value,
    keep_mouth: $("keep-mouth").checked,
    provenance_label: $("label").checked,
  }));
  $("submit").disabled = true;
  try {
    const response = await fetch("/v1/swaps", { method: "POST", body: form, headers: authHeaders() });
    if (!response.ok) throw new Error(await errorText(response));
    const job = await response.json();
    $("job").hidden = false;
    $("job-id").textContent = job.id;
    render({ state: job.state, frames_done: 0, frames_total: null });
    const last = await followEvents(job.id);
    if (last && last.state === "succeeded") await showResult(job.id);
    else if (last && last.error) showError(last.error.message);
  } catch (err) {
    showError(err.message);
  } finally {
    $("submit").disabled = false;
  }
}

$("api-key").value = sessionStorage.getItem("faceweave-key") || "";
$("swap-form").addEventListener("submit", submit);
