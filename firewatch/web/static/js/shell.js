/* What every console page shares: login check, the top bar (navigation, user, live status). */

import { api, logout, toLogin, token } from "./api.js";
import { $, esc, fmtTime, setText } from "./vocab.js";

const NAV = [
  ["map", "/", "监测地图", "Map"],
  ["alarms", "/alarms", "报警处置", "Alarms"],
  ["ledger", "/ledger", "隐患台账", "Hazard ledger"],
];

/** Check the login, draw the top bar; resolves to the user (/api/me). */
export async function startPage(active) {
  if (!token()) return toLogin();
  const me = await api("/api/me");
  const bar = $("topbar");
  bar.innerHTML =
    `<div class="title"><h1>Firewatch 智慧消防物联网监测 <span id="page-title"></span></h1>` +
    `<div class="subtitle en">Fire-safety IoT monitoring of elderly-care and child-welfare homes</div></div>` +
    `<nav id="nav">${NAV.map(([key, href, zh, en]) =>
      `<a href="${href}" data-page="${key}"${key === active ? ' aria-current="page"' : ""}>${zh} <span class="en">${en}</span></a>`).join("")}</nav>` +
    `<div class="status"><span id="conn-indicator" class="conn-dot" title="实时推送连接"></span>` +
    `<span id="conn-text">连接中…</span><span class="sep">·</span>` +
    `<span>最后更新 <time id="last-update">—</time></span><span class="sep">·</span>` +
    `<span id="user-name" data-role="${esc(me.role)}">${esc(me.display_name)}` +
    ` <small>${esc(me.role_zh)}</small></span>` +
    `<button type="button" id="logout" class="link">退出</button></div>`;
  $("logout").addEventListener("click", logout);
  document.body.dataset.role = me.role;
  return me;
}

/** The push connection's state, shown in the top bar and as body[data-connection]. */
export function showConnection(state) {
  document.body.dataset.connection = state;
  setText($("conn-text"), { ok: "实时连接", down: "连接中断，重试中…", connecting: "连接中…" }[state]);
  const banner = $("conn-banner");
  if (banner) banner.hidden = state !== "down";
}

export function touched() {
  setText($("last-update"), fmtTime(new Date()));
}

/** A short message at the bottom of the page (errors the API gave, confirmations). */
export function toast(text, kind = "info") {
  let box = $("toast");
  if (!box) {
    box = document.createElement("div");
    box.id = "toast";
    box.setAttribute("role", "status");
    document.body.appendChild(box);
  }
  box.dataset.kind = kind;
  box.textContent = text;
  box.hidden = false;
  clearTimeout(box.fwTimer);
  box.fwTimer = setTimeout(() => { box.hidden = true; }, 5000);
}
