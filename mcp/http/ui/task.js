// One task, drawn from its event stream alone: the tree (plan → rounds → agents → steps →
// syntheses), the progress bar, the timeline of agents and synthesis levels, usage so far,
// the event list; then the cited report, the sources and the downloads when it ends.

import { ApiError, base, download, getJSON, key, request, streamTask } from "./api.js";
import { reportHTML, safeLink } from "./render.js";

const TERMINAL = new Set(["workflow_complete", "workflow_error", "workflow_cancelled"]);
const END_STATUS = { workflow_complete: "completed", workflow_error: "failed", workflow_cancelled: "cancelled" };
const FORMATS = [["md", "Markdown"], ["html", "HTML"], ["pdf", "PDF"], ["docx", "Word"]];

const $ = (selector) => document.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

export class TaskView {
  constructor(taskId, { notify }) {
    this.taskId = taskId;
    this.notify = notify;
    this.stream = null;
    this.status = "pending";
    this.events = [];
    this.subtasks = new Map();   // subtask_id -> {title, round, parent}
    this.rounds = new Map();     // round -> {subtasks, gaps, done}
    this.agents = new Map();     // agent_id -> {subtask_id, title, state, steps[], start, end, extra}
    this.syntheses = new Map();  // synthesis_id -> {level, state, start, end}
    this.t0 = null;
    this.orchestrator = null;
  }

  async open() {
    this.reset();
    const status = await getJSON(`/tasks/${encodeURIComponent(this.taskId)}`);
    this.orchestrator = status.orchestrator;
    $("#task-title").textContent = status.title || status.query;
    $("#task-id").textContent = this.taskId;
    this.setStatus(status.status);
    this.stream = streamTask(this.taskId, {
      onEvent: (event) => this.onEvent(event),
      onState: (state, error) => this.onStreamState(state, error),
    });
  }

  close() {
    if (this.stream) this.stream.stop();
    this.stream = null;
  }

  reset() {
    $("#tree").replaceChildren();
    $("#timeline").replaceChildren();
    $("#event-list").replaceChildren();
    $("#event-count").textContent = "0";
    $("#usage").textContent = "";
    const report = $("#report");
    report.setAttribute("aria-busy", "true");
    report.replaceChildren(el("p", { class: "hint", text: "The report appears here when the synthesis has written it." }));
    $("#downloads").hidden = true;
    $("#sources-section").hidden = true;
    $("#sources-table tbody").replaceChildren();
    this.setProgress(0);
  }

  onStreamState(state, error) {
    if (state === "reconnecting") this.notify("Connection lost; reconnecting…");
    else if (state === "live") this.notify("");
    else if (state === "error") this.notify(error.message || "The stream failed.");
  }

  onEvent(event) {
    this.events.push(event);
    const data = event.data || {};
    const at = event.timestamp;
    if (this.t0 === null) this.t0 = at;
    const item = el("li", { value: String(event.id) },
      `${event.event_type}${event.agent_id ? ` · ${event.agent_id}` : ""}`);
    item.dataset.id = String(event.id);
    $("#event-list").append(item);
    $("#event-count").textContent = String(this.events.length);
    if (typeof event.progress === "number") this.setProgress(event.progress);

    switch (event.event_type) {
      case "workflow_start":
      case "workflow_resumed":
        this.setStatus("running");
        break;
      case "decomposition_complete":
        for (const s of data.subtasks || []) {
          this.subtasks.set(s.subtask_id, { title: s.title, round: s.round || 1, parent: s.parent || null });
        }
        break;
      case "round_start":
        this.rounds.set(data.round, { subtasks: data.subtasks || [], gaps: [], done: false });
        for (const s of data.subtasks || []) {
          if (typeof s === "object" && s.subtask_id) {
            this.subtasks.set(s.subtask_id, { title: s.title, round: data.round, parent: s.parent || null });
          }
        }
        break;
      case "round_complete":
        if (this.rounds.has(data.round)) this.rounds.get(data.round).done = true;
        break;
      case "review_complete":
        if (!this.rounds.has(data.round)) this.rounds.set(data.round, { subtasks: [], gaps: [], done: true });
        this.rounds.get(data.round).gaps = data.gaps || [];
        break;
      case "agent_start": {
        const subtask = this.subtasks.get(data.subtask_id) || {};
        this.agents.set(event.agent_id, {
          subtask_id: data.subtask_id, title: data.title || subtask.title || data.agent_type || event.agent_id,
          round: data.round || subtask.round || 1, state: "running", steps: [], start: at, end: null, extra: "",
        });
        break;
      }
      case "agent_step": {
        const agent = this.agents.get(event.agent_id);
        if (agent) agent.steps.push(data);
        break;
      }
      case "agent_progress":
        if (this.agents.has(event.agent_id)) this.agents.get(event.agent_id).tokens = data.tokens || 0;
        break;
      case "agent_complete":
      case "agent_error": {
        const agent = this.agents.get(event.agent_id) || { title: event.agent_id, steps: [], start: at };
        agent.state = event.event_type === "agent_complete" ? "completed" : "failed";
        agent.end = at;
        agent.extra = event.event_type === "agent_error" ? data.error || ""
          : [data.citations !== undefined ? `${data.citations} citations` : null,
             data.results !== undefined ? `${data.results} results` : null,
             data.execution_time !== undefined ? `${data.execution_time} s` : null].filter(Boolean).join(" · ");
        this.agents.set(event.agent_id, agent);
        break;
      }
      case "synthesis_start":
        this.syntheses.set(data.synthesis_id, { level: data.level, state: "running", start: at, end: null });
        break;
      case "synthesis_complete": {
        const synthesis = this.syntheses.get(data.synthesis_id) || { level: data.level, start: at };
        synthesis.state = "completed";
        synthesis.end = at;
        this.syntheses.set(data.synthesis_id, synthesis);
        this.loadReport(true);
        break;
      }
      case "budget_exhausted":
        this.notify(`Budget exhausted: ${data.reason || ""}`);
        break;
      default:
        break;
    }
    this.now = at;
    this.drawTree();
    this.drawTimeline();
    this.drawUsage(data);
    if (TERMINAL.has(event.event_type)) {
      this.setStatus(END_STATUS[event.event_type]);
      if (event.event_type === "workflow_complete") this.setProgress(100);
      this.finish();
      return "end";
    }
    return undefined;
  }

  setStatus(status) {
    this.status = status;
    const state = $("#task-state");
    state.textContent = status;
    state.className = `state ${status}`;
    $("#cancel-button").disabled = !["pending", "running"].includes(status);
  }

  setProgress(value) {
    const pct = Math.max(0, Math.min(100, Math.round(value)));
    const bar = $("#progress");
    bar.setAttribute("aria-valuenow", String(pct));
    bar.querySelector(".bar").style.width = `${pct}%`;
    $("#progress-text").textContent = `${pct} %`;
  }

  drawUsage(data) {
    const usage = data.usage;
    const agentsDone = [...this.agents.values()].filter((a) => a.state !== "running").length;
    const tokens = [...this.agents.values()].reduce((sum, a) => sum + (a.tokens || 0), 0);
    const parts = [`${agentsDone}/${this.agents.size} agents done`];
    if (usage && typeof usage === "object" && usage.llm_calls !== undefined) {
      parts.push(`${usage.llm_calls} model calls`, `${(usage.input_tokens || 0) + (usage.output_tokens || 0)} tokens`,
        `$${Number(usage.cost_usd || 0).toFixed(4)}`);
    } else if (tokens) {
      parts.push(`${tokens} tokens streamed`);
    }
    $("#usage").textContent = parts.join(" · ");
  }

  drawTree() {
    const tree = $("#tree");
    const plan = el("li", {}, el("span", { class: `node-state ${this.subtasks.size ? "completed" : "running"}`,
      text: this.subtasks.size ? "done" : "planning" }), ` Plan: ${this.subtasks.size} subtasks`);
    const roundNumbers = [...new Set([...this.rounds.keys(), ...[...this.agents.values()].map((a) => a.round || 1)])]
      .sort((a, b) => a - b);
    const items = [plan];
    for (const round of roundNumbers) {
      const info = this.rounds.get(round);
      const agents = [...this.agents.entries()].filter(([, a]) => (a.round || 1) === round);
      const list = el("ul");
      for (const [agentId, agent] of agents) {
        const steps = el("ul");
        for (const step of agent.steps) {
          steps.append(el("li", { class: "step" }, el("span", { class: "node-state completed", text: step.action }),
            ` ${step.query || step.url || ""}`,
            el("span", { class: "node-extra", text: step.hits !== undefined ? ` · ${step.hits} hits` : "" })));
        }
        const parent = agent.subtask_id && this.subtasks.get(agent.subtask_id)?.parent;
        list.append(el("li", { class: "agent", "data-agent": agentId },
          el("span", { class: `node-state ${agent.state}`, text: agent.state }),
          ` ${agent.title}`, parent ? el("span", { class: "node-extra", text: ` (follows up: ${parent})` }) : null,
          agent.extra ? el("span", { class: "node-extra", text: ` · ${agent.extra}` }) : null,
          agent.steps.length ? steps : null));
      }
      const gaps = info && info.gaps && info.gaps.length
        ? el("li", { class: "node-extra", text: `Review: ${info.gaps.length} gaps — ${info.gaps.map((g) => (typeof g === "string" ? g : g.title || g.query)).join("; ")}` })
        : null;
      if (gaps) list.append(gaps);
      if (roundNumbers.length > 1 || this.rounds.size) items.push(el("li", { class: "round" }, `Round ${round}`, list));
      else items.push(...list.children);
    }
    for (const [id, synthesis] of this.syntheses) {
      items.push(el("li", { class: "synthesis" }, el("span", { class: `node-state ${synthesis.state}`, text: synthesis.state }),
        ` Synthesis ${id} (${synthesis.level})`));
    }
    tree.replaceChildren(...items);
  }

  drawTimeline() {
    const spans = [
      ...[...this.agents.entries()].map(([id, a]) => ({ label: a.title || id, start: a.start, end: a.end, synthesis: false })),
      ...[...this.syntheses.entries()].map(([id, s]) => ({ label: `${s.level} ${id}`, start: s.start, end: s.end, synthesis: true })),
    ];
    const timeline = $("#timeline");
    if (!spans.length || this.t0 === null) { timeline.replaceChildren(); return; }
    const end = Math.max(this.now || this.t0, ...spans.map((s) => s.end || this.now || s.start));
    const total = Math.max(end - this.t0, 0.001);
    const lanes = spans.map((span) => {
      const bar = el("div", { class: `span${span.synthesis ? " synthesis" : ""}` });
      bar.style.left = `${((span.start - this.t0) / total) * 100}%`;
      bar.style.width = `${(((span.end || end) - span.start) / total) * 100}%`;
      bar.title = `${span.label}: ${((span.end || end) - span.start).toFixed(2)} s`;
      return el("div", { class: "lane" }, el("span", { class: "label", text: span.label }), el("div", { class: "track" }, bar));
    });
    const axis = el("div", { class: "axis" }, el("span", { text: "0 s" }), el("span", { text: `${total.toFixed(1)} s` }));
    timeline.replaceChildren(...lanes, axis);
  }

  async loadReport(partial) {
    const path = `/tasks/${encodeURIComponent(this.taskId)}`;
    if (partial) {
      // While the synthesis writes, each finished level shows what the report holds so far.
      try {
        const response = await request("GET", `${path}/report?format=md&partial=1`, undefined, { accept: "text/markdown" });
        const text = await response.text();
        if (this.status !== "running") return;  // the final report won the race
        const report = $("#report");
        report.replaceChildren(el("p", { class: "notice", text: "Report in progress…" }), reportHTML(text, new Set()));
      } catch { /* no partial report yet: the final one comes at the end */ }
      return;
    }
    let result;
    try {
      result = await getJSON(`${path}/result`);
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 409)) this.notify(error.message);
      return;
    }
    this.showResult(result);
  }

  async finish() {
    this.close();
    await this.loadReport(false);
  }

  showResult(result) {
    const sources = result.sources || [];
    const ids = new Set(sources.map((s) => s.id));
    const report = $("#report");
    const body = result.final_synthesis
      ? reportHTML(result.final_synthesis, ids)
      : el("p", { class: "hint", text: result.error ? `No report: ${result.error}` : "No report." });
    const notice = result.partial
      ? el("p", { class: "notice", text: `Partial report: the task ended ${result.status}${result.error ? ` (${result.error})` : ""}.` })
      : null;
    report.replaceChildren(...[notice, body].filter(Boolean));
    report.setAttribute("aria-busy", "false");
    for (const link of report.querySelectorAll("a.cite")) {
      link.addEventListener("click", (event) => {
        event.preventDefault();
        const row = document.getElementById(`source-${link.dataset.source}`);
        if (!row) return;
        row.scrollIntoView({ block: "center" });
        row.focus({ preventScroll: true });
        for (const other of document.querySelectorAll("#sources-table tr.targeted")) other.classList.remove("targeted");
        row.classList.add("targeted");
      });
    }
    const cited = new Map();
    for (const agent of result.agent_results || []) {
      for (const c of agent.citations || []) if (c.url && !cited.has(c.url)) cited.set(c.url, c.snippet || "");
    }
    const rows = sources.map((s) => el("tr", { id: `source-${s.id}`, tabindex: "-1" },
      el("th", { scope: "row", text: s.id }),
      el("td", {}, safeLink(s.url, s.title || s.url), el("div", { class: "hint", text: s.source || "" })),
      el("td", { text: (s.found_by || []).map((f) => `${f.agent_id}${f.rank ? ` #${f.rank}` : ""}${f.pass ? ` (pass ${f.pass})` : ""}`).join(", ") }),
      el("td", { text: s.rank !== undefined && s.rank !== null ? String(s.rank) : "" }),
      el("td", { text: cited.get(s.url) || s.snippet || "" })));
    $("#sources-table tbody").replaceChildren(...rows);
    $("#sources-section").hidden = sources.length === 0;
    const verification = result.citations;
    $("#verification").textContent = verification
      ? `Citations: ${verification.verified} of ${verification.total} verified against their sources${verification.dropped ? `, ${verification.dropped} dropped` : ""}.`
      : "";
    const usage = result.usage || {};
    $("#usage").textContent = [`${(result.agent_results || []).length} agents`, `${usage.llm_calls || 0} model calls`,
      `${(usage.input_tokens || 0) + (usage.output_tokens || 0)} tokens`, `$${Number(usage.cost_usd || 0).toFixed(4)}`,
      `${result.execution_time} s`].join(" · ");
    const buttons = FORMATS.map(([format, label]) => {
      const button = el("button", { type: "button", class: "quiet", "data-format": format, text: label });
      button.addEventListener("click", () => this.download(format));
      return button;
    });
    $("#download-buttons").replaceChildren(...buttons);
    $("#downloads").hidden = false;
  }

  async download(format) {
    try {
      await download(`/tasks/${encodeURIComponent(this.taskId)}/report?format=${format}${this.status === "completed" ? "" : "&partial=1"}`,
        `${this.taskId}.${format}`);
    } catch (error) {
      this.notify(`Download failed: ${error.message}`);
    }
  }

  async cancel() {
    try {
      await request("POST", `/tasks/${encodeURIComponent(this.taskId)}/cancel`, {});
      this.notify("Cancel requested.");
    } catch (error) {
      this.notify(`Cancel failed: ${error.message}`);
    }
  }
}

// The calls that would start the same task, for a terminal or an MCP client.
export function startCommands(kind, args) {
  const origin = `${location.origin}${base}`;
  const body = JSON.stringify(args);
  const header = key.get() ? ' -H "X-API-Key: $MCP_API_KEY"' : "";
  const curl = `curl -sS -X POST '${origin}/tools/orchestrate_${kind}' -H 'Content-Type: application/json'${header} -d '${body.replace(/'/g, "'\\''")}'`;
  const mcp = JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/call",
    params: { name: `orchestrate_${kind}`, arguments: args } }, null, 2);
  return { curl, mcp };
}
