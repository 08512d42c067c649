// The console's views and routes (#/, #/task/<id>, #/tasks, #/status), the ask form built
// from the orchestrators' own parameter schemas, and the API-key prompt.

import { ApiError, getJSON, key, postJSON, whenUnauthorized } from "./api.js";
import { TaskView, startCommands } from "./task.js";

const $ = (selector) => document.querySelector(selector);
const VIEWS = ["ask", "task", "tasks", "status"];
let patterns = null;
let current = null;
let tasksCursor = null;

function notify(message) {
  const notice = $("#notice");
  notice.textContent = message || "";
  notice.hidden = !message;
}

function show(view) {
  for (const name of VIEWS) $(`#view-${name}`).hidden = name !== view;
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

// -- the API key --------------------------------------------------------------------------

let pendingKey = null;

function askForKey(refused) {
  const dialog = $("#key-dialog");
  const error = $("#key-error");
  error.hidden = !refused;
  error.textContent = refused ? "That key was refused. Check it and try again." : "";
  $("#key-input").value = "";
  if (!dialog.open) dialog.showModal();
  $("#key-input").focus();
  return new Promise((resolve) => { pendingKey = resolve; });
}

whenUnauthorized((hadKey) => askForKey(hadKey));

function settleKey(value) {
  const resolve = pendingKey;
  pendingKey = null;
  if (resolve) resolve(value);
}

$("#key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("#key-input").value.trim();
  if (!value) return;
  key.set(value);
  $("#key-dialog").close();
  settleKey(true);
});
$("#key-forget").addEventListener("click", () => {
  key.clear();
  $("#key-dialog").close();
  settleKey(false);
  notify("Key forgotten.");
});
$("#key-close").addEventListener("click", () => { $("#key-dialog").close(); settleKey(false); });
$("#key-dialog").addEventListener("cancel", () => settleKey(false));
$("#key-button").addEventListener("click", () => askForKey(false).then((ok) => { if (ok) route(); }));

// -- ask ----------------------------------------------------------------------------------

function selectedKind() {
  return document.querySelector('input[name="kind"]:checked').value;
}

function schemaFor(kind) {
  const pattern = patterns && patterns.patterns.find((p) => p.name === kind);
  return (pattern && pattern.parameters && pattern.parameters.properties) || {};
}

function fitFormToKind() {
  const properties = schemaFor(selectedKind());
  for (const label of document.querySelectorAll("[data-param]")) {
    const spec = properties[label.dataset.param];
    label.hidden = !spec;
    const input = label.querySelector("input");
    if (spec) {
      if (spec.minimum !== undefined) input.min = spec.minimum;
      if (spec.maximum !== undefined) input.max = spec.maximum;
      input.placeholder = spec.default !== undefined && spec.default !== null ? `default ${spec.default}` : "";
    }
  }
  const agents = document.querySelector('input[name="num_agents"]');
  if (properties.num_agents) {
    agents.max = properties.num_agents.maximum;
    if (Number(agents.value) > Number(agents.max)) agents.value = agents.max;
  }
}

async function loadPatterns() {
  if (patterns) return patterns;
  patterns = await postJSON("/tools/list_orchestrator_patterns", {});
  const box = $("#sources");
  const rows = patterns.sources.map((source) => {
    const label = document.createElement("label");
    const input = document.createElement("input");
    input.type = "checkbox";
    input.name = "sources";
    input.value = source.name;
    input.checked = source.enabled;
    input.disabled = !source.enabled;
    const text = document.createElement("span");
    text.textContent = source.enabled ? source.name : `${source.name} — off: ${source.disabled_reason}`;
    if (!source.enabled) text.className = "hint";
    label.append(input, text);
    return label;
  });
  box.replaceChildren(box.querySelector("legend"), ...rows);
  const select = document.querySelector('select[name="provider"]');
  for (const name of patterns.providers.available) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = name === patterns.providers.default ? `${name} (default)` : name;
    select.append(option);
  }
  fitFormToKind();
  return patterns;
}

function formArguments() {
  const form = $("#ask-form");
  const kind = selectedKind();
  const properties = schemaFor(kind);
  const args = { query: form.query.value.trim() };
  const numbers = ["num_agents", "depth", "max_steps", "max_tokens", "max_cost_usd"];
  for (const name of numbers) {
    const input = form.querySelector(`[name="${name}"]`);
    if (input && input.value !== "" && properties[name] && !input.closest("[hidden]")) args[name] = Number(input.value);
  }
  const provider = form.provider.value;
  if (provider) args.provider = provider;
  if (form.model.value.trim()) args.model = form.model.value.trim();
  if (kind === "research" && properties.sources) {
    const boxes = [...form.querySelectorAll('input[name="sources"]')];
    const chosen = boxes.filter((b) => b.checked && !b.disabled).map((b) => b.value);
    if (chosen.length !== boxes.filter((b) => !b.disabled).length) args.sources = chosen;
  }
  return { kind, args };
}

function showFieldErrors(error) {
  const fields = error.details && error.details.fields;
  const text = fields
    ? Object.entries(fields).map(([name, messages]) => `${name}: ${[].concat(messages).join(", ")}`).join("; ")
    : error.message;
  const box = $("#ask-error");
  box.textContent = text;
  box.hidden = false;
}

$("#ask-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("#ask-error").hidden = true;
  const form = event.currentTarget;
  if (form.query.value.trim().length < 3) {
    showFieldErrors({ message: "Question: write at least three characters." });
    form.query.focus();
    return;
  }
  const button = form.querySelector('button[type="submit"]');
  button.disabled = true;
  try {
    const { kind, args } = formArguments();
    const handle = await postJSON(`/tools/orchestrate_${kind}`, args);
    sessionStorage.setItem(`mcp-orchestrator.args.${handle.task_id}`, JSON.stringify({ kind, args }));
    location.hash = `#/task/${handle.task_id}`;
  } catch (error) {
    showFieldErrors(error);
  } finally {
    button.disabled = false;
  }
});
for (const radio of document.querySelectorAll('input[name="kind"]')) radio.addEventListener("change", fitFormToKind);

// -- a task -------------------------------------------------------------------------------

async function openTask(taskId) {
  if (current && current.taskId === taskId) return;
  if (current) current.close();
  current = new TaskView(taskId, { notify });
  show("task");
  try {
    await current.open();
  } catch (error) {
    notify(error instanceof ApiError && error.status === 404 ? "No such task (or it belongs to another key)." : error.message);
  }
}

$("#cancel-button").addEventListener("click", () => current && current.cancel());

async function copyCommand(which) {
  if (!current) return;
  const saved = JSON.parse(sessionStorage.getItem(`mcp-orchestrator.args.${current.taskId}`) || "null");
  const { kind, args } = saved || { kind: current.orchestrator || "research", args: { query: $("#task-title").textContent } };
  const text = startCommands(kind, args)[which];
  try {
    await navigator.clipboard.writeText(text);
    notify(which === "curl" ? "curl command copied." : "MCP tools/call copied.");
  } catch {
    notify(text);  // no clipboard permission: show it to copy by hand
  }
}
$("#copy-curl").addEventListener("click", () => copyCommand("curl"));
$("#copy-mcp").addEventListener("click", () => copyCommand("mcp"));

// -- the task list ------------------------------------------------------------------------

function taskRow(task) {
  const row = document.createElement("tr");
  const link = document.createElement("a");
  link.href = `#/task/${task.task_id}`;
  link.textContent = task.title || task.query;
  const cells = [link, task.status, task.orchestrator, new Date(task.created_at * 1000).toLocaleString()];
  for (const value of cells) {
    const cell = document.createElement("td");
    cell.append(value);
    row.append(cell);
  }
  return row;
}

async function loadTasks(more) {
  const status = $("#status-filter").value;
  const params = new URLSearchParams({ limit: "20" });
  if (status) params.set("status", status);
  if (more && tasksCursor) params.set("cursor", tasksCursor);
  const page = await getJSON(`/tasks?${params}`);
  const body = $("#tasks-table tbody");
  const rows = page.tasks.map(taskRow);
  if (more) body.append(...rows);
  else body.replaceChildren(...rows);
  tasksCursor = page.next_cursor;
  $("#more-tasks").hidden = !tasksCursor;
}
$("#status-filter").addEventListener("change", () => loadTasks(false).catch((e) => notify(e.message)));
$("#more-tasks").addEventListener("click", () => loadTasks(true).catch((e) => notify(e.message)));

// -- status -------------------------------------------------------------------------------

function definitionList(pairs) {
  const list = document.createElement("dl");
  list.className = "kv";
  for (const [term, value] of pairs) {
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    dd.textContent = value;
    list.append(dt, dd);
  }
  return list;
}

async function loadStatus() {
  const health = await getJSON("/health").catch((e) => ({ status: `unreachable (${e.message})`, checks: {} }));
  const stats = await getJSON("/stats");
  const checks = health.checks || {};
  const sources = Object.entries(checks.sources || {}).map(([name, s]) => `${name}: ${s.status}`).join(", ");
  const streams = health.streams ? `${health.streams.open ?? health.active_streams} of ${health.streams.capacity ?? "?"}`
    : String(health.active_streams ?? stats.active_streams);
  const heading = (text) => { const h = document.createElement("h3"); h.textContent = text; return h; };
  $("#status-body").replaceChildren(
    heading("Service"),
    definitionList([["Health", health.status], ["Version", health.version || ""], ["Uptime", `${Math.round(health.uptime || 0)} s`],
      ["Store", checks.store ? `${checks.store.backend || ""} ${checks.store.status}` : "?"],
      ["Provider", checks.provider ? checks.provider.default : "?"], ["Sources", sources], ["Streams", streams],
      ["Webhooks", String(stats.registered_webhooks)]]),
    heading("Tasks"),
    definitionList(Object.entries(stats.tasks || {}).map(([k, v]) => [k, String(v)])),
    heading("Workers"),
    definitionList((stats.workers || []).map((w) => [w.worker, `${w.running_tasks} tasks · ${w.active_streams} streams`])));
}

// -- routes -------------------------------------------------------------------------------

async function route() {
  const hash = location.hash || "#/";
  if (!hash.startsWith("#/")) return;  // an in-page link (a citation), not a route
  notify("");
  const [, view, id] = hash.slice(1).split("/");
  try {
    if (view === "task" && id) {
      await openTask(decodeURIComponent(id));
      return;
    }
    if (current) { current.close(); current = null; }
    if (view === "tasks") {
      show("tasks");
      await loadTasks(false);
    } else if (view === "status") {
      show("status");
      await loadStatus();
    } else {
      show("ask");
      await loadPatterns();
    }
  } catch (error) {
    notify(error instanceof ApiError && error.status === 401 ? "An API key is needed: use the API key button." : error.message);
  }
}

window.addEventListener("hashchange", route);
route();
