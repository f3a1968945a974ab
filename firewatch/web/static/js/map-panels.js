/* The map page's side panels: device counts per state, per township, open alarms and entries. */

import {
  $, ALARM_STATUS_ZH, HAZARD_CATEGORY_ZH, HAZARD_SOURCE_ZH, HAZARD_STATUS_ZH, KIND_ZH, SEVERITY_ZH,
  STATES, alarmModeChip, alarmSubject, alarmValueText, esc, fmtDate, fmtDateTime, parseTime, setAttr, setText, syncList, upsert,
} from "./vocab.js";

const OPEN_ALARM = new Set(["active", "acknowledged"]);
const OPEN_HAZARD = new Set(["pending-verification", "reported", "rectifying", "awaiting-verification"]);
const LIST_LIMIT = 100;

export class Panels {
  constructor(state) {
    this.state = state; // the map's {institutions, devices, byInstitution}
    this.alarms = [];
    this.hazards = [];
    this.alarmItems = new Map();
    this.hazardItems = new Map();
    this.townRows = new Map();
    this.frame = 0;
  }

  setAlarms(rows) { this.alarms = rows.filter((a) => OPEN_ALARM.has(a.status)); this.drawAlarms(); }
  setHazards(rows) { this.hazards = rows.filter((h) => OPEN_HAZARD.has(h.status)); this.drawHazards(); }

  putAlarm(a) {
    this.alarms = upsert(this.alarms, a).filter((x) => OPEN_ALARM.has(x.status)).slice(0, LIST_LIMIT);
    this.drawAlarms();
  }

  putHazard(h) {
    this.hazards = upsert(this.hazards, h).filter((x) => OPEN_HAZARD.has(x.status)).slice(0, LIST_LIMIT);
    this.drawHazards();
  }

  onFocus(callback) {
    for (const id of ["alarm-list", "hazard-list"]) {
      $(id).addEventListener("click", (ev) => {
        const li = ev.target.closest("li[data-institution-id]");
        if (li && !ev.target.closest("a")) callback(li.dataset.institutionId);
      });
    }
  }

  /** Counts and townships, at most once per animation frame however many changes arrive. */
  redraw() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => { this.frame = 0; this.drawCounts(); });
  }

  drawCounts() {
    const blank = () => ({ institutions: 0, devices: 0, ...Object.fromEntries(STATES.map((s) => [s, 0])) });
    const totals = blank();
    const worstCounts = blank();
    const towns = new Map();
    for (const inst of this.state.institutions.values()) {
      if (!towns.has(inst.township)) towns.set(inst.township, blank());
      const town = towns.get(inst.township);
      town.institutions += 1;
      const agg = this.state.byInstitution.get(inst.id);
      if (!agg) continue;
      town.devices += agg.devices.size;
      for (const s of STATES) { town[s] += agg.counts[s]; totals[s] += agg.counts[s]; }
      if (agg.worst in worstCounts) worstCounts[agg.worst] += 1;
    }
    for (const s of STATES) {
      setText($(`count-${s}`), totals[s]);
      setText($(`inst-count-${s}`), worstCounts[s]);
      setAttr(document.querySelector(`.tile[data-state="${s}"]`), "data-nonzero", totals[s] > 0);
    }
    setText($("count-total"), this.state.devices.size);
    setText($("count-institutions"), this.state.institutions.size);
    this.drawTownships(towns);
  }

  drawTownships(towns) {
    const body = $("township-body");
    const names = [...towns.keys()].sort((a, b) => a.localeCompare(b, "zh-CN"));
    if (names.length !== this.townRows.size || !names.every((n) => this.townRows.has(n))) {
      this.townRows.clear();
      body.textContent = "";
      for (const n of names) {
        const tr = document.createElement("tr");
        tr.dataset.township = n;
        tr.innerHTML = '<th scope="row"></th><td data-k="institutions"></td><td data-k="devices"></td>' +
          '<td data-k="alarm" class="c-alarm"></td><td data-k="fault" class="c-fault"></td><td data-k="offline" class="c-offline"></td>';
        tr.firstChild.textContent = n;
        body.appendChild(tr);
        this.townRows.set(n, tr);
      }
    }
    for (const n of names) {
      const row = towns.get(n);
      const tr = this.townRows.get(n);
      for (const td of tr.querySelectorAll("td")) setText(td, row[td.dataset.k]);
      setAttr(tr, "data-state", row.alarm ? "alarm" : row.fault ? "fault" : row.offline ? "offline" : "normal");
    }
  }

  drawAlarms() {
    syncList($("alarm-list"), this.alarmItems, this.alarms, (a) => this.alarmHtml(a), (a) => ({
      alarmId: a.id, status: a.status, severity: a.severity, institutionId: a.institution_id,
    }));
    const active = this.alarms.filter((a) => a.status === "active").length;
    setText($("alarm-open-count"), this.alarms.length);
    setText($("active-alarm-count"), active);
    $("active-alarm-badge").hidden = active === 0;
    $("alarm-empty").hidden = this.alarms.length > 0;
  }

  alarmHtml(a) {
    const dev = this.state.devices.get(a.device_id);
    const sev = a.severity === "fault" ? "fault" : "alarm";
    const value = alarmValueText(a);
    const where = dev ? `${KIND_ZH[dev.kind] || dev.kind} · ${dev.location}` : a.device_id;
    return `<div class="li-head"><span class="chip status-${esc(a.status)}">${esc(ALARM_STATUS_ZH[a.status] || a.status)}</span>` +
      `<span class="chip sev-${sev}">${esc(SEVERITY_ZH[a.severity] || SEVERITY_ZH[sev])}</span>` +
      `<span class="li-inst">${esc(a.institution_name)}</span>` +
      `<time datetime="${esc(a.raised_at)}">${esc(fmtDateTime(parseTime(a.raised_at)))}</time></div>` +
      `<div class="li-title">${esc(a.title)}${alarmModeChip(a)}${value ? ` <span class="li-value">${esc(value)}</span>` : ""}</div>` +
      `<div class="li-sub">${alarmSubject(a, where)}` +
      `${a.acknowledged_by ? ` · 确认人 ${esc(a.acknowledged_by)}` : ""}</div>`;
  }

  drawHazards() {
    syncList($("hazard-list"), this.hazardItems, this.hazards, (h) => this.hazardHtml(h), (h) => ({
      hazardId: h.id, status: h.status, institutionId: h.institution_id,
    }));
    setText($("hazard-open-count"), this.hazards.length);
    $("hazard-empty").hidden = this.hazards.length > 0;
  }

  hazardHtml(h) {
    const deadline = parseTime(h.deadline);
    const overdue = deadline && deadline.getTime() < Date.now();
    return `<div class="li-head"><span class="chip hz-${esc(h.status)}">${esc(HAZARD_STATUS_ZH[h.status] || h.status)}</span>` +
      `<span class="li-inst">${esc(h.institution_name)}</span><span class="li-town">${esc(h.township)}</span></div>` +
      `<div class="li-desc" title="${esc(h.description)}">${esc(h.description)}</div>` +
      `<div class="li-foot">责任人 <b>${esc(h.responsible_person)}</b> ${esc(h.responsible_phone)} · 整改时限 ` +
      `<span class="${overdue ? "overdue" : ""}">${esc(fmtDate(deadline))}${overdue ? "（逾期）" : ""}</span></div>` +
      `<div class="li-foot muted">${esc(HAZARD_CATEGORY_ZH[h.category] || h.category)} · ${esc(HAZARD_SOURCE_ZH[h.source] || h.source)} · ` +
      `<a href="/ledger?entry=${h.id}">#${esc(h.id)}</a></div>`;
  }
}
