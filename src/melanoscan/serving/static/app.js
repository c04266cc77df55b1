// melanoscan web page: send images to /v1/predict and show one card per image, riskiest first.
"use strict";

const state = { model: null, results: [] };

const label = (name) => name.replaceAll("_", " ");
const percent = (p) => `${(100 * p).toFixed(1)}%`;

async function loadModel() {
  const info = document.getElementById("model-info");
  try {
    const response = await fetch("/v1/model");
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    state.model = await response.json();
    const m = state.model;
    info.textContent = `Model ${m.name} (${m.version}), ${m.classes.length} classes, ` +
      `melanoma alert at probability ≥ ${m.alert_threshold.toFixed(3)}`;
    const test = m.metrics && m.metrics.test;
    if (test) {
      const parts = Object.entries(test).map(([set, entry]) => {
        const plain = entry.results && entry.results.plain;
        if (!plain || !plain.balanced_accuracy) return null;
        return `${set}: balanced accuracy ${plain.balanced_accuracy.value.toFixed(2)}, ` +
          `melanoma AUC ${plain.melanoma_auc ? plain.melanoma_auc.value.toFixed(2) : "n/a"}`;
      }).filter(Boolean);
      if (parts.length) info.append(el("div", { class: "metrics", text: `Tested on ${parts.join("; ")}` }));
    }
  } catch (error) {
    info.textContent = `Model information unavailable (${error.message}).`;
  }
}

function probabilityBars(probabilities, predicted) {
  const sorted = Object.entries(probabilities).sort((a, b) => b[1] - a[1]);
  const list = el("ul", { class: "bars", "aria-label": "Class probabilities" });
  for (const [name, p] of sorted) {
    const bar = el("span", { class: "bar" });
    bar.style.width = `${Math.max(100 * p, 0.5)}%`;
    const row = el("li", { class: name === predicted ? "predicted" : "" },
      el("span", { class: "bar-label", text: label(name) }),
      el("span", { class: "bar-track" }, bar),
      el("span", { class: "bar-value", text: percent(p) }));
    if (name === "melanoma") row.classList.add("melanoma");
    list.append(row);
  }
  return list;
}

const VERDICTS = { not_dermoscopy: "Not a dermoscopy image", poor_quality: "Image too poor to read" };
const refusedByGate = (result) => result.gate in VERDICTS && !result.gate_overridden;

function gateCard(card, result) {
  // The gate refused the image: say why, show it, and give no class and no alert.
  card.classList.add("flagged");
  card.append(
    el("div", { class: "verdict-banner", role: "status",
      text: `${VERDICTS[result.gate]}: ${result.gate_reason}. Not analysed: no class and no ` +
        "melanoma alert. Send a dermoscopy image of the lesion." }),
    el("h2", { text: result.path }),
    el("p", { class: "headline", text: result.headline }),
    el("div", { class: "images" },
      el("figure", {}, el("img", { src: result.objectUrl, alt: `Image ${result.path}` }),
        el("figcaption", { text: "Image" }))));
  return card;
}

function resultCard(result) {
  const card = el("li", { class: "card", "data-filename": result.path });
  if (result.error) {
    card.classList.add("refused");
    card.append(el("h2", { text: result.path }),
      el("p", { class: "error", text: `Not analysed: ${result.error}` }));
    return card;
  }
  if (refusedByGate(result)) return gateCard(card, result);
  if (result.gate_overridden) {
    card.classList.add("overridden");
    card.append(el("div", { class: "gate-warning", role: "note",
      text: `Gate off: ${VERDICTS[result.gate].toLowerCase()} (${result.gate_reason}); ` +
        "scored anyway, do not rely on it." }));
  }
  if (result.melanoma_alert) {
    card.classList.add("alert");
    card.append(el("div", { class: "alert-banner", role: "alert",
      text: `Melanoma alert: probability ${percent(result.melanoma_probability)} ` +
        `(threshold ${percent(state.model ? state.model.alert_threshold : 0)}). ` +
        "Refer for dermatologist review." }));
  }
  const images = el("div", { class: "images" },
    el("figure", {}, el("img", { src: result.objectUrl, alt: `Image ${result.path}` }),
      el("figcaption", { text: "Image" })));
  if (result.gradcam) {
    images.append(el("figure", {},
      el("img", { class: "gradcam", src: `data:image/png;base64,${result.gradcam.png_base64}`,
        alt: `Grad-CAM for ${label(result.gradcam.target_class)}` }),
      el("figcaption", { text: `Grad-CAM: ${label(result.gradcam.target_class)}` })));
  }
  card.append(
    el("h2", { text: result.path }),
    el("p", { class: "headline", text: result.headline }),
    el("p", { class: "summary" },
      el("span", { text: "top class " }),
      el("span", { class: "predicted-class", text: label(result.predicted_class) }),
      el("span", { text: ` (${percent(result.confidence)}) · melanoma ` }),
      el("span", { class: "melanoma-probability", text: percent(result.melanoma_probability) })),
    images,
    probabilityBars(result.probabilities, result.predicted_class));
  return card;
}

function render() {
  const list = document.getElementById("results");
  list.replaceChildren();
  // Read images by melanoma probability, then those the gate refused, then failed uploads.
  const rank = (r) => (r.error ? -3 : refusedByGate(r) ? -2 : r.melanoma_probability);
  const ranked = [...state.results].sort((a, b) => rank(b) - rank(a));
  for (const result of ranked) list.append(resultCard(result));
}

async function analyse(files) {
  const status = document.getElementById("status");
  if (!files.length) return;
  const form = new FormData();
  for (const file of files) form.append("images", file, file.name);
  const gradcam = document.getElementById("gradcam").checked;
  status.textContent = `Analysing ${files.length} image(s)…`;
  status.className = "status busy";
  try {
    const response = await fetch(`/v1/predict?gradcam=${gradcam}`, { method: "POST", body: form });
    const body = await response.json();
    if (!response.ok) {
      const error = body.error || { message: `HTTP ${response.status}` };
      state.results = files.map((file) => ({ path: file.name, error: error.message }));
      status.textContent = `Refused: ${error.message}`;
      status.className = "status error";
    } else {
      state.results = body.predictions
        .map((p) => ({ ...p, objectUrl: URL.createObjectURL(files[p.index]) }))
        .concat(body.skipped.map((s) => ({ path: s.path, error: s.reason })));
      const alerts = body.predictions.filter((p) => p.melanoma_alert).length;
      const flagged = body.predictions.filter(refusedByGate).length;
      status.textContent = `${body.predictions.length - flagged} image(s) analysed, ${alerts} ` +
        `melanoma alert(s), ${flagged} not analysed by the gate, ${body.skipped.length} refused.`;
      status.className = "status done";
    }
  } catch (error) {
    status.textContent = `The service did not answer (${error.message}).`;
    status.className = "status error";
  }
  render();
}

function setUp() {
  const zone = document.getElementById("drop-zone");
  const input = document.getElementById("file-input");
  input.addEventListener("change", () => analyse([...input.files]));
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    analyse([...event.dataTransfer.files]);
  });
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") input.click();
  });
  loadModel();
}

document.addEventListener("DOMContentLoaded", setUp);
