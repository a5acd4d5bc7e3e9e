// banger's web UI: the same /v1 API as the CLI, a server-sent event
// stream for the live list. Everything that came from the daemon (and so
// from guests and images) goes into the page as text (textContent), never
// as markup.
"use strict";

const TOKEN = document.querySelector('meta[name="banger-token"]').content;
const CONSOLE_LINES = 5000;
const CONSOLE_LINE_CHARS = 2000;
const $ = (id) => document.getElementById(id);
const samples = new Map(); // pid -> [cpu_secs, ms]
let lost = false;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function say(text, error) {
  const m = $("message");
  m.textContent = text;
  m.className = error ? "err" : "";
}

function headers(json) {
  const h = { "X-Banger-Token": TOKEN };
  if (json) h["Content-Type"] = "application/json";
  return h;
}

async function errorOf(resp) {
  try {
    const body = await resp.json();
    return body.error.message;
  } catch (_) {
    return "bangerd answered " + resp.status;
  }
}

async function call(method, path, body) {
  const resp = await fetch(path, {
    method,
    headers: headers(body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!resp.ok) throw new Error(await errorOf(resp));
  return resp.json();
}

// A long operation: its NDJSON progress events drawn as a bar until the
// terminal `done` or `failed`.
async function operation(title, path, body, describe) {
  const row = el("div", null, "op");
  const label = el("span", title + "…");
  const bar = el("progress");
  row.append(bar, " ", label);
  $("ops").append(row);
  try {
    const resp = await fetch(path, { method: "POST", headers: headers(true), body: JSON.stringify(body) });
    if (!resp.ok) throw new Error(await errorOf(resp));
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error("the operation ended without a result");
      buf += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        const ev = JSON.parse(line);
        if (ev.event === "phase") {
          label.textContent = title + ": " + ev.message;
          bar.removeAttribute("value");
        } else if (ev.event === "progress" && ev.total) {
          bar.max = ev.total;
          bar.value = ev.done;
        } else if (ev.event === "info" || ev.event === "warning") {
          say(ev.message, false);
        } else if (ev.event === "done") {
          say(describe(ev.result), false);
          return;
        } else if (ev.event === "failed") {
          throw new Error(ev.error.message);
        }
      }
    }
  } catch (e) {
    say(title + ": " + e.message, true);
  } finally {
    row.remove();
  }
}

async function short(title, method, path, done) {
  say(title + "…", false);
  try {
    await call(method, path, method === "POST" ? {} : undefined);
    say(done, false);
  } catch (e) {
    say(title + ": " + e.message, true);
  }
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i === 0 ? n + " B" : n.toFixed(1) + " " + units[i];
}

function uptime(s) {
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m";
  if (s < 86400) return Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0");
  return Math.floor(s / 86400) + "d" + Math.floor(s % 86400 / 3600) + "h";
}

function button(text, action) {
  const b = el("button", text);
  b.addEventListener("click", action);
  return b;
}

const seg = encodeURIComponent;

function renderVms(vms, stats) {
  const now = Date.now();
  const body = $("vms").tBodies[0];
  const rows = [];
  for (const vm of vms) {
    const s = stats[vm.name] || {};
    let cpu = "";
    if (s.pid && s.cpu_secs !== undefined && s.cpu_secs !== null) {
      const prev = samples.get(s.pid);
      if (prev && now > prev[1]) cpu = Math.max(0, (s.cpu_secs - prev[0]) / ((now - prev[1]) / 1000) * 100).toFixed(0);
      samples.set(s.pid, [s.cpu_secs, now]);
    }
    const tr = el("tr", null, vm.state);
    tr.dataset.name = vm.name;
    tr.append(
      el("td", vm.name, "name"),
      el("td", vm.state + (vm.ephemeral ? " (--rm)" : "")),
      el("td", vm.ip || ""),
      el("td", vm.image),
      el("td", vm.vcpu, "num"),
      el("td", vm.memory_mib + " MiB", "num"),
      el("td", cpu, "num"),
      el("td", s.rss_bytes ? bytes(s.rss_bytes) : "", "num"),
      el("td", s.uptime_secs !== undefined && s.uptime_secs !== null ? uptime(s.uptime_secs) : "", "num"),
    );
    const actions = el("td");
    const n = vm.name;
    actions.append(
      button("start", () => operation("starting " + n, "/v1/vms/" + seg(n) + "/start", {}, () => "VM " + n + " is running")),
      button("stop", () => short("stopping " + n, "POST", "/v1/vms/" + seg(n) + "/stop", "VM " + n + " stopped")),
      button("restart", () => operation("restarting " + n, "/v1/vms/" + seg(n) + "/restart", {}, () => "VM " + n + " restarted")),
      button("delete", () => {
        if (confirm("Delete VM " + n + "? Its disks, and what is on them, are lost.")) {
          if (consoleVm === n) closeConsole();
          short("deleting " + n, "DELETE", "/v1/vms/" + seg(n) + "?force=true", "deleted VM " + n);
        }
      }),
      button("logs", () => openConsole(n)),
    );
    actions.querySelectorAll("button").forEach((b) => b.dataset.action = b.textContent);
    tr.append(actions);
    rows.push(tr);
  }
  body.replaceChildren(...rows);
  $("vms-empty").hidden = vms.length > 0;
}

function renderRecords(id, records, cells, kind) {
  const rows = records.map((r) => {
    const tr = el("tr");
    for (const c of cells(r)) tr.append(el("td", c));
    const td = el("td");
    td.append(button("delete", () => {
      if (confirm("Delete " + kind + " " + r.name + "?")) {
        short("deleting " + r.name, "DELETE", "/v1/" + kind + "s/" + seg(r.name), "deleted " + kind + " " + r.name);
      }
    }));
    tr.append(td);
    return tr;
  });
  $(id).tBodies[0].replaceChildren(...rows);
}

function render(state) {
  renderVms(state.vms, state.stats || {});
  renderRecords("images", state.images, (i) => [i.name, i.kernel, i.state, i.source], "image");
  renderRecords("kernels", state.kernels, (k) => [k.name, k.version, k.state, k.source], "kernel");
}

function setStatus(text, cls) {
  const s = $("status");
  s.textContent = text;
  s.className = cls;
}

function live() {
  const events = new EventSource("/web/events");
  events.addEventListener("state", (e) => {
    if (lost) say("reconnected to bangerd", false);
    lost = false;
    setStatus("● bangerd", "ok");
    render(JSON.parse(e.data));
  });
  events.addEventListener("failure", (e) => setStatus(e.data, "err"));
  // EventSource tries again by itself; a restarted bangerd is found again.
  events.onerror = () => {
    lost = true;
    setStatus("bangerd not answering: reconnecting…", "err");
  };
}

// --- console ---
let consoleVm = null;
let consoleAbort = null;
let consoleLines = [];
let consoleOpen = "";
let consoleDropped = 0;
let consoleDirty = false;
let consoleEnded = "";

function pushLine(line) {
  consoleLines.push(line);
  if (consoleLines.length > CONSOLE_LINES) {
    consoleLines.splice(0, consoleLines.length - CONSOLE_LINES);
    consoleDropped = consoleDropped + 1;
  }
}

function feedConsole(text) {
  const parts = (consoleOpen + text).split("\n");
  consoleOpen = parts.pop();
  for (const p of parts) pushLine(p.replace(/\r$/, ""));
  while (consoleOpen.length > CONSOLE_LINE_CHARS) {
    pushLine(consoleOpen.slice(0, CONSOLE_LINE_CHARS));
    consoleOpen = consoleOpen.slice(CONSOLE_LINE_CHARS);
  }
  consoleDirty = true;
}

function drawConsole() {
  if (consoleDirty && consoleVm) {
    consoleDirty = false;
    const pre = $("console-text");
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    // Text, not markup: escape sequences and tags a guest prints are shown.
    pre.textContent = consoleLines.join("\n") + (consoleOpen ? "\n" + consoleOpen : "");
    if (atEnd) pre.scrollTop = pre.scrollHeight;
    const dropped = consoleDropped ? "(" + consoleDropped + " earlier lines dropped) " : "";
    $("console-note").textContent = dropped + consoleEnded;
  }
  setTimeout(drawConsole, 200);
}

async function openConsole(name) {
  closeConsole();
  consoleVm = name;
  consoleAbort = new AbortController();
  $("console").hidden = false;
  $("console-vm").textContent = name;
  try {
    const resp = await fetch("/v1/vms/" + seg(name) + "/logs?follow=true", { headers: headers(false), signal: consoleAbort.signal });
    if (!resp.ok) throw new Error(await errorOf(resp));
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      feedConsole(decoder.decode(value, { stream: true }));
    }
    if (consoleVm === name) endConsole("(the console stream ended)");
  } catch (e) {
    if (e.name !== "AbortError" && consoleVm === name) endConsole("(" + e.message + ")");
  }
}

function endConsole(why) {
  consoleEnded = why;
  consoleDirty = true;
}

function closeConsole() {
  if (consoleAbort) consoleAbort.abort();
  consoleVm = null;
  consoleAbort = null;
  consoleLines = [];
  consoleOpen = "";
  consoleDropped = 0;
  consoleEnded = "";
  $("console").hidden = true;
}

// --- forms and tabs ---
async function openCreate() {
  const form = $("create-form");
  try {
    const d = await call("GET", "/v1/defaults");
    form.vcpu.value = d.vcpu.value;
    form.memory_mib.value = d.memory_mib.value;
    form.disk_size.value = d.disk_size.value;
  } catch (_) { /* the daemon fills gaps itself */ }
  $("create-dialog").showModal();
}

function submitCreate(e) {
  e.preventDefault();
  const f = $("create-form");
  const text = (v) => (v.trim() === "" ? null : v.trim());
  const num = (v) => (v.trim() === "" ? null : Number(v));
  const req = {
    name: text(f.name.value), image: text(f.image.value),
    vcpu: num(f.vcpu.value), memory_mib: num(f.memory_mib.value),
    disk_size: text(f.disk_size.value), nat: f.nat.checked,
  };
  $("create-dialog").close();
  operation("creating " + (req.name || "a VM"), "/v1/vms", req, (r) => "VM " + r.vm.name + " is running at " + (r.vm.ip || "?"));
}

function showTab(name) {
  for (const b of document.querySelectorAll("nav button")) b.classList.toggle("active", b.dataset.tab === name);
  for (const t of ["vms", "images", "kernels"]) $("tab-" + t).hidden = t !== name;
}

document.addEventListener("DOMContentLoaded", async () => {
  for (const b of document.querySelectorAll("nav button")) b.addEventListener("click", () => showTab(b.dataset.tab));
  $("create").addEventListener("click", openCreate);
  $("create-form").addEventListener("submit", submitCreate);
  $("create-cancel").addEventListener("click", () => $("create-dialog").close());
  $("console-close").addEventListener("click", closeConsole);
  $("build").addEventListener("click", () => operation("building the default image", "/v1/images/build", {}, (r) => "image " + r.name + " is ready"));
  $("pull").addEventListener("click", () => {
    const entry = prompt("A catalog entry or an OCI reference:");
    if (entry) operation("pulling " + entry, "/v1/images/pull", { entry }, (r) => "image " + r.name + " is ready");
  });
  drawConsole();
  // The first list at once, then the live stream.
  try {
    const [vms, images, kernels] = await Promise.all([call("GET", "/v1/vms"), call("GET", "/v1/images"), call("GET", "/v1/kernels")]);
    render({ vms, stats: {}, images, kernels });
    setStatus("● bangerd", "ok");
  } catch (e) {
    setStatus("bangerd not answering: " + e.message, "err");
  }
  live();
  // A link to a VM's console: #logs/NAME.
  if (location.hash.startsWith("#logs/")) openConsole(decodeURIComponent(location.hash.slice(6)));
});
