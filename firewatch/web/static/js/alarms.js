/* Alarms: the open ones (acknowledge with what it was and a note; close a cleared one with a
 * note) and the history; both kept live by push. */

import { api } from "./api.js";
import { subscribe } from "./push.js";
import { showConnection, startPage, toast, touched } from "./shell.js";
import {
  $, ALARM_STATUS_ZH, CLASSIFICATION_ZH, SEVERITY_ZH, alarmModeChip, alarmSubject, alarmValueText, classificationText, esc,
  fmtDateTime, parseTime, setText, syncList, upsert,
} from "./vocab.js";

const me = await startPage("alarms");
const OPEN = new Set(["active", "acknowledged", "cleared"]); // cleared: waiting to be closed
const STEPS = { active: ["acknowledge", "确认报警"], cleared: ["close", "关闭报警"] };
let live = [];
let history = [];
const liveItems = new Map();
const historyItems = new Map();

/** The classification a confirmation needs: for acknowledging, and for closing an alarm that
 * nobody acknowledged (closing confirms it). */
function classificationSelect(a, step) {
  if (step[0] === "close" && a.acknowledged_at) return "";
  return `<select name="classification" required aria-label="报警性质"><option value="">请选择报警性质</option>` +
    Object.entries(CLASSIFICATION_ZH).map(([v, label]) => `<option value="${v}">${esc(label)}</option>`).join("") +
    "</select>";
}

function liveHtml(a) {
  const sev = a.severity === "fault" ? "fault" : "alarm";
  const value = alarmValueText(a);
  const step = me.permissions.acknowledge && STEPS[a.status];
  return `<div class="li-head"><span class="chip status-${esc(a.status)}">${esc(ALARM_STATUS_ZH[a.status])}</span>` +
    `<span class="chip sev-${sev}">${esc(SEVERITY_ZH[a.severity] || SEVERITY_ZH[sev])}</span>` +
    `<span class="li-inst">${esc(a.institution_name)}</span>` +
    `<time datetime="${esc(a.raised_at)}">${esc(fmtDateTime(parseTime(a.raised_at)))}</time></div>` +
    `<div class="li-title">${esc(a.title)}${alarmModeChip(a)}${value ? ` <span class="li-value">${esc(value)}</span>` : ""}</div>` +
    `<div class="li-sub">${a.device_id ? "设备 " : ""}${alarmSubject(a)} · 报警编号 #${a.id}</div>` +
    (a.acknowledged_by ? `<div class="li-foot">确认人 <b>${esc(a.acknowledged_by)}</b> · ${esc(fmtDateTime(parseTime(a.acknowledged_at)))}` +
      ` · <span class="classification">${esc(classificationText(a))}</span>` +
      `${a.ack_note ? ` · ${esc(a.ack_note)}` : ""}</div>` : "") +
    (step ? `<form class="ack-form" data-alarm-id="${a.id}" data-step="${step[0]}">${classificationSelect(a, step)}<textarea name="note" rows="2" ` +
      `maxlength="500" placeholder="处置说明，如：已到场确认，误按；已关闭燃气阀门…"></textarea>` +
      `<button type="submit" class="primary">${step[1]}</button></form>` : "");
}

function historyHtml(a) {
  return `<td>#${a.id}</td><td><span class="chip status-${esc(a.status)}">${esc(ALARM_STATUS_ZH[a.status])}</span></td>` +
    `<td>${esc(fmtDateTime(parseTime(a.raised_at)))}</td><td>${esc(a.institution_name)}</td>` +
    `<td>${alarmSubject(a)}</td><td>${esc(a.title)}${alarmModeChip(a)}</td>` +
    `<td>${esc(alarmValueText(a))}</td><td>${esc(a.acknowledged_by || "")}</td><td>${esc(classificationText(a))}</td><td>${esc(a.ack_note || "")}</td>` +
    `<td>${esc(fmtDateTime(parseTime(a.cleared_at)))}</td>`;
}

function draw() {
  syncList($("live-list"), liveItems, live, liveHtml, (a) => ({ alarmId: a.id, status: a.status, severity: a.severity }));
  syncList($("history-body"), historyItems, history, historyHtml, (a) => ({ alarmId: a.id, status: a.status }), "tr");
  setText($("active-count"), live.filter((a) => a.status === "active").length);
  setText($("acked-count"), live.filter((a) => a.status === "acknowledged").length);
  setText($("cleared-count"), live.filter((a) => a.status === "cleared").length);
  $("live-empty").hidden = live.length > 0;
  touched();
}

function historyQuery() {
  const status = $("history-status").value;
  return `/api/alarms?limit=${$("history-limit").value}${status ? `&status=${status}` : ""}`;
}

async function load() {
  [live, history] = await Promise.all([
    api("/api/alarms?status=active&status=acknowledged&status=cleared&limit=1000"), api(historyQuery()),
  ]);
  draw();
  document.body.dataset.ready = "true";
}

function onAlarm(a) {
  live = upsert(live, a).filter((x) => OPEN.has(x.status));
  const status = $("history-status").value;
  if (!status || status === a.status || history.some((x) => x.id === a.id)) {
    history = upsert(history, a).filter((x) => !status || x.status === status);
  }
  draw();
}

$("live-list").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = ev.target.closest("form.ack-form");
  const button = form.querySelector("button");
  button.disabled = true;
  try {
    const alarm = await api(`/api/alarms/${form.dataset.alarmId}/${form.dataset.step}`, {
      method: "POST",
      json: { note: form.note.value.trim(), ...(form.classification ? { classification: form.classification.value } : {}) },
    });
    onAlarm(alarm);
    toast(`报警 #${alarm.id} ${ALARM_STATUS_ZH[alarm.status]}`);
  } catch (err) {
    toast(`操作失败：${err.message}`, "error");
    button.disabled = false;
  }
});
for (const id of ["history-status", "history-limit"]) {
  $(id).addEventListener("change", async () => { history = await api(historyQuery()); draw(); });
}

subscribe({ load, on: { alarm: onAlarm }, status: showConnection });
