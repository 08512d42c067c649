// The service's HTTP API as the console uses it: the key in a header (never in a URL), JSON
// errors turned into exceptions, and task streams read with fetch so they can carry the key.

const KEY = "mcp-orchestrator.api-key";

// The API lives where the console does, minus "/ui/…": "" locally, "/mcp" behind Caddy.
export const base = location.pathname.replace(/\/ui(\/.*)?$/, "");

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error;
    this.details = (body && body.details) || {};
  }
}

export const key = {
  get: () => sessionStorage.getItem(KEY) || "",
  set: (value) => sessionStorage.setItem(KEY, value),
  clear: () => sessionStorage.removeItem(KEY),
};

let onUnauthorized = async () => false;
export function whenUnauthorized(handler) { onUnauthorized = handler; }

function headers(extra = {}) {
  const out = { Accept: "application/json", ...extra };
  if (key.get()) out["X-API-Key"] = key.get();
  return out;
}

// One request; on 401 the console asks for a key (saying so when the last one was refused)
// and tries again with it, a few times at most.
export async function request(method, path, body, { accept } = {}) {
  let response;
  for (let attempt = 0; ; attempt += 1) {
    const init = { method, headers: headers(accept ? { Accept: accept } : {}) };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    response = await fetch(base + path, init);
    if (response.status !== 401 || attempt >= 3 || !await onUnauthorized(key.get() !== "")) break;
  }
  if (!response.ok) {
    let payload = null;
    try { payload = await response.json(); } catch { /* not JSON: the status says enough */ }
    throw new ApiError(response.status, payload);
  }
  return response;
}

export const getJSON = async (path) => (await request("GET", path)).json();
export const postJSON = async (path, body) => (await request("POST", path, body)).json();

// Reads a task's SSE stream with fetch, resuming after a lost connection with Last-Event-ID
// (the service replays what was missed). `onEvent` gets each event once, in id order.
export function streamTask(taskId, { lastId = 0, onEvent, onState }) {
  let stopped = false;
  let controller = null;
  let last = lastId;

  async function once() {
    controller = new AbortController();
    const init = { headers: headers({ Accept: "text/event-stream" }), signal: controller.signal };
    if (last) init.headers["Last-Event-ID"] = String(last);
    const response = await fetch(`${base}/stream/${encodeURIComponent(taskId)}`, init);
    if (response.status === 401) {
      if (await onUnauthorized(key.get() !== "")) return "retry";
      throw new ApiError(401, { message: "an API key is needed" });
    }
    if (response.status === 503) return "retry";  // streams at capacity: Retry-After
    if (!response.ok) {
      let payload = null;
      try { payload = await response.json(); } catch { /* the status says enough */ }
      throw new ApiError(response.status, payload);
    }
    onState("live");
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let current = {};
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).replace(/\r$/, "");
        buffer = buffer.slice(newline + 1);
        if (line === "") {
          if (current.data !== undefined) {
            const event = JSON.parse(current.data);
            const id = Number(current.id || event.id);
            if (id > last) {  // never shown twice, whatever a resumed stream replays
              last = id;
              if (onEvent(event) === "end") return "end";
            }
          }
          current = {};
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const data = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          current[field] = current[field] !== undefined && field === "data" ? `${current[field]}\n${data}` : data;
        }
      }
    }
    return "closed";
  }

  (async () => {
    let delay = 500;
    while (!stopped) {
      let outcome;
      try {
        outcome = await once();
      } catch (error) {
        if (stopped || error.name === "AbortError") return;
        if (error instanceof ApiError && error.status !== 503) { onState("error", error); return; }
        outcome = "retry";
      }
      if (outcome === "end" || stopped) { onState("ended"); return; }
      onState("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 5000);
    }
  })();

  return {
    stop() { stopped = true; if (controller) controller.abort(); },
    get lastId() { return last; },
  };
}

// A file from the service (it needs the key header, so not a plain link), saved by the browser.
export async function download(path, filename) {
  const response = await request("GET", path, undefined, { accept: "*/*" });
  const blob = await response.blob();
  const disposition = response.headers.get("Content-Disposition") || "";
  const named = /filename="?([^";]+)"?/.exec(disposition);
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = named ? named[1] : filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}
