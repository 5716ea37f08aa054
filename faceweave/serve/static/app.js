// faceweave web page: choose faces and a target, submit a job, follow its server-sent events, cancel it, show and
// download results, list recent jobs.
// - SSE is read with fetch() (not EventSource) so that the API key travels in a header, never in a URL.
// - The key lives in sessionStorage (this tab only), never localStorage: a key left on disk outlives the session.
// - No inline script, style or handler anywhere: the page works under `default-src 'self'` (+ blob: previews).
"use strict";

const $ = (id) => document.getElementById(id);
const FINAL = new Set(["succeeded", "failed", "cancelled"]);
const MAX_SOURCES = 4;
const KEY_SLOT = "faceweave-key";
const THUMB_MAX_BYTES = 8 * 1024 * 1024; // results larger than this load in the list only when asked
const EXTENSIONS = { "image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "video/mp4": ".mp4" };

const ui = {
  sources: [], // {file, url}
  target: null, // {file, url, kind}
  jobId: null, // the job shown in the "Current job" card
  follow: null, // AbortController of the event stream being read
  results: new Map(), // result URL -> Promise<{url, type}> (blob URLs, shared by the card and the list)
};

// --- words --------------------------------------------------------------------------------------------------
const STATE_WORDS = { queued: "Waiting", running: "Working", succeeded: "Done", failed: "Failed", cancelled: "Cancelled" };
const STAGE_WORDS = {
  queued: "Waiting for a free worker…", requeued: "Waiting for a free worker…", starting: "Starting…",
  prepare: "Preparing…", swap: "Swapping faces…", encode: "Writing the video…", done: "Finishing…",
};

// The API's error codes in the user's words. The API's hints address programmers ("send the form field …"), so they
// are never shown; the API's message is added where it carries a useful detail (which limit, which option).
const PLAIN = {
  consent_required: ["Please confirm that everyone shown agreed to this use of their likeness.",
                     "Tick the confirmation box above the Swap button, then try again."],
  unauthorized: ["The server did not accept your API key.", "Check the key at the top of the page."],
  rate_limited: ["Too many requests in a short time.", "Wait a moment and try again."],
  quota_exceeded: ["You have reached your limit of jobs or storage.",
                   "Wait for a running job to finish, or delete old jobs below."],
  media_too_large: ["That file is too large for this server.", "detail"],
  unsupported_media: ["That file is not a photo or video this server can read.", "Try a JPEG, PNG, WebP or MP4 file."],
  wrong_media_kind: ["The face to use must be a photo, not a video.", "Remove the video from the faces and add a photo."],
  empty_media: ["One of the files is empty.", "Choose the file again."],
  truncated_media: ["One of the files is incomplete (cut off).", "Export or download it again."],
  input_unreadable: ["One of the files could not be read.", "Choose it again, or try another file."],
  input_not_found: ["One of the files could not be found.", "Choose it again."],
  corrupt_stream: ["The video is damaged and could not be decoded.", "Export it again, or try another video."],
  no_face_in_source: ["No face was found in the photo of the face to use.",
                      "Use a clear, well-lit photo where the face is fully visible."],
  no_face_in_target: ["No face was found in the photo or video to change.", "Try one where a face is clearly visible."],
  no_matching_face: ["None of the faces matched the person to replace.", "Try “Every face” in the options."],
  no_face_in_reference: ["No face was found in the reference photo.", "Use a clearer reference photo."],
  invalid_option: ["One of the options was not accepted.", "detail"],
  policy_rejected: ["This server's content policy does not allow this job.", "detail"],
  bad_request: ["The server could not accept this request.", "detail"],
  invalid_request: ["The server could not accept this request.", "detail"],
  job_not_found: ["This job no longer exists.", "It may have been deleted."],
  result_expired: ["This result has been deleted.", "Results are kept for a limited time. Run the job again."],
  result_not_ready: ["The result is not ready yet.", "Wait for the job to finish."],
  not_ready: ["The server is still starting up.", "Try again in a minute."],
  model_missing: ["The server is missing a model it needs.", "Ask the server's operator to install it."],
  model_integrity: ["A model file on the server is damaged.", "Ask the server's operator to reinstall it."],
  model_download: ["The server could not download a model it needs.", "Ask the server's operator."],
  dependency_missing: ["The server is missing a component for this option.", "detail"],
  device_unavailable: ["The server's graphics card is unavailable right now.", "Try again later."],
  output_not_writable: ["The server could not save the result.", "Try again later."],
  request_timeout: ["The upload took too long.", "Check your connection and try again."],
  network: ["Cannot reach the server.", "Check your connection and try again."],
  internal_error: ["Something went wrong on the server.", "Try again; if it keeps happening, tell its operator."],
};

function explain(err) {
  const plain = PLAIN[err.code];
  if (!plain) {
    const generic = err.status >= 500 ? PLAIN.internal_error : ["The request did not work.", ""];
    return { title: generic[0], detail: err.message ? sentence(err.message) : generic[1] };
  }
  let detail = plain[1] === "detail" ? sentence(err.message) : plain[1];
  if (err.retryAfter && (err.code === "rate_limited" || err.code === "quota_exceeded")) {
    detail += ` You can try again in ${duration(err.retryAfter)}.`;
  }
  return { title: plain[0], detail };
}

function sentence(text) {
  const t = (text || "").trim();
  if (!t) return "";
  return t[0].toUpperCase() + t.slice(1) + (/[.!?]$/.test(t) ? "" : ".");
}

function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return s % 60 ? `${m} min ${s % 60} s` : `${m} min`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

function ago(unixSeconds) {
  const s = Date.now() / 1000 - unixSeconds;
  if (s < 45) return "just now";
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return new Date(unixSeconds * 1000).toLocaleDateString();
}

function bytes(n) {
  if (n < 1024 * 1024) return `${Math.max(1, Math.round(n / 1024))} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

// --- the API ------------------------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(code, message, status, retryAfter) {
    super(message);
    this.code = code;
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: "Bearer " + key } : {};
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError("network", "", 0, null);
  }
  if (response.ok) return response;
  let code = `http_${response.status}`;
  let message = "";
  try {
    const body = await response.json();
    code = body.error.code || code;
    message = body.error.message || "";
  } catch (_) {
    // not the API's JSON error (a proxy's page): the status code is all there is
  }
  throw new ApiError(code, message, response.status, Number(response.headers.get("Retry-After")) || null);
}

// --- the API key (this tab only) -----------------------------------------------------------------------------
function loadKey() {
  try {
    localStorage.removeItem(KEY_SLOT); // an older page kept it there: remove it from disk
    $("api-key").value = sessionStorage.getItem(KEY_SLOT) || "";
  } catch (_) {
    // storage disabled: the key stays in memory (the input) only
  }
}

function saveKey() {
  const key = $("api-key").value.trim();
  try {
    if (key) sessionStorage.setItem(KEY_SLOT, key);
    else sessionStorage.removeItem(KEY_SLOT);
  } catch (_) {
    // storage disabled: memory only
  }
}

// --- messages -------------------------------------------------------------------------------------------------
function showMessage(prefix, err) {
  const box = $(prefix);
  if (!err) {
    box.hidden = true;
    return;
  }
  const { title, detail } = typeof err === "string" ? { title: err, detail: "" } : explain(err);
  $(`${prefix}-title`).textContent = title;
  $(`${prefix}-detail`).textContent = detail;
  box.dataset.code = err.code || "";
  box.hidden = false;
}

// --- choosing inputs ----------------------------------------------------------------------------------------
function addSources(files) {
  showMessage("error", null);
  for (const file of files) {
    if (!file.type.startsWith("image/") && file.type) {
      showMessage("error", new ApiError("wrong_media_kind", "", 0, null));
      continue;
    }
    if (ui.sources.length >= MAX_SOURCES) {
      showMessage("error", `You can use at most ${MAX_SOURCES} photos of the face.`);
      break;
    }
    ui.sources.push({ file, url: URL.createObjectURL(file) });
  }
  renderSources();
}

function removeSource(index) {
  URL.revokeObjectURL(ui.sources[index].url);
  ui.sources.splice(index, 1);
  renderSources();
}

function renderSources() {
  const list = $("source-list");
  list.replaceChildren();
  ui.sources.forEach((source, i) => {
    const item = document.createElement("li");
    item.className = "source";
    const img = document.createElement("img");
    img.src = source.url;
    img.alt = `face photo ${i + 1}: ${source.file.name}`;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "remove";
    remove.textContent = "×";
    remove.title = "Remove";
    remove.setAttribute("aria-label", `Remove ${source.file.name}`);
    remove.addEventListener("click", () => removeSource(i));
    item.append(img, remove);
    list.appendChild(item);
  });
  $("source-count").textContent = `${ui.sources.length} of ${MAX_SOURCES} photos`;
  $("source-drop").hidden = ui.sources.length >= MAX_SOURCES;
  $("source-drop").classList.toggle("compact", ui.sources.length > 0);
}

function setTarget(file) {
  showMessage("error", null);
  if (ui.target) URL.revokeObjectURL(ui.target.url);
  ui.target = null;
  const box = $("target-preview");
  box.replaceChildren();
  $("target-info").hidden = true;
  $("target-drop").classList.remove("filled");
  if (!file) return;
  const kind = file.type.startsWith("video/") ? "video" : "photo";
  ui.target = { file, url: URL.createObjectURL(file), kind };
  const el = document.createElement(kind === "video" ? "video" : "img");
  el.src = ui.target.url;
  if (kind === "video") {
    el.muted = true;
    el.loop = true;
    el.autoplay = true;
    el.playsInline = true;
    el.addEventListener("loadedmetadata", () => describeTarget(el.videoWidth, el.videoHeight, el.duration));
  } else {
    el.alt = `photo to change: ${file.name}`;
    el.addEventListener("load", () => describeTarget(el.naturalWidth, el.naturalHeight, null));
  }
  box.appendChild(el);
  $("target-drop").classList.add("filled");
  describeTarget(0, 0, null);
}

function describeTarget(width, height, seconds) {
  if (!ui.target) return;
  const parts = [ui.target.kind === "video" ? "Video" : "Photo", ui.target.file.name];
  if (width && height) parts.push(`${width}×${height}`);
  if (seconds && Number.isFinite(seconds)) parts.push(`${seconds.toFixed(1)} s`);
  parts.push(bytes(ui.target.file.size));
  $("target-info").textContent = parts.join(" · ") + " — click the preview to change it";
  $("target-info").hidden = false;
}

function acceptDrops(zone, onFiles) {
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer && e.dataTransfer.files.length) onFiles([...e.dataTransfer.files]);
  });
}

// --- the current job ----------------------------------------------------------------------------------------
function resetJobCard(job) {
  if (ui.follow) ui.follow.abort();
  ui.jobId = job.id;
  const card = $("job");
  card.hidden = false;
  card.dataset.jobId = job.id;
  card.dataset.kind = job.media_kind || "";
  $("job-id").textContent = job.id.slice(0, 8);
  $("job-id").title = job.id;
  $("job-kind").textContent = kindWord(job);
  $("preview-box").replaceChildren(); // never leave the previous result under a new job
  $("download").hidden = true;
  showMessage("job-error", null);
  render({ state: job.state, stage: job.progress.stage, frames_done: 0, frames_total: null }, job.media_kind);
}

function render(event, kind) {
  const card = $("job");
  card.dataset.state = event.state;
  const badge = $("job-state");
  badge.textContent = STATE_WORDS[event.state] || event.state;
  badge.dataset.state = event.state;
  const bar = $("progress");
  const total = kind === "video" || kind === "batch" ? event.frames_total || 0 : 0;
  if (event.state === "succeeded") bar.value = 1;
  else if (total) bar.value = Math.min(1, event.frames_done / total);
  else if (event.state === "running") bar.removeAttribute("value"); // a photo, or a video before its first frame
  else bar.value = 0;
  bar.textContent = `${Math.round((bar.value || 0) * 100)}%`;
  $("cancel").hidden = FINAL.has(event.state);
  if (FINAL.has(event.state)) {
    $("job-detail").textContent = event.state === "cancelled" ? "The job was cancelled." : "";
    return;
  }
  let detail = STAGE_WORDS[event.stage] || (event.state === "queued" ? STAGE_WORDS.queued : "Working…");
  if (total && kind === "batch") {
    detail = `${event.frames_done} of ${total} done`;
  } else if (total && event.frames_done > 0) {
    detail = `${event.frames_done} of ${total} frames`;
    if (event.fps) detail += ` · ${event.fps.toFixed(1)} frames/s`;
    const eta = event.eta_s != null ? event.eta_s : event.fps ? (total - event.frames_done) / event.fps : null;
    if (eta != null && event.frames_done < total) detail += ` · about ${duration(Math.max(1, eta))} left`;
  }
  $("job-detail").textContent = detail;
}

async function readEvents(jobId, kind, signal) {
  const response = await api(`/v1/swaps/${jobId}/events`, { signal });
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
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (!data) continue; // a keep-alive comment
      last = JSON.parse(data);
      if (ui.jobId === jobId) render(last, kind);
      updateListItem(last, kind);
    }
  }
  return last;
}

async function follow(job) {
  const controller = new AbortController();
  ui.follow = controller;
  let last = null;
  // The stream can drop (a proxy, a laptop lid): read it again until the job reaches a final state.
  for (let attempt = 0; !controller.signal.aborted; attempt++) {
    try {
      last = (await readEvents(job.id, job.media_kind, controller.signal)) || last;
    } catch (err) {
      if (err.name === "AbortError") return;
      if (err.code !== "network" || attempt >= 5) throw err;
    }
    if (last && FINAL.has(last.state)) break;
    await new Promise((resolve) => setTimeout(resolve, Math.min(5000, 500 * 2 ** attempt)));
  }
  if (controller.signal.aborted || ui.jobId !== job.id) return;
  await finished(job.id);
}

async function finished(jobId) {
  const job = await (await api(`/v1/swaps/${jobId}`)).json();
  if (ui.jobId !== jobId) return;
  render({ state: job.state, stage: job.progress.stage, frames_done: job.progress.frames_done,
           frames_total: job.progress.frames_total }, job.media_kind); // prettier-ignore
  if (job.state === "failed" && job.error) {
    showMessage("job-error", new ApiError(job.error.code, job.error.message, 422, null));
  } else if (job.state === "succeeded") {
    $("job-detail").textContent = summary(job);
    const urls = resultUrls(job);
    if (urls.length === 1) {
      await showResult(urls[0], $("preview-box"), { controls: true, id: "preview" });
      const result = await resultOf(urls[0]);
      const link = $("download");
      link.href = result.url;
      link.download = `faceweave-${job.id}${EXTENSIONS[result.type] || ""}`;
      link.hidden = false;
    } else {
      await showBatch(job, urls);
    }
  }
  refreshJobs();
}

// A batch job (several targets, made through the API): every result with its own download link.
async function showBatch(job, urls) {
  const grid = document.createElement("div");
  grid.className = "batch";
  $("preview-box").replaceChildren(grid);
  for (const [i, path] of urls.entries()) {
    const figure = document.createElement("figure");
    const media = document.createElement("div");
    const caption = document.createElement("figcaption");
    const link = document.createElement("a");
    link.textContent = `Download ${i + 1}`;
    caption.appendChild(link);
    figure.append(media, caption);
    grid.appendChild(figure);
    await showResult(path, media, { controls: true, id: i === 0 ? "preview" : "" });
    const result = await resultOf(path);
    link.href = result.url;
    link.download = `faceweave-${job.id}-${i}${EXTENSIONS[result.type] || ""}`;
  }
}

function kindWord(job) {
  if (job.media_kind === "batch") return `Batch of ${job.items ? job.items.length : job.progress.frames_total}`;
  return job.media_kind === "video" ? "Video" : "Photo";
}

function summary(job) {
  const took = job.started_at && job.finished_at ? job.finished_at - job.started_at : null;
  const parts = [];
  if (job.media_kind === "batch" && job.items) {
    const ok = job.items.filter((it) => it.state === "succeeded").length;
    parts.push(`${ok} of ${job.items.length} done`);
    if (ok < job.items.length) parts.push(`${job.items.length - ok} failed`);
  } else if (job.media_kind === "video") {
    const frames = job.progress.frames_total || job.progress.frames_done;
    parts.push(took ? `${frames} frames in ${duration(Math.max(1, took))}` : `${frames} frames`);
  } else {
    parts.push(took ? `Finished in ${took < 10 ? took.toFixed(1) + " s" : duration(took)}` : "Finished");
    if (job.faces_swapped != null) parts.push(`${job.faces_swapped} face${job.faces_swapped === 1 ? "" : "s"} swapped`);
  }
  if (job.result_bytes) parts.push(bytes(job.result_bytes));
  return parts.join(" · ");
}

// A job's results: one for a single-target job, one per succeeded item for a batch job.
function resultUrls(job) {
  if (job.items) return job.items.filter((it) => it.result_url).map((it) => it.result_url);
  return job.result_url ? [job.result_url] : [];
}

function resultOf(path) {
  if (!ui.results.has(path)) {
    const promise = api(path)
      .then((r) => r.blob())
      .then((blob) => ({ url: URL.createObjectURL(blob), type: blob.type }));
    promise.catch(() => ui.results.delete(path)); // a failed download may be retried
    ui.results.set(path, promise);
  }
  return ui.results.get(path);
}

function forgetResults(jobId) {
  for (const [path, promise] of [...ui.results]) {
    if (!path.startsWith(`/v1/swaps/${jobId}/`)) continue;
    ui.results.delete(path);
    promise.then((r) => URL.revokeObjectURL(r.url), () => {});
  }
}

async function showResult(path, box, { controls, id }) {
  const result = await resultOf(path);
  const el = document.createElement(result.type.startsWith("video/") ? "video" : "img");
  if (id) el.id = id;
  el.src = result.url;
  if (el.tagName === "VIDEO") {
    el.controls = controls;
    el.muted = !controls;
    el.playsInline = true;
    el.preload = "metadata";
  } else {
    el.alt = "swapped result";
  }
  box.replaceChildren(el);
}

async function submit(event) {
  event.preventDefault();
  showMessage("error", null);
  $("consent-box").classList.remove("attention");
  if (!ui.sources.length) return showMessage("error", "Add at least one photo of the face to use.");
  if (!ui.target) return showMessage("error", "Choose the photo or video to change.");
  saveKey();
  const form = new FormData();
  for (const source of ui.sources) form.append("sources", source.file);
  form.append("target", ui.target.file);
  if ($("consent").checked) form.append("consent", "true"); // the server decides whether it is required
  form.append("settings", JSON.stringify({
    selector: $("selector").value,
    blend: $("blend").value,
    keep_mouth: $("keep-mouth").checked,
    provenance_label: $("label").checked,
  }));
  const button = $("submit");
  button.disabled = true;
  button.textContent = "Uploading…";
  let job;
  try {
    job = await (await api("/v1/swaps", { method: "POST", body: form })).json();
  } catch (err) {
    showMessage("error", err);
    if (err.code === "consent_required") $("consent-box").classList.add("attention");
    return;
  } finally {
    button.disabled = false;
    button.textContent = "Swap faces";
  }
  resetJobCard(job);
  refreshJobs();
  if (window.matchMedia("(max-width: 900px)").matches) $("job").scrollIntoView({ behavior: "smooth" });
  try {
    await follow(job);
  } catch (err) {
    if (ui.jobId === job.id) showMessage("job-error", err);
  }
}

async function cancel() {
  const jobId = ui.jobId;
  if (!jobId) return;
  $("cancel").disabled = true;
  try {
    const job = await (await api(`/v1/swaps/${jobId}`, { method: "DELETE" })).json();
    if (ui.follow) ui.follow.abort();
    if (ui.jobId === jobId) render({ state: job.state, stage: job.progress.stage }, job.media_kind);
    if (job.state === "succeeded") $("job-detail").textContent = "It had already finished; its result was deleted.";
  } catch (err) {
    showMessage("job-error", err);
  } finally {
    $("cancel").disabled = false;
    refreshJobs();
  }
}

// --- recent jobs ----------------------------------------------------------------------------------------------
function listDetail(job) {
  if (job.state === "succeeded") return job.expired ? "Result deleted" : summary(job);
  if (job.state === "failed" && job.error) return explain(new ApiError(job.error.code, job.error.message, 422)).title;
  if (job.state === "cancelled") return job.expired ? "Cancelled and deleted" : "Cancelled";
  const p = job.progress;
  if (job.state === "running" && job.media_kind !== "image" && p.frames_total) {
    return `${p.frames_done} of ${p.frames_total} ${job.media_kind === "batch" ? "done" : "frames"}`;
  }
  if (job.state === "running") return job.started_at ? `Started ${ago(job.started_at)}` : "Starting…";
  return STAGE_WORDS.queued;
}

// The followed job's row moves with its events (the list itself reloads when a job starts or ends).
function updateListItem(event, kind) {
  const item = document.querySelector(`#job-list li[data-job-id="${event.id}"]`);
  if (!item || FINAL.has(event.state)) return;
  item.dataset.state = event.state;
  const badge = item.querySelector(".badge");
  badge.dataset.state = event.state;
  badge.textContent = STATE_WORDS[event.state] || event.state;
  item.querySelector(".job-sub").textContent = listDetail({
    state: event.state, media_kind: kind, started_at: null, expired: false,
    progress: { frames_done: event.frames_done, frames_total: event.frames_total },
  }); // prettier-ignore
}

let listing = null;

function refreshJobs() {
  if (!listing) {
    listing = loadJobs().finally(() => {
      listing = null;
    });
  }
  return listing;
}

async function loadJobs() {
  const list = $("job-list");
  const empty = $("recent-empty");
  let page;
  try {
    page = await (await api("/v1/swaps?limit=10")).json();
  } catch (err) {
    list.replaceChildren();
    const { title, detail } = explain(err);
    empty.textContent = err.code === "unauthorized" ? "Enter your API key to see your jobs." : `${title} ${detail}`;
    empty.hidden = false;
    return;
  }
  empty.textContent = "No jobs yet.";
  empty.hidden = page.items.length > 0;
  list.replaceChildren(...page.items.map(jobItem));
}

function jobItem(job) {
  const item = document.createElement("li");
  item.className = "job-item";
  item.dataset.jobId = job.id;
  item.dataset.state = job.state;

  const thumb = document.createElement("div");
  thumb.className = "thumb";
  thumb.dataset.kind = job.media_kind || "";
  const text = document.createElement("div");
  text.className = "job-text";
  const title = document.createElement("div");
  title.className = "job-title";
  const kind = document.createElement("span");
  kind.textContent = `${kindWord(job)} · ${ago(job.created_at)}`;
  const badge = document.createElement("span");
  badge.className = "badge";
  badge.dataset.state = job.state;
  badge.textContent = STATE_WORDS[job.state] || job.state;
  title.append(kind, badge);
  const detail = document.createElement("div");
  detail.className = "job-sub";
  detail.textContent = listDetail(job);
  text.append(title, detail);

  const actions = document.createElement("div");
  actions.className = "job-actions";
  const urls = resultUrls(job);
  if (urls.length) {
    const open = button("Open", "link", async () => {
      resetJobCard(job);
      await finished(job.id).catch((err) => showMessage("job-error", err));
      $("job").scrollIntoView({ behavior: "smooth", block: "nearest" });
    });
    actions.appendChild(open);
    const first = job.items ? job.items.find((it) => it.result_url) : job;
    if (first.media_kind === "image" || (first.result_bytes || 0) <= THUMB_MAX_BYTES) {
      showResult(urls[0], thumb, { controls: false }).catch(() => thumb.classList.add("broken"));
    }
  }
  if (!FINAL.has(job.state)) {
    actions.appendChild(button("Follow", "link", () => {
      resetJobCard(job);
      follow(job).catch((err) => showMessage("job-error", err));
    }));
  }
  if (!job.expired || !FINAL.has(job.state)) {
    actions.appendChild(button(FINAL.has(job.state) ? "Delete" : "Cancel", "link danger", async () => {
      try {
        await api(`/v1/swaps/${job.id}`, { method: "DELETE" });
        forgetResults(job.id);
        if (ui.jobId === job.id) {
          if (ui.follow) ui.follow.abort();
          $("job").hidden = true;
          ui.jobId = null;
        }
      } catch (err) {
        showMessage("error", err);
      }
      refreshJobs();
    }));
  }
  item.append(thumb, text, actions);
  return item;
}

function button(label, className, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = className;
  b.textContent = label;
  b.addEventListener("click", onClick);
  return b;
}

// --- wiring ---------------------------------------------------------------------------------------------------
loadKey();
$("api-key").addEventListener("change", () => {
  saveKey();
  refreshJobs();
});
$("source").addEventListener("change", (e) => {
  addSources([...e.target.files]);
  e.target.value = ""; // choosing the same file again still fires "change"
});
$("target").addEventListener("change", (e) => setTarget(e.target.files[0] || null));
acceptDrops($("source-drop"), addSources);
acceptDrops($("target-drop"), (files) => setTarget(files[0]));
$("consent").addEventListener("change", () => $("consent-box").classList.remove("attention"));
$("swap-form").addEventListener("submit", submit);
$("cancel").addEventListener("click", cancel);
$("refresh").addEventListener("click", refreshJobs);
refreshJobs();
