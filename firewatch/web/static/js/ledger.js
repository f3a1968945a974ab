/* The hazard ledger (重大事故隐患台账): filters, entries, an entry's timeline and the steps the
 * user's role may take, statistics charts and the Excel export. Entries stay live by push. */

import { api } from "./api.js";
import { ConfirmStats, HEADER as CONFIRM_HEADER } from "./confirm-stats.js";
import { subscribe } from "./push.js";
import { showConnection, startPage, toast, touched } from "./shell.js";
import {
  $, HAZARD_CATEGORY_ZH, HAZARD_SOURCE_ZH, HAZARD_STATUS_ZH, esc, fmtDate, fmtDateTime, parseTime,
  setText, syncList, upsert,
} from "./vocab.js";

const me = await startPage("ledger");
const form = $("filters");
let transitions = [];
let entries = [];
let selected = null; // the entry shown in the detail panel
const entryItems = new Map();

function options(select, labels) {
  select.insertAdjacentHTML("beforeend", Object.entries(labels)
    .map(([value, zh]) => `<option value="${esc(value)}">${esc(zh)}</option>`).join(""));
}

function filters() {
  const params = new URLSearchParams();
  for (const [k, v] of new FormData(form)) if (v) params.set(k, v);
  return params;
}

function matches(h) {
  return [...filters()].every(([k, v]) => String(h[k]) === v);
}

function overdue(h) {
  const d = parseTime(h.deadline);
  return d && ["reported", "rectifying"].includes(h.status) && d.getTime() < Date.now();
}

function rowHtml(h) {
  const late = overdue(h);
  return `<td>#${h.id}</td><td><span class="chip hz-${esc(h.status)}">${esc(HAZARD_STATUS_ZH[h.status] || h.status)}</span></td>` +
    `<td>${esc(h.institution_name)}</td><td>${esc(h.township)}</td><td>${esc(HAZARD_CATEGORY_ZH[h.category] || h.category)}</td>` +
    `<td>${esc(HAZARD_SOURCE_ZH[h.source] || h.source)}</td><td class="desc">${esc(h.description)}</td>` +
    `<td>${esc(h.responsible_person)}<br><span class="muted">${esc(h.responsible_phone)}</span></td>` +
    `<td class="${late ? "overdue" : ""}">${esc(fmtDate(parseTime(h.deadline)))}${late ? "（逾期）" : ""}</td>`;
}

function drawEntries() {
  syncList($("entry-body"), entryItems, entries, rowHtml, (h) => ({
    hazardId: h.id, status: h.status, selected: selected?.id === h.id,
  }), "tr");
  setText($("entry-count"), entries.length);
  $("entry-empty").hidden = entries.length > 0;
  touched();
}

async function loadEntries() {
  entries = await api(`/api/hazards?limit=1000&${filters()}`);
  drawEntries();
}

/** Steps the user may take now: the role's actions whose source status is the entry's. */
function allowedSteps(h) {
  return transitions.filter((t) => me.permissions.hazard_actions.includes(t.action) && t.sources.includes(h.status));
}

async function showEntry(h) {
  selected = h;
  $("panel-entry").hidden = false;
  $("panel-entry").dataset.hazardId = h.id;
  $("panel-entry").dataset.status = h.status;
  setText($("entry-title"), `#${h.id} · ${HAZARD_STATUS_ZH[h.status] || h.status}`);
  const fields = [
    ["单位名称", h.institution_name], ["乡镇", h.township], ["隐患描述", h.description],
    ["类别", HAZARD_CATEGORY_ZH[h.category] || h.category], ["来源", HAZARD_SOURCE_ZH[h.source] || h.source],
    ["责任单位", h.responsible_unit], ["责任人", `${h.responsible_person} ${h.responsible_phone}`],
    ["整改时限", fmtDate(parseTime(h.deadline)) + (overdue(h) ? "（逾期）" : "")],
    ["登记时间", fmtDateTime(parseTime(h.created_at))],
  ];
  if (h.device_id) fields.push(["关联设备", `<a href="/devices/${encodeURIComponent(h.device_id)}">${esc(h.device_id)}</a>`]);
  $("entry-fields").innerHTML = fields.map(([k, v]) =>
    `<dt>${esc(k)}</dt><dd>${k === "关联设备" ? v : esc(v)}</dd>`).join("");
  const steps = allowedSteps(h);
  $("entry-actions").innerHTML = steps.length
    ? `<textarea id="step-note" rows="2" maxlength="2000" placeholder="说明（可选）：整改措施、验收意见…"></textarea>` +
      steps.map((t) => `<button type="button" class="primary" data-action="${esc(t.action)}">${esc(t.label_zh)}</button>`).join("")
    : `<span class="muted">${me.permissions.hazard_actions.length ? "当前状态下没有您可执行的操作" : "您的角色只能查看台账"}</span>`;
  const events = await api(`/api/hazards/${h.id}/events`);
  $("entry-timeline").innerHTML = events.map((e) =>
    `<li data-action="${esc(e.action)}"><time>${esc(fmtDateTime(parseTime(e.at)))}</time> ` +
    `<b>${esc(e.actor)}</b> ${esc(stepLabel(e.action))}` +
    `${e.from_status ? ` <span class="muted">${esc(HAZARD_STATUS_ZH[e.from_status] || e.from_status)} → ` +
      `${esc(HAZARD_STATUS_ZH[e.to_status] || e.to_status)}</span>` : ""}` +
    `${e.note && e.note !== stepLabel(e.action) ? `<div class="note">${esc(e.note)}</div>` : ""}</li>`).join("");
  drawEntries();
}

function stepLabel(action) {
  if (action === "rise") return "报警级别升高";  // an IoT entry's alarm rose (gas low to high)
  return action === "file" ? "登记" : transitions.find((t) => t.action === action)?.label_zh || action;
}

$("entry-actions").addEventListener("click", async (ev) => {
  const button = ev.target.closest("button[data-action]");
  if (!button || !selected) return;
  button.disabled = true;
  try {
    const h = await api(`/api/hazards/${selected.id}/transitions`, {
      method: "POST", json: { action: button.dataset.action, note: $("step-note").value.trim() },
    });
    onHazard(h);
    toast(`#${h.id} ${stepLabel(button.dataset.action)}：${HAZARD_STATUS_ZH[h.status]}`);
  } catch (err) {
    toast(`操作失败：${err.message}`, "error");
    button.disabled = false;
  }
});

$("entry-body").addEventListener("click", (ev) => {
  const tr = ev.target.closest("tr[data-hazard-id]");
  if (!tr || ev.target.closest("a")) return;
  const h = entries.find((x) => String(x.id) === tr.dataset.hazardId);
  if (h) showEntry(h);
});
$("entry-close").addEventListener("click", () => { selected = null; $("panel-entry").hidden = true; drawEntries(); });

function onHazard(h) {
  entries = matches(h) ? upsert(entries, h) : entries.filter((x) => x.id !== h.id);
  drawEntries();
  if (selected?.id === h.id) showEntry(h);
  scheduleStats();
}

// ---------------------------------------------------------------- statistics

async function drawStats() {
  const by = $("stats-by").value;
  const params = filters();
  params.delete("status");
  params.set("by", by);
  const report = await api(`/api/hazards/statistics?${params}`);
  const max = Math.max(1, ...report.rows.map((r) => r.total));
  const pct = (n) => `${(100 * n) / max}%`;
  $("stats-chart").dataset.by = by;
  $("stats-chart").innerHTML = report.rows.map((r) =>
    `<div class="bar-row" data-key="${esc(r.key)}"><span class="bar-label" title="${esc(r.label)}">${esc(r.label)}</span>` +
    `<span class="bar"><span class="seg open" style="width:${pct(r.open - r.overdue)}"></span>` +
    `<span class="seg overdue" style="width:${pct(r.overdue)}"></span><span class="seg closed" style="width:${pct(r.closed)}"></span></span>` +
    `<span class="bar-nums">未销号 ${r.open}（逾期 ${r.overdue}）· 已销号 ${r.closed} · 共 ${r.total}</span></div>`).join("") ||
    '<div class="empty">暂无计入统计的隐患</div>';
  const t = report.totals;
  setText($("stats-totals"), `合计：未销号 ${t.open}，其中逾期 ${t.overdue}；已销号 ${t.closed}；共 ${t.total}（群众举报查实后计入）`);
}

// how alarms were confirmed (alerts.alarm_stats), for the alarms raised within the filters' dates
$("confirm-head").innerHTML = CONFIRM_HEADER;
const confirmStats = new ConfirmStats($("confirm-body"), $("confirm-totals"), () => {
  const params = new URLSearchParams({ by: $("confirm-by").value });
  for (const name of ["institution_id", "since", "until"]) {
    const value = filters().get(name);
    if (value) params.set(name, value);
  }
  return params;
});

let statsTimer = 0;
function scheduleStats() {
  clearTimeout(statsTimer);
  statsTimer = setTimeout(() => drawStats().catch((e) => toast(`统计失败：${e.message}`, "error")), 300);
  confirmStats.soon((e) => toast(`统计失败：${e.message}`, "error"));
}

// ---------------------------------------------------------------- export

$("export").addEventListener("click", async () => {
  const res = await api(`/api/hazards/export.xlsx?${filters()}`, { raw: true, timeoutMs: 60000 });
  const url = URL.createObjectURL(await res.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = `重大事故隐患台账-${fmtDate(new Date())}.xlsx`;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
});

// ---------------------------------------------------------------- start

options(form.status, HAZARD_STATUS_ZH);
options(form.category, HAZARD_CATEGORY_ZH);
options(form.source, HAZARD_SOURCE_ZH);
const institutions = await api("/api/institutions");
options(form.township, Object.fromEntries(institutions.map((i) => [i.township, i.township])));
options(form.institution_id, Object.fromEntries(institutions.map((i) => [i.id, i.name])));
transitions = await api("/api/hazards/transitions");
form.addEventListener("change", () => { loadEntries(); scheduleStats(); });
$("stats-by").addEventListener("change", scheduleStats);
$("confirm-by").addEventListener("change", scheduleStats);

async function load() {
  await loadEntries();
  const wanted = new URLSearchParams(location.search).get("entry");
  const entry = entries.find((h) => String(h.id) === (selected ? String(selected.id) : wanted));
  if (entry) await showEntry(entry);
  scheduleStats();
  document.body.dataset.ready = "true";
}

subscribe({ load, on: { hazard: onHazard }, status: showConnection });
