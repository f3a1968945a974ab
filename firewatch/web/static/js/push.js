/* Live changes from GET /api/events (server-sent events), read with fetch so the bearer token
 * travels in a header (EventSource cannot send one).
 *
 * On every (re)connection the server says "ready"; the page then reloads its snapshot with
 * `load()` while events are held back, and the held events are applied afterwards.  Events are
 * whole rows in commit order, so replaying them over the snapshot always ends at the latest state.
 */

import { authHeaders, toLogin, token } from "./api.js";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function parse(block) {
  let kind = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue; // heartbeat
    if (line.startsWith("event:")) kind = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
  }
  return { kind, data: data.length ? JSON.parse(data.join("\n")) : null };
}

/**
 * @param {{load: () => Promise<void>, on: Object<string, (row) => void>, status?: (s) => void}} opts
 *   status gets "connecting" | "ok" | "down".
 */
export function subscribe({ load, on, status = () => {} }) {
  let stopped = false;
  let ctrl = null;
  let held = null; // events that arrived while the snapshot loads

  function deliver(event) {
    if (held) held.push(event);
    else on[event.kind]?.(event.data);
  }

  let loading = false;
  let again = false;
  async function resync() {
    if (loading) { again = true; return; } // reload once more when this load is done
    loading = true;
    held = [];
    try {
      do { again = false; await load(); } while (again);
    } finally {
      loading = false;
      const events = held;
      held = null;
      for (const e of events) deliver(e);
    }
  }

  async function connect() {
    ctrl = new AbortController();
    const res = await fetch("/api/events", {
      headers: authHeaders({ Accept: "text/event-stream" }), signal: ctrl.signal, cache: "no-store",
    });
    if (res.status === 401) return toLogin();
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = parse(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (event.kind === "ready" || event.kind === "resync") {
          status("ok");
          resync().catch(() => status("down"));
        } else {
          deliver(event);
        }
      }
    }
  }

  (async () => {
    let failures = 0;
    while (!stopped) {
      if (!token()) return toLogin();
      status(failures ? "down" : "connecting");
      try {
        await connect();
        failures = 0;
      } catch {
        failures += 1;
      }
      if (stopped) return;
      status("down");
      await sleep(Math.min(5000, 500 * 2 ** Math.min(failures, 4)));
    }
  })();

  return { stop() { stopped = true; ctrl?.abort(); } };
}
