/* The one-tap confirm page a notice links to (/c/<token>): no login, the signed token is the
 * right to confirm this one alarm.  Four buttons say what it was; a refusal (tampered, expired,
 * another alarm, already confirmed) is shown in the API's own Chinese words. */

import { $, SEVERITY_ZH, esc, fmtDateTime, fmtNum, parseTime, readingMeta, READING_ORDER, setText } from "./vocab.js";

const token = decodeURIComponent(location.pathname.split("/").pop());
const CHOICE_CLASS = { real: "danger", false: "primary", test: "", device_fault: "" };

async function call(method, body) {
  const res = await fetch(`/api/confirm/${encodeURIComponent(token)}`, {
    method, cache: "no-store",
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) {
    const detail = typeof data.detail === "string" ? data.detail : "链接无效，请登录系统确认报警。";
    throw new Error(detail);
  }
  return data;
}

function refuse(message) {
  const box = $("refused");
  box.textContent = message;
  box.hidden = false;
}

function showDone(alarm, label) {
  $("c-form").hidden = true;
  const done = $("c-done");
  done.hidden = false;
  done.dataset.classification = alarm.classification || "";
  done.innerHTML = `已确认：<b>${esc(label || "未分类")}</b> · ${esc(alarm.acknowledged_by || "")}` +
    ` · ${esc(fmtDateTime(parseTime(alarm.acknowledged_at)))}`;
}

function draw(view) {
  const a = view.alarm;
  $("alarm-card").hidden = false;
  const sev = a.severity === "fault" ? "fault" : "alarm";
  const chip = $("c-severity");
  chip.className = `chip sev-${sev}`;
  setText(chip, SEVERITY_ZH[sev]);
  setText($("c-title"), a.title);
  setText($("c-institution"), a.institution_name);
  setText($("c-location"), view.location);
  setText($("c-device"), view.device);
  setText($("c-raised"), fmtDateTime(parseTime(a.raised_at)));
  setText($("c-id"), a.id);
  setText($("c-seen"), view.last_seen ? `上报于 ${fmtDateTime(parseTime(view.last_seen))}` : "");
  const readings = [...view.readings].sort((x, y) => READING_ORDER(x.field, y.field));
  $("c-readings").innerHTML = readings.map((r) => {
    const meta = readingMeta(r.field);
    return `<li data-field="${esc(r.field)}">${esc(meta.label)} <b>${esc(fmtNum(r.value, meta.digits))}</b> ${esc(meta.unit)}</li>`;
  }).join("") || "<li class=\"muted\">暂无读数</li>";
  setText($("c-advice"), view.advice || "请到场核实。");
  setText($("c-person"), view.person);
  setText($("c-expiry"), `此链接有效期至 ${fmtDateTime(parseTime(view.expires_at))}，仅可用于本条报警。`);
  $("c-choices").innerHTML = Object.entries(view.classifications).map(([value, label]) =>
    `<button type="button" class="${CHOICE_CLASS[value] || ""}" data-classification="${esc(value)}">${esc(label)}</button>`).join("");
  if (a.acknowledged_at) showDone(a, view.classifications[a.classification]);
  $("c-choices").addEventListener("click", async (ev) => {
    const button = ev.target.closest("button[data-classification]");
    if (!button) return;
    for (const b of $("c-choices").querySelectorAll("button")) b.disabled = true;
    try {
      const alarm = await call("POST", {
        alarm_id: a.id, classification: button.dataset.classification, note: $("c-form").note.value.trim(),
      });
      showDone(alarm, view.classifications[alarm.classification]);
    } catch (err) {
      refuse(err.message);
      for (const b of $("c-choices").querySelectorAll("button")) b.disabled = false;
    }
  });
}

try {
  draw(await call("GET"));
} catch (err) {
  refuse(err.message);
}
document.body.dataset.ready = "true";
