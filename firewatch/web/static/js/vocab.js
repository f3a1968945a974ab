/* Words and formats shared by every page: Chinese labels for the API's codes, safe HTML, times. */

// worst first; shielded (屏蔽) and test (测试): a device whose alarms reach nobody for a while
export const STATES = ["alarm", "fault", "offline", "shielded", "test", "normal"];
export const STATE_RANK = { alarm: 6, fault: 5, offline: 4, shielded: 3, test: 2, normal: 1, none: 0 };
export const STATE_ZH = {
  normal: "正常", alarm: "报警", fault: "故障", offline: "离线", shielded: "屏蔽", test: "测试", none: "无设备",
};
export const STATE_COLOR = {
  alarm: "#e02424", fault: "#f59e0b", offline: "#8a94a3", shielded: "#7c3aed", test: "#0891b2",
  normal: "#16a34a", none: "#cbd5e1",
};
/** A chip on an alarm raised while its device was shielded or in test (told to nobody then). */
export const alarmModeChip = (a) => (a.mode ? ` <span class="st st-${esc(a.mode)}">${esc(STATE_ZH[a.mode])}</span>` : "");
export const MODE_REASON_ZH = { maintenance: "检修", commissioning: "调试", other: "其他" };
export const MODE_ACTION_ZH = { start: "开始", end: "到期结束", cancel: "提前结束" };
export const KIND_ZH = {
  electrical_fire_monitor: "电气火灾监控探测器",
  gas_detector: "可燃气体探测器",
  one_key_alarm: "一键报警按钮",
};
export const INST_TYPE_ZH = { elderly_care: "养老机构", child_welfare: "儿童福利机构" };
export const ALARM_STATUS_ZH = { active: "未确认", acknowledged: "已确认", cleared: "已恢复", closed: "已关闭" };
export const SEVERITY_ZH = { alarm: "报警", warning: "预警", fault: "故障" };  // 预警: a ladder's lower level
export const HAZARD_STATUS_ZH = {
  "pending-verification": "待核实",
  rejected: "不属实",
  reported: "已上报",
  rectifying: "整改中",
  "awaiting-verification": "待验收",
  closed: "已销号",
  dismissed: "已关闭（非隐患）",
};
/** What the person who confirmed an alarm says it was (alerts.confirmation). */
export const CLASSIFICATION_ZH = { real: "真实火警/险情", false: "误报", test: "测试/检修", device_fault: "设备故障" };
export const classificationText = (a) => (a.acknowledged_at ? CLASSIFICATION_ZH[a.classification] || "未分类" : "");
export const HAZARD_CATEGORY_ZH = {
  electrical: "电气", gas: "燃气", fire_facilities: "消防设施", evacuation: "疏散通道",
  construction: "建筑施工", elderly_care_service: "养老服务安全", other: "其他",
};
export const HAZARD_SOURCE_ZH = {
  iot: "物联网监测", "self-check": "机构自查上报", inspection: "督导检查发现", "public-report": "群众举报",
};
export const FLAG_ZH = {
  button_pressed: "按钮已按下", tamper: "被拆动", sensor_fault: "传感器故障",
  device_residual_alarm: "设备剩余电流报警", device_temperature_alarm: "设备温度报警",
  device_low_alarm: "设备低限报警", device_high_alarm: "设备高限报警",
};

/** Reading name -> {label, unit, digits}. */
export function readingMeta(name) {
  if (name === "residual_current") return { label: "剩余电流", unit: "mA", digits: 0 };
  if (name === "gas_concentration") return { label: "可燃气体浓度", unit: "%LEL", digits: 1 };
  if (name === "battery_voltage") return { label: "电池电压", unit: "V", digits: 2 };
  const m = /^cable_temp_(\d+)$/.exec(name);
  if (m) return { label: `${m[1]}路线缆温度`, unit: "°C", digits: 1 };
  return { label: name, unit: "", digits: 2 };
}
export const READING_ORDER = (a, b) => {
  const rank = (n) => (n === "residual_current" ? 0 : n.startsWith("cable_temp_") ? 1 : 2);
  return rank(a) - rank(b) || a.localeCompare(b, "en", { numeric: true });
};

export const $ = (id) => document.getElementById(id);
const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
export const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ESC[c]);

export function fmtNum(v, digits = 1) {
  if (v === null || v === undefined || Number.isNaN(Number(v))) return "—";
  const n = Number(v);
  if (Number.isInteger(n)) return String(n);
  const t = n.toFixed(digits);
  return t.includes(".") ? t.replace(/\.?0+$/, "") : t;
}

/** Parse an ISO 8601 time; a time without a zone is taken as UTC (the API's zone). */
export function parseTime(s) {
  if (!s) return null;
  const str = /[zZ]|[+-]\d\d:?\d\d$/.test(s) ? s : `${s}Z`;
  const d = new Date(str);
  return Number.isNaN(d.getTime()) ? null : d;
}
const FMT_DATETIME = new Intl.DateTimeFormat("zh-CN", {
  month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
});
const FMT_TIME = new Intl.DateTimeFormat("zh-CN", {
  hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
});
const FMT_DATE = new Intl.DateTimeFormat("zh-CN", { year: "numeric", month: "2-digit", day: "2-digit" });
export const fmtDateTime = (d) => (d ? FMT_DATETIME.format(d).replace(/\//g, "-") : "—");
export const fmtTime = (d) => (d ? FMT_TIME.format(d) : "—");
export const fmtDate = (d) => (d ? FMT_DATE.format(d).replace(/\//g, "-") : "—");
export function fmtAgo(d, now = Date.now()) {
  if (!d) return "从未上报";
  const s = Math.max(0, Math.round((now - d.getTime()) / 1000));
  if (s < 60) return `${s} 秒前`;
  if (s < 3600) return `${Math.floor(s / 60)} 分钟前`;
  if (s < 86400) return `${Math.floor(s / 3600)} 小时前`;
  return fmtDateTime(d);
}

/** Set text only when it changed (avoids needless layout work). */
export function setText(el, text) {
  const t = String(text);
  if (el && el.textContent !== t) el.textContent = t;
}
export function setAttr(el, name, value) {
  const v = String(value);
  if (el && el.getAttribute(name) !== v) el.setAttribute(name, v);
}

/** "12 mA / 设定 300 mA" for an alarm row. */
export function alarmValueText(a) {
  const unit = a.unit ? ` ${a.unit}` : "";
  const sp = a.set_point === null || a.set_point === undefined ? null : `${fmtNum(a.set_point)}${unit}`;
  if (a.value === null || a.value === undefined) return sp ? `设定值 ${sp}` : "";
  return `${fmtNum(a.value)}${unit}${sp ? ` / 设定 ${sp}` : ""}`;
}

/** What an alarm is about, as a link: its device's page, or (a link fault) its gateway. */
export function alarmSubject(a, label) {
  if (!a.device_id) return `网关 ${esc(a.gateway_id || "")}`;
  return `<a href="/devices/${encodeURIComponent(a.device_id)}">${esc(label || a.device_id)}</a>`;
}

/** Keyed list update: create new rows, rewrite changed ones, drop gone ones, keep the given order. */
export function syncList(ul, items, rows, render, dataOf, tag = "li") {
  const seen = new Set();
  let prev = null;
  const firstDraw = items.size === 0;
  for (const row of rows) {
    const key = String(row.id);
    seen.add(key);
    const html = render(row);
    let el = items.get(key);
    if (!el) {
      el = document.createElement(tag);
      el.dataset.id = key;
      if (!firstDraw) el.classList.add("fresh");
      items.set(key, el);
    }
    if (el.fwHtml !== html) { el.innerHTML = html; el.fwHtml = html; }
    for (const [k, v] of Object.entries(dataOf(row))) {
      if (el.dataset[k] !== String(v ?? "")) el.dataset[k] = String(v ?? "");
    }
    const want = prev ? prev.nextSibling : ul.firstChild;
    if (want !== el) ul.insertBefore(el, want);
    prev = el;
  }
  for (const [key, el] of items) {
    if (!seen.has(key)) { el.remove(); items.delete(key); }
  }
}

/** Insert or replace ``row`` in ``rows`` by id, newest (highest id) first. */
export function upsert(rows, row) {
  const i = rows.findIndex((r) => r.id === row.id);
  if (i >= 0) rows[i] = row;
  else rows.push(row);
  rows.sort((a, b) => b.id - a.id);
  return rows;
}
