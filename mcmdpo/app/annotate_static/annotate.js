// The annotation page: the server keeps every answer (one transaction each) and decides what to
// show; this script shows it, and sends the annotator's keys and clicks. Every text is put in
// with textContent, never as HTML. <body data-busy> is "false" once the page waits for the
// annotator (the browser test waits on it).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { annotator: null, record: null, busy: false, editSide: null, pickingEdit: false };

function setBusy(busy) {
  state.busy = busy;
  document.body.dataset.busy = String(busy);
  for (const button of document.querySelectorAll("button")) button.disabled = busy;
}

function say(text, isError = false) {
  $("message").textContent = text || "";
  $("message").classList.toggle("error", isError);
}

async function call(path, body) {
  const response = await fetch(path, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    credentials: "same-origin", cache: "no-store",
  });
  let data = null;
  try { data = await response.json(); } catch (error) { data = null; }
  if (!response.ok) throw new Error((data && data.error) || `the server answered ${response.status}`);
  return data;
}

function show(progress) {
  state.annotator = progress.annotator;
  state.record = progress.record;
  $("annotator").textContent = progress.annotator;
  $("answered").textContent = progress.answered;
  $("left").textContent = progress.left;
  const total = progress.answered + progress.left;
  $("progress").max = Math.max(total, 1);
  $("progress").value = progress.answered;
  $("status-line").hidden = false;
  $("progress").hidden = false;
  $("naming").hidden = true;
  closeEditor();
  document.body.dataset.answered = String(progress.answered);
  document.body.dataset.record = progress.record ? progress.record.record_id : "";
  if (!progress.record) {
    $("task").hidden = true;
    $("done").hidden = false;
  } else {
    const record = progress.record;
    $("task").hidden = false;
    $("done").hidden = true;
    if ($("image").getAttribute("src") !== record.image) $("image").src = record.image;
    $("post").textContent = record.context || "(no post)";
    $("record-id").textContent = record.record_id;
    $("text-1").textContent = record.texts[0];
    $("text-2").textContent = record.texts[1];
  }
  say(progress.message || (progress.record && progress.record.again ? "Shown again: you undid your answer about it." : ""));
}

async function run(path, body) {
  if (state.busy) return;
  setBusy(true);
  try {
    show(await call(path, { annotator: state.annotator, ...body }));
  } catch (error) {
    say(error.message, true);
    try { show(await call("/api/next", { annotator: state.annotator })); } catch (ignored) { /* the message stays */ }
    say(error.message, true);
  } finally {
    setBusy(false);
  }
}

function answer(choice, correctedText = null) {
  if (!state.record) return;
  run("/api/answer", { record_id: state.record.record_id, choice, corrected_text: correctedText });
}

function openEditor(side) {
  if (!state.record) return;
  state.editSide = side;
  state.pickingEdit = false;
  $("editing").textContent = side === 1 ? "1" : "2";
  $("editing-side").textContent = side === 1 ? "1" : "2";
  $("edit-text").value = state.record.texts[side - 1];
  $("editor").hidden = false;
  $("edit-text").focus();
  say(`Editing ${side}: Ctrl+Enter saves it as your correction, Esc cancels.`);
}

function closeEditor() {
  state.editSide = null;
  state.pickingEdit = false;
  $("editor").hidden = true;
}

function saveEdit() {
  if (state.editSide === null) return;
  answer(state.editSide === 1 ? "first" : "second", $("edit-text").value);
}

const KEYS = { "1": "first", "2": "second", t: "tie", b: "both_bad", s: "skip" };

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || state.busy || !state.annotator) return;
  if (state.editSide !== null || event.target.tagName === "INPUT" || event.target.tagName === "TEXTAREA") return;
  const key = event.key.toLowerCase();
  if (state.pickingEdit) {
    event.preventDefault();
    if (key === "1" || key === "2") openEditor(Number(key));
    else { state.pickingEdit = false; say(""); }
    return;
  }
  if (key === "u") { event.preventDefault(); run("/api/undo", {}); return; }
  if (!state.record) return;
  if (key === "e") { event.preventDefault(); state.pickingEdit = true; say("Edit which one? Press 1 or 2 (Esc: neither)."); return; }
  if (key in KEYS) { event.preventDefault(); answer(KEYS[key]); }
});

$("edit-text").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); saveEdit(); }
  else if (event.key === "Escape") { event.preventDefault(); closeEditor(); say(""); }
});

for (const button of document.querySelectorAll("[data-choice]")) {
  button.addEventListener("click", () => answer(button.dataset.choice));
}
for (const button of document.querySelectorAll("[data-edit]")) {
  button.addEventListener("click", () => openEditor(Number(button.dataset.edit)));
}
$("undo").addEventListener("click", () => run("/api/undo", {}));
$("save-edit").addEventListener("click", saveEdit);
$("cancel-edit").addEventListener("click", () => { closeEditor(); say(""); });

async function start(name) {
  setBusy(true);
  try {
    const progress = await call("/api/next", { annotator: name });
    const url = new URL(window.location.href);
    url.searchParams.set("annotator", progress.annotator);
    window.history.replaceState(null, "", url);  // a reload keeps the name
    show(progress);
  } catch (error) {
    state.annotator = null;
    $("naming").hidden = false;
    say(error.message, true);
  } finally {
    setBusy(false);
  }
}

$("name-form").addEventListener("submit", (event) => {
  event.preventDefault();
  start($("name-input").value);
});

const named = new URLSearchParams(window.location.search).get("annotator");
setBusy(false);
if (named) start(named);
else { $("naming").hidden = false; $("name-input").focus(); }
