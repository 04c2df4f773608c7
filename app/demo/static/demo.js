// The ILPS demo: record (or pick a file), convert to the PCM the mobile app uploads
// (signed 16-bit little-endian, 2 channels, 44 100 Hz), upload, follow over EventSource.
"use strict";

const SAMPLE_RATE = 44100;
const STAGES = ["created", "started", "preprocessing", "transcribing", "evaluating", "completed"];
const $ = (id) => document.getElementById(id);
const userId = localStorage.getItem("ilps-demo-user") || crypto.randomUUID();
localStorage.setItem("ilps-demo-user", userId);

let texts = [];
let recording = null;

async function loadTexts() {
  const response = await fetch("/demo/texts");
  if (!response.ok) {
    $("passage").textContent = "No catalogue of texts is available from the feedback service.";
    return;
  }
  texts = await response.json();
  for (const text of texts) {
    $("text").append(new Option(text.title, text.id));
  }
  showText();
}

function chosenText() {
  return texts.find((text) => text.id === $("text").value);
}

function showText() {
  const text = chosenText();
  $("passage").textContent = text ? text.text : "";
  $("reference").textContent = text ? text.transcription : "";
}

// ------------------------------------------------------------------ capture
const RECORDER_WORKLET = `
class Recorder extends AudioWorkletProcessor {
  process(inputs) {
    const channels = inputs[0];
    if (channels.length) this.port.postMessage(channels.map((c) => c.slice(0)));
    return true;
  }
}
registerProcessor("recorder", Recorder);`;

async function startRecording() {
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 2, echoCancellation: false, noiseSuppression: false,
             autoGainControl: false },
  });
  const context = new AudioContext({ sampleRate: SAMPLE_RATE });
  const module = URL.createObjectURL(new Blob([RECORDER_WORKLET], { type: "text/javascript" }));
  await context.audioWorklet.addModule(module);
  const node = new AudioWorkletNode(context, "recorder", {
    channelCount: 2, channelCountMode: "explicit",
  });
  const chunks = [];
  node.port.onmessage = (event) => chunks.push(event.data);
  context.createMediaStreamSource(stream).connect(node);
  const started = Date.now();
  const timer = setInterval(() => {
    $("timer").textContent = `${((Date.now() - started) / 1000).toFixed(1)} s`;
  }, 100);
  recording = { stream, context, node, chunks, timer };
}

async function stopRecording() {
  const { stream, context, node, chunks, timer } = recording;
  recording = null;
  clearInterval(timer);
  node.disconnect();
  stream.getTracks().forEach((track) => track.stop());
  await context.close();
  const left = concat(chunks.map((frame) => frame[0]));
  const right = concat(chunks.map((frame) => frame[1] || frame[0]));
  return toPcm(left, right);
}

async function fileToPcm(file) {
  const decoded = await new AudioContext().decodeAudioData(await file.arrayBuffer());
  const frames = Math.ceil(decoded.duration * SAMPLE_RATE);
  const offline = new OfflineAudioContext(2, frames, SAMPLE_RATE);
  const source = offline.createBufferSource();
  source.buffer = decoded;
  source.connect(offline.destination);
  source.start();
  const rendered = await offline.startRendering();
  return toPcm(rendered.getChannelData(0), rendered.getChannelData(1));
}

function concat(parts) {
  const out = new Float32Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) { out.set(part, offset); offset += part.length; }
  return out;
}

function toPcm(left, right) {
  const view = new DataView(new ArrayBuffer(left.length * 4));
  for (let i = 0; i < left.length; i++) {
    view.setInt16(i * 4, Math.max(-1, Math.min(1, left[i])) * 0x7fff, true);
    view.setInt16(i * 4 + 2, Math.max(-1, Math.min(1, right[i])) * 0x7fff, true);
  }
  return new Blob([view.buffer], { type: "application/octet-stream" });
}

// --------------------------------------------------------------- assessment
async function assess(pcm) {
  $("upload-error").textContent = "";
  const text = chosenText();
  const form = new FormData();
  form.append("file", pcm, "recording.pcm");
  form.append("title", text ? text.title.slice(0, 50) : "Demo reading");
  form.append("text_id", $("text").value);
  const response = await fetch("/tasks", {
    method: "POST", headers: { "X-User-Id": userId }, body: form,
  });
  const body = await response.json();
  if (!response.ok) {
    $("upload-error").textContent = typeof body.detail === "string"
      ? body.detail : JSON.stringify(body.detail);
    return;
  }
  follow(body.id);
}

function follow(taskId) {
  $("progress").hidden = false;
  $("result").hidden = true;
  $("failure").hidden = true;
  $("stages").replaceChildren();
  const source = new EventSource(`/tasks/${taskId}/events?user_id=${userId}&last_event_id=0`);
  const onStatus = async (event) => {
    const data = JSON.parse(event.data);
    for (const item of $("stages").children) item.classList.add("done");
    const item = document.createElement("li");
    item.dataset.status = data.status;
    item.textContent = `${data.status} — ${new Date(data.time).toLocaleTimeString()}`;
    $("stages").append(item);
    if (data.status === "completed" || data.status === "failed") {
      source.close();
      item.classList.add("done");
      await showResult(taskId, data);
    }
  };
  for (const status of [...STAGES, "failed"]) source.addEventListener(status, onStatus);
}

async function showResult(taskId, event) {
  if (event.status === "failed") {
    $("failure").hidden = false;
    $("failure").textContent = event.comment || "The assessment failed.";
    return;
  }
  const task = await (await fetch(`/tasks/${taskId}`, { headers: { "X-User-Id": userId } })).json();
  $("accuracy").textContent = `${task.accuracy.toFixed(1)} %`;
  $("heard").textContent = task.result || "";
  renderAlignment(chosenText(), task.mistakes || []);
  $("result").hidden = false;
}

// The reference phonemes, each marked with what happened to it in the reading.
function renderAlignment(text, mistakes) {
  const reference = text ? text.transcription.split(" ") : [];
  const byPosition = new Map(mistakes.filter((m) => m.reference)
    .map((m) => [m.reference.position, m]));
  const spans = reference.map((phoneme, position) => {
    const span = document.createElement("span");
    const mistake = byPosition.get(position);
    span.textContent = mistake && mistake.type === "Replacement"
      ? `${phoneme}→${mistake.actual.value}` : phoneme;
    if (mistake) { span.className = mistake.type; span.title = mistake.type; }
    return span;
  });
  $("alignment").replaceChildren(...spans);
  const inserted = mistakes.filter((m) => m.type === "Insertion").map((m) => m.actual.value);
  $("inserted").textContent = inserted.length ? inserted.join(" ") : "none";
}

// ------------------------------------------------------------------- wiring
$("text").addEventListener("change", showText);
$("record").addEventListener("click", async () => {
  try {
    await startRecording();
    $("record").disabled = true;
    $("stop").disabled = false;
  } catch (error) {
    $("upload-error").textContent = `Cannot record: ${error.message}`;
  }
});
$("stop").addEventListener("click", async () => {
  $("stop").disabled = true;
  $("record").disabled = false;
  await assess(await stopRecording());
});
$("file").addEventListener("change", async () => {
  const file = $("file").files[0];
  if (file) await assess(await fileToPcm(file));
});
loadTexts();
