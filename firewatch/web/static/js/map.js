/* The bureau's live map: one marker per institution, coloured by its devices' worst state, and,
 * zoomed in from DEVICE_ZOOM on, one small circle per device around it (map-devices.js).
 *
 * Loads a snapshot (institutions, devices, open alarms and ledger entries), then applies pushed
 * changes (/api/events) as they come; nothing polls. A device change touches only its institution's
 * marker; counts and lists are redrawn once per animation frame, so 2,000 devices stay light.
 *
 * Hooks for browser tests:
 *   path[data-institution-id][data-state]   one circle marker per institution (SVG path)
 *   .leaflet-devices-pane canvas            the device circles (one canvas)
 *   #count-normal #count-alarm #count-fault #count-offline, #township-body > tr[data-township]
 *   #alarm-list > li[data-alarm-id][data-status], #hazard-list > li[data-hazard-id][data-status]
 *   body[data-ready="true"] once the snapshot is drawn; body[data-connection="ok"|"down"]
 *   window.firewatch  { map, markers, deviceMarkers, state, stats }
 */

import { api } from "./api.js";
import { ConfirmStats, HEADER as CONFIRM_HEADER } from "./confirm-stats.js";
import { projector } from "./coords.js";
import { DEVICE_ZOOM, DeviceMarkers } from "./map-devices.js";
import { Panels } from "./map-panels.js";
import { subscribe } from "./push.js";
import { showConnection, startPage, touched } from "./shell.js";
import {
  $, FLAG_ZH, INST_TYPE_ZH, KIND_ZH, READING_ORDER, STATES, STATE_COLOR, STATE_RANK, STATE_ZH, esc, fmtAgo,
  fmtDateTime, fmtNum, parseTime, readingMeta, setText,
} from "./vocab.js";

await startPage("map");
const config = await api("/api/map/config");
const project = projector(config.tile_url ? config.tile_coords : "wgs84");

const state = {
  institutions: new Map(), // id -> institution
  devices: new Map(), // id -> device
  byInstitution: new Map(), // institution id -> {devices: Map(id -> device), worst, counts}
};
const stats = { events: 0, lastEventAt: 0, lastApplyMs: 0, snapshotMs: 0 };
const markers = new Map(); // institution id -> L.CircleMarker
const panels = new Panels(state);

// ---------------------------------------------------------------- the map

const map = L.map("map", {
  zoomControl: true, attributionControl: Boolean(config.tile_url), zoomSnap: 0.25,
  preferCanvas: false, // SVG paths carry the data-* hooks
}).setView([31.0, 117.5], 8);
map.createPane("outline").style.zIndex = 350; // above tiles, below markers
if (config.tile_url) {
  L.tileLayer(config.tile_url, { attribution: config.tile_attribution, maxZoom: 18 }).addTo(map);
  document.body.classList.add("has-tiles");
}
L.control.scale({ imperial: false, position: "bottomright" }).addTo(map);
const deviceMarkers = new DeviceMarkers(map, state, (id) => markers.get(id)?.getLatLng());

const Legend = L.Control.extend({
  options: { position: "bottomleft" },
  onAdd() {
    const div = L.DomUtil.create("div", "fw-legend");
    div.id = "map-legend";
    div.innerHTML = [...STATES, "none"]
      .map((s) => `<span><i class="dot" style="background:${STATE_COLOR[s]}"></i>${STATE_ZH[s]}</span>`)
      .join("") + `<div class="en">机构标记颜色 = 其设备的最严重状态；放大到 ${DEVICE_ZOOM} 级显示各设备${config.tile_url ? ` · ${esc(config.note_zh)}` : ""}</div>`;
    return div;
  },
});
new Legend().addTo(map);

function drawOutline(geojson) {
  const feats = Array.isArray(geojson?.features) ? geojson.features : [];
  const props = feats.find((f) => f?.properties?.name)?.properties || geojson?.properties || {};
  if (props.name) {
    setText($("page-title"), `— ${props.name}`);
    document.title = `监测地图 — ${props.name}`;
  }
  const layer = L.geoJSON(geojson, {
    pane: "outline", interactive: false,
    coordsToLatLng: (c) => L.latLng(...project(c[1], c[0])),
    style: { color: "#1d4ed8", weight: 2, opacity: 0.8, fillColor: "#dbeafe",
      fillOpacity: config.tile_url ? 0.08 : 0.55, dashArray: "6 4" },
  }).addTo(map);
  if (props.note) $("outline-note").textContent = `轮廓示意 · ${props.note}`;
  return layer.getBounds();
}

// ---------------------------------------------------------------- markers

function markerStyle(worst) {
  const alarm = worst === "alarm";
  return {
    radius: alarm ? 11 : 8, color: alarm ? "#7f1d1d" : worst === "none" ? "#64748b" : "#ffffff",
    weight: alarm ? 3 : 2, opacity: 1, fillColor: STATE_COLOR[worst] || STATE_COLOR.none,
    fillOpacity: worst === "none" ? 0.6 : 0.95, dashArray: worst === "none" ? "3 3" : null,
  };
}

function addMarker(inst) {
  const latlng = project(Number(inst.lat), Number(inst.lon));
  const m = L.circleMarker(latlng, { ...markerStyle("none"), className: "fw-marker" });
  m.fwState = null;
  m.bindTooltip(() => tooltipHtml(inst.id), { direction: "top", offset: [0, -8], className: "fw-tooltip" });
  m.bindPopup(() => popupHtml(inst.id), { minWidth: 320, maxWidth: 520, className: "fw-popup-wrap" });
  m.on("popupopen", (e) => {
    e.popup.getElement().onclick = (ev) => {
      if (!ev.target.closest("[data-zoom-devices]")) return;
      m.closePopup();
      deviceMarkers.zoomTo(m.getLatLng());
    };
  });
  m.addTo(map);
  const path = m.getElement();
  path.setAttribute("data-institution-id", inst.id);
  path.setAttribute("aria-label", inst.name);
  markers.set(inst.id, m);
}

function updateMarker(id) {
  const m = markers.get(id);
  if (!m) return;
  const worst = state.byInstitution.get(id)?.worst || "none";
  if (m.fwState !== worst) {
    const wasAlarm = m.fwState === "alarm";
    m.fwState = worst;
    m.setStyle(markerStyle(worst));
    m.setRadius(markerStyle(worst).radius);
    const path = m.getElement();
    path.setAttribute("data-state", worst);
    if (worst === "alarm" && !wasAlarm) {
      path.classList.remove("fw-new-alarm");
      void path.getBoundingClientRect(); // restart the "newly in alarm" flash
      path.classList.add("fw-new-alarm");
    }
    if (worst === "alarm") m.bringToFront();
  }
  if (m.isTooltipOpen()) m.getTooltip().update();
  if (m.isPopupOpen()) m.getPopup().setContent(popupHtml(id));
}

function instHeader(id) {
  const inst = state.institutions.get(id);
  if (!inst) return `<div class="fw-inst-name">${esc(id)}</div>`;
  return `<div class="fw-inst-name">${esc(inst.name)}</div>` +
    `<div class="fw-inst-meta">${esc(inst.township)} · ${esc(INST_TYPE_ZH[inst.type] || inst.type)}</div>`;
}

function sortedDevices(id) {
  const agg = state.byInstitution.get(id);
  return agg ? [...agg.devices.values()].sort((a, b) =>
    STATE_RANK[b.state] - STATE_RANK[a.state] || a.id.localeCompare(b.id)) : [];
}

function countsLine(id) {
  const agg = state.byInstitution.get(id);
  if (!agg || agg.devices.size === 0) return '<span class="muted">无设备</span>';
  return STATES.filter((s) => agg.counts[s])
    .map((s) => `<span class="st st-${s}">${STATE_ZH[s]} ${agg.counts[s]}</span>`).join(" ");
}

function tooltipHtml(id) {
  const devs = sortedDevices(id);
  const shown = devs.slice(0, 6).map((d) =>
    `<li><span class="st st-${esc(d.state)}">${esc(STATE_ZH[d.state])}</span> ${esc(KIND_ZH[d.kind] || d.kind)} · ${esc(d.location)}</li>`);
  const more = devs.length > 6 ? `<div class="muted">…另 ${devs.length - 6} 台，点击查看全部</div>` : "";
  return `<div class="fw-tip">${instHeader(id)}<div class="fw-tip-counts">${countsLine(id)}</div>` +
    `<ul class="fw-tip-devs">${shown.join("")}</ul>${more}</div>`;
}

function readingsHtml(d) {
  const r = d.last_readings || {};
  const parts = Object.keys(r).sort(READING_ORDER).map((k) => {
    const meta = readingMeta(k);
    return `<span class="rd"><span class="rl">${esc(meta.label)}</span> <b>${esc(fmtNum(r[k], meta.digits))}</b> ${esc(meta.unit)}</span>`;
  });
  for (const [k, on] of Object.entries(d.last_flags || {})) {
    if (on) parts.push(`<span class="rd flag">${esc(FLAG_ZH[k] || k)}</span>`);
  }
  return parts.join("") || '<span class="muted">无读数</span>';
}

function popupHtml(id) {
  const now = Date.now();
  const rows = sortedDevices(id).map((d) =>
    `<div class="fw-dev" data-device-id="${esc(d.id)}" data-state="${esc(d.state)}">` +
      `<div class="fw-dev-head"><span class="st st-${esc(d.state)}">${esc(STATE_ZH[d.state])}</span>` +
      `<a class="fw-dev-kind" href="/devices/${encodeURIComponent(d.id)}">${esc(KIND_ZH[d.kind] || d.kind)}</a>` +
      `<span class="fw-dev-loc">${esc(d.location)}</span></div>` +
      (d.condition !== "normal" && d.state_reason ? `<div class="fw-dev-reason">${esc(d.state_reason)}</div>` : "") +
      (d.mode !== "normal" ? `<div class="fw-dev-mode">${esc(STATE_ZH[d.mode])}至 ${esc(fmtDateTime(parseTime(d.mode_until)))}` +
        ` · <a href="/devices/${encodeURIComponent(d.id)}#panel-mode">屏蔽/测试设置</a></div>` : "") +
      `<div class="fw-dev-readings">${readingsHtml(d)}</div>` +
      `<div class="fw-dev-foot">${esc(d.id)} · ${esc(fmtAgo(parseTime(d.last_seen), now))}</div></div>`);
  const inst = state.institutions.get(id);
  return `<div class="fw-popup" data-institution-id="${esc(id)}">${instHeader(id)}` +
    (inst?.address ? `<div class="fw-inst-addr">${esc(inst.address)}</div>` : "") +
    `<div class="fw-popup-counts">${countsLine(id)}` +
    (rows.length && map.getZoom() < DEVICE_ZOOM ? ' <button type="button" class="fw-zoom" data-zoom-devices>放大查看各设备位置</button>' : "") +
    "</div>" +
    `<div class="fw-devs">${rows.join("") || '<div class="muted">该机构暂无接入设备</div>'}</div></div>`;
}

// ---------------------------------------------------------------- devices

function aggregate(id) {
  let agg = state.byInstitution.get(id);
  if (!agg) {
    agg = { devices: new Map(), worst: "none", counts: {} };
    state.byInstitution.set(id, agg);
  }
  agg.counts = Object.fromEntries(STATES.map((s) => [s, 0]));
  agg.worst = "none";
  for (const d of agg.devices.values()) {
    const s = STATE_RANK[d.state] ? d.state : "offline";
    agg.counts[s] += 1;
    if (STATE_RANK[s] > STATE_RANK[agg.worst]) agg.worst = s;
  }
}

function putDevice(d) {
  const before = state.devices.get(d.id);
  if (before && before.institution_id !== d.institution_id) {
    state.byInstitution.get(before.institution_id)?.devices.delete(d.id);
    aggregate(before.institution_id);
    updateMarker(before.institution_id);
  }
  state.devices.set(d.id, d);
  if (!state.byInstitution.has(d.institution_id)) aggregate(d.institution_id);
  state.byInstitution.get(d.institution_id).devices.set(d.id, d);
  deviceMarkers.put(d);
}

function onDevice(d) {
  const t0 = performance.now();
  putDevice(d);
  aggregate(d.institution_id);
  updateMarker(d.institution_id);
  panels.redraw();
  stats.events += 1;
  stats.lastEventAt = Date.now();
  stats.lastApplyMs = performance.now() - t0;
  touched();
}

// ---------------------------------------------------------------- snapshot and push

let outlineBounds = null;
async function load() {
  const t0 = performance.now();
  const [outline, institutions, deviceRows, alarms, hazards] = await Promise.all([
    outlineBounds ? null : api("/api/map/outline"),
    api("/api/institutions"),
    api("/api/devices"),
    api("/api/alarms?status=active&status=acknowledged&limit=100"),
    api("/api/hazards?status=pending-verification&status=reported&status=rectifying&status=awaiting-verification&limit=100"),
  ]);
  if (outline) outlineBounds = drawOutline(outline);
  for (const inst of institutions) {
    state.institutions.set(inst.id, inst);
    if (!markers.has(inst.id)) addMarker(inst);
  }
  state.devices.clear();
  for (const agg of state.byInstitution.values()) agg.devices.clear();
  for (const d of deviceRows) putDevice(d);
  deviceMarkers.prune();
  deviceMarkers.show();
  for (const id of new Set([...state.byInstitution.keys(), ...markers.keys()])) {
    aggregate(id);
    updateMarker(id);
  }
  panels.setAlarms(alarms);
  panels.setHazards(hazards);
  confirmStats.soon(() => {});
  panels.redraw();
  if (document.body.dataset.ready !== "true") {
    const b = outlineBounds?.isValid() ? outlineBounds
      : L.latLngBounds([...markers.values()].map((m) => m.getLatLng())).pad(0.3);
    if (b.isValid()) map.fitBounds(b, { padding: [20, 20], animate: false, maxZoom: 13 });
    document.body.dataset.ready = "true";
  }
  stats.snapshotMs = performance.now() - t0;
  touched();
}

// how alarms of the last 30 days were confirmed, per institution (alerts.alarm_stats)
$("confirm-head").innerHTML = CONFIRM_HEADER;
const confirmStats = new ConfirmStats($("confirm-body"), $("confirm-totals"), () => new URLSearchParams({
  by: "institution", since: new Date(Date.now() - 30 * 86400e3).toISOString(),
}));

subscribe({
  load,
  on: {
    device: onDevice,
    alarm: (a) => { panels.putAlarm(a); confirmStats.soon(() => {}); touched(); },
    hazard: (h) => { panels.putHazard(h); touched(); },
  },
  status: showConnection,
});

panels.onFocus((id) => {
  const m = markers.get(id);
  if (m) { map.panTo(m.getLatLng()); m.openPopup(); }
});

window.firewatch = { map, markers, deviceMarkers: deviceMarkers.markers, state, get stats() { return { ...stats, devices: state.devices.size }; } };
