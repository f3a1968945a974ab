/* One device: its state and current readings (live), a 24 h trend from the time-series store
 * (/api/devices/{id}/history, drawn with the vendored uPlot), and its alarms. */

import uPlot from "/static/vendor/uplot/uPlot.esm.js";
import { api } from "./api.js";
import { subscribe } from "./push.js";
import { showConnection, startPage, touched } from "./shell.js";
import {
  $, ALARM_STATUS_ZH, FLAG_ZH, KIND_ZH, MODE_ACTION_ZH, MODE_REASON_ZH, READING_ORDER, STATE_ZH, alarmModeChip,
  alarmValueText, esc, fmtAgo, fmtDateTime, fmtNum, parseTime, readingMeta, setText, syncList, upsert,
} from "./vocab.js";

const me = await startPage("device");
const deviceId = decodeURIComponent(location.pathname.split("/").pop());
const READINGS_REFRESH_MS = 5000; // readings are not pushed (they change every poll): re-read them
let device = null;
let alarms = [];
const alarmItems = new Map();
let chart = null;

function drawDevice() {
  const d = device;
  setText($("device-title"), `${KIND_ZH[d.kind] || d.kind} · ${d.location}`);
  document.title = `${d.id} — 设备`;
  const st = $("device-state");
  st.className = `st st-${d.state}`;
  st.dataset.state = d.state;
  setText(st, STATE_ZH[d.state] || d.state);
  setText($("device-meta"), `${d.institution_name} · ${d.id} · 型号 ${d.profile}`);
  setText($("device-reason"), d.condition === "normal" ? "" : d.state_reason);
  drawMode();
  const r = d.last_readings || {};
  $("readings").innerHTML = Object.keys(r).sort(READING_ORDER).map((k) => {
    const m = readingMeta(k);
    return `<div class="reading" data-field="${esc(k)}"><div class="rl">${esc(m.label)}</div>` +
      `<div class="rv"><b>${esc(fmtNum(r[k], m.digits))}</b> ${esc(m.unit)}</div></div>`;
  }).join("") + Object.entries(d.last_flags || {}).filter(([, on]) => on)
    .map(([k]) => `<div class="reading flag"><div class="rl">状态位</div><div class="rv">${esc(FLAG_ZH[k] || k)}</div></div>`).join("");
  setText($("device-seen"), `最后上报：${fmtAgo(parseTime(d.last_seen))}`);
  const select = $("trend-field");
  const fields = Object.keys(r).sort(READING_ORDER);
  if (select.options.length !== fields.length) {
    select.innerHTML = fields.map((k) => `<option value="${esc(k)}">${esc(readingMeta(k).label)}</option>`).join("");
    if (fields.length) drawTrend();
  }
  touched();
}

async function drawTrend() {
  const field = $("trend-field").value;
  if (!field) return;
  const points = await api(`/api/devices/${encodeURIComponent(deviceId)}/history?field=${encodeURIComponent(field)}&hours=24&every_s=300`);
  const meta = readingMeta(field);
  const xs = points.map((p) => parseTime(p.time).getTime() / 1000);
  const data = [xs, points.map((p) => p.mean), points.map((p) => p.min), points.map((p) => p.max)];
  const box = $("trend-chart");
  chart?.destroy();
  chart = new uPlot({
    width: Math.max(320, box.clientWidth), height: 280,
    scales: { x: { time: true, range: () => { const now = Date.now() / 1000; return [now - 86400, now]; } } },
    series: [
      {},
      { label: `${meta.label} 均值 (${meta.unit})`, stroke: "#1d4ed8", width: 2, points: { show: points.length < 30 } },
      { label: "最小", stroke: "#94a3b8", dash: [4, 4] },
      { label: "最大", stroke: "#f59e0b", dash: [4, 4] },
    ],
    axes: [{}, { label: meta.unit }],
  }, data, box);
  box.dataset.points = String(points.length);
  box.dataset.field = field;
  setText($("trend-note"), points.length
    ? `共 ${points.length} 个 5 分钟区间，数据来自时序库` : "近 24 小时暂无数据");
}

// ---------------------------------------------------------------- shielding and test mode

const allowedModes = me.permissions.device_modes; // what this account may set: shielded, test
$("mode-kind").innerHTML = allowedModes.map((m) => `<option value="${m}">${STATE_ZH[m]}</option>`).join("");

function drawMode() {
  const d = device;
  const on = d.mode !== "normal";
  setText($("mode-now"), on
    ? `${STATE_ZH[d.mode]}中，至 ${fmtDateTime(parseTime(d.mode_until))}（${MODE_REASON_ZH[d.mode_reason] || d.mode_reason}` +
      `${d.mode_note ? "：" + d.mode_note : ""}；${d.mode_by}）`
    : "未屏蔽，报警照常通知");
  $("mode-now").dataset.mode = d.mode;
  $("mode-cancel").hidden = !on || !allowedModes.includes(d.mode);
  $("mode-form").hidden = allowedModes.length === 0 || (on && !allowedModes.includes(d.mode));
}

async function loadModeEvents() {
  const events = await api(`/api/devices/${encodeURIComponent(deviceId)}/mode-events`);
  $("mode-events").innerHTML = events.map((e) =>
    `<tr data-action="${esc(e.action)}"><td>${esc(fmtDateTime(parseTime(e.at)))}</td><td>${esc(MODE_ACTION_ZH[e.action] || e.action)}</td>` +
    `<td>${esc(STATE_ZH[e.mode] || e.mode)}</td><td>${esc(MODE_REASON_ZH[e.reason] || e.reason)}${e.note ? "：" + esc(e.note) : ""}</td>` +
    `<td>${esc(fmtDateTime(parseTime(e.until)))}</td><td>${esc(e.actor)}</td></tr>`).join("");
}

async function changeMode(request) {
  setText($("mode-error"), "");
  try {
    device = await api(`/api/devices/${encodeURIComponent(deviceId)}/mode`, request);
    drawDevice();
  } catch (err) {
    setText($("mode-error"), err.message);
  }
  await loadModeEvents();
}

$("mode-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  changeMode({
    method: "POST",
    json: {
      mode: $("mode-kind").value, minutes: Number($("mode-minutes").value),
      reason: $("mode-reason").value, note: $("mode-note").value,
    },
  });
});
$("mode-cancel").addEventListener("click", () => changeMode({ method: "DELETE" }));

function alarmRow(a) {
  return `<td>#${a.id}</td><td><span class="chip status-${esc(a.status)}">${esc(ALARM_STATUS_ZH[a.status])}</span></td>` +
    `<td>${esc(fmtDateTime(parseTime(a.raised_at)))}</td><td>${esc(a.title)}${alarmModeChip(a)}</td><td>${esc(alarmValueText(a))}</td>` +
    `<td>${esc(fmtDateTime(parseTime(a.cleared_at)))}</td>`;
}

function drawAlarms() {
  syncList($("device-alarms"), alarmItems, alarms, alarmRow, (a) => ({ alarmId: a.id, status: a.status }), "tr");
}

async function load() {
  try {
    [device, alarms] = await Promise.all([
      api(`/api/devices/${encodeURIComponent(deviceId)}`),
      api(`/api/alarms?device_id=${encodeURIComponent(deviceId)}&limit=50`),
    ]);
  } catch (err) {
    if (err.status !== 404) throw err;
    setText($("device-title"), "设备不存在或无权查看");
    document.body.dataset.ready = "true";
    return;
  }
  drawDevice();
  drawAlarms();
  await loadModeEvents();
  document.body.dataset.ready = "true";
}

$("trend-field").addEventListener("change", drawTrend);
subscribe({
  load,
  on: {
    device: (d) => { if (d.id === deviceId) { device = d; drawDevice(); } },
    alarm: (a) => { if (a.device_id === deviceId) { alarms = upsert(alarms, a); drawAlarms(); } },
  },
  status: showConnection,
});
setInterval(async () => {
  if (!device) return;
  device = await api(`/api/devices/${encodeURIComponent(deviceId)}`);
  drawDevice();
}, READINGS_REFRESH_MS);
