/* How alarms were confirmed (/api/alarms/statistics), as a table: the map's compact panel and
 * the ledger's statistics both draw it.  Refreshed a moment after an alarm changes. */

import { api } from "./api.js";
import { esc, fmtNum, setText } from "./vocab.js";

export const percent = (v) => (v === null || v === undefined ? "—" : `${fmtNum(100 * v, 1)}%`);
export function duration(s) {
  if (s === null || s === undefined) return "—";
  if (s < 60) return `${fmtNum(s, 0)} 秒`;
  if (s < 3600) return `${fmtNum(s / 60, 1)} 分`;
  return `${fmtNum(s / 3600, 1)} 时`;
}

function rowHtml(r) {
  return `<td>${esc(r.label)}</td><td data-k="alarms">${r.alarms}</td><td data-k="confirmed">${r.confirmed}</td>` +
    `<td data-k="false">${r.false}</td><td data-k="false-rate">${percent(r.false_alarm_rate)}</td>` +
    `<td data-k="median">${duration(r.median_confirm_s)}</td><td data-k="p90">${duration(r.p90_confirm_s)}</td>` +
    `<td data-k="within">${percent(r.within_escalation_share)}</td>`;
}

export const HEADER = "<tr><th>分组</th><th>报警</th><th>已确认</th><th>误报</th><th title=\"误报 / 已分类的确认\">误报率</th>" +
  "<th title=\"报警至确认用时的中位数\">用时中位</th><th title=\"90% 的报警在此用时内确认\">P90</th>" +
  "<th title=\"在提级时限内确认的比例\">时限内</th></tr>";

/** Draw the statistics of ``query()`` (URLSearchParams) into ``body``; totals into ``totals``. */
export class ConfirmStats {
  constructor(body, totals, query) {
    this.body = body;
    this.totals = totals;
    this.query = query;
    this.timer = 0;
  }

  async draw() {
    const report = await api(`/api/alarms/statistics?${this.query()}`);
    this.body.innerHTML = report.rows.map((r) => `<tr data-key="${esc(r.key)}">${rowHtml(r)}</tr>`).join("") ||
      '<tr><td colspan="8" class="empty">暂无报警</td></tr>';
    const t = report.totals;
    this.totals.dataset.falseAlarms = t.false;
    this.totals.dataset.falseRate = t.false_alarm_rate ?? "";
    setText(this.totals, `合计：报警 ${t.alarms}，已确认 ${t.confirmed}（真实 ${t.real}、误报 ${t.false}、测试 ${t.test}、` +
      `设备故障 ${t.device_fault}、未分类 ${t.unclassified}）；误报率 ${percent(t.false_alarm_rate)}；` +
      `确认用时中位 ${duration(t.median_confirm_s)}，P90 ${duration(t.p90_confirm_s)}；时限内确认 ${percent(t.within_escalation_share)}`);
  }

  /** Redraw soon: several changes in a moment cost one request. */
  soon(onError) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.draw().catch(onError), 300);
  }
}
