/* Firewatch — the bureau's live map page.
 *
 * Plain JS, no build step, no network beyond the same-origin JSON API. Leaflet is vendored under
 * /static/vendor/leaflet/. The base layer is the county outline (GeoJSON); a tile layer is drawn
 * only when window.FIREWATCH_CONFIG.tileUrl is set.
 *
 * Every second the page polls /api/devices, /api/alarms and /api/hazards. Institution markers are
 * created once and updated in place; lists are keyed by id and only changed rows are touched, so
 * the page stays light with thousands of devices.
 *
 * Hooks for browser tests:
 *   path[data-institution-id][data-state]       one circle marker per institution (SVG path)
 *   #count-normal #count-alarm #count-fault #count-offline   device counts per state
 *   #alarm-list > [data-alarm-id][data-status]   live alarms, newest first
 *   #hazard-list > [data-hazard-id][data-status] hazard ledger
 *   #township-body > tr[data-township]           per-township counts
 *   #conn-banner (hidden unless the API is unreachable); body[data-connection="ok"|"down"]
 *   body[data-ready="true"] once the first poll has been drawn
 *   window.firewatch  { map, markers, devices, institutions, stats, refresh() }
 */
(() => {
  "use strict";

  const CONFIG = Object.assign(
    { tileUrl: null, tileAttribution: "", tileMaxZoom: 18, apiBase: "", pollMs: 1000,
      timeZone: undefined, requestTimeoutMs: 5000 },
    window.FIREWATCH_CONFIG || {},
  );

  // ---------------------------------------------------------------- vocabulary

  const STATES = ["alarm", "fault", "offline", "normal"]; // worst first
  const STATE_RANK = { alarm: 4, fault: 3, offline: 2, normal: 1, none: 0 };
  const STATE_ZH = { normal: "正常", alarm: "报警", fault: "故障", offline: "离线", none: "无设备" };
  const STATE_COLOR = {
    alarm: "#e02424", fault: "#f59e0b", offline: "#8a94a3", normal: "#16a34a", none: "#cbd5e1",
  };
  const KIND_ZH = {
    electrical_fire_monitor: "电气火灾监控探测器",
    gas_detector: "可燃气体探测器",
    one_key_alarm: "一键报警按钮",
  };
  const INST_TYPE_ZH = { elderly_care: "养老机构", child_welfare: "儿童福利机构" };
  const ALARM_STATUS_ZH = { active: "未确认", acknowledged: "已确认", cleared: "已恢复", closed: "已关闭" };
  const SEVERITY_ZH = { alarm: "报警", fault: "故障" };
  const HAZARD_STATUS_ZH = {
    "pending-verification": "待核实",
    rejected: "不属实",
    reported: "已上报",
    rectifying: "整改中",
    "awaiting-verification": "待验收",
    closed: "已销号",
  };
  const HAZARD_CATEGORY_ZH = {
    electrical: "电气", gas: "燃气", fire_facilities: "消防设施", evacuation: "疏散通道",
    construction: "建筑", elderly_care_service: "养老服务", other: "其他",
  };
  const HAZARD_SOURCE_ZH = {
    iot: "物联网监测", "self-check": "机构自查", inspection: "督导检查", "public-report": "群众举报",
  };
  const FLAG_ZH = {
    button_pressed: "按钮已按下", tamper: "被拆动", sensor_fault: "传感器故障",
    device_residual_alarm: "设备剩余电流报警", device_temperature_alarm: "设备温度报警",
    device_low_alarm: "设备低限报警", device_high_alarm: "设备高限报警",
  };

  /** Reading name -> {label, unit, digits}. */
  function readingMeta(name) {
    if (name === "residual_current") return { label: "剩余电流", unit: "mA", digits: 0 };
    if (name === "gas_concentration") return { label: "可燃气体浓度", unit: "%LEL", digits: 1 };
    if (name === "battery_voltage") return { label: "电池电压", unit: "V", digits: 2 };
    const m = /^cable_temp_(\d+)$/.exec(name);
    if (m) return { label: `${m[1]}路线缆温度`, unit: "°C", digits: 1 };
    return { label: name, unit: "", digits: 2 };
  }
  const READING_ORDER = (a, b) => {
    const rank = (n) => (n === "residual_current" ? 0 : n.startsWith("cable_temp_") ? 1 : 2);
    return rank(a) - rank(b) || a.localeCompare(b, "en", { numeric: true });
  };

  // ---------------------------------------------------------------- helpers

  const $ = (id) => document.getElementById(id);
  const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ESC[c]);

  function fmtNum(v, digits = 1) {
    if (v === null || v === undefined || Number.isNaN(Number(v))) return "—";
    const n = Number(v);
    if (Number.isInteger(n)) return String(n);
    const t = n.toFixed(digits);
    return t.includes(".") ? t.replace(/\.?0+$/, "") : t;
  }

  /** Parse an ISO 8601 time; a time without a zone is taken as UTC (the API's zone). */
  function parseTime(s) {
    if (!s) return null;
    const str = /[zZ]|[+-]\d\d:?\d\d$/.test(s) ? s : `${s}Z`;
    const d = new Date(str);
    return Number.isNaN(d.getTime()) ? null : d;
  }
  const tz = CONFIG.timeZone ? { timeZone: CONFIG.timeZone } : {};
  const FMT_DATETIME = new Intl.DateTimeFormat("zh-CN", {
    ...tz, month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
    hour12: false,
  });
  const FMT_TIME = new Intl.DateTimeFormat("zh-CN", {
    ...tz, hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
  });
  const FMT_DATE = new Intl.DateTimeFormat("zh-CN", {
    ...tz, year: "numeric", month: "2-digit", day: "2-digit",
  });
  const fmtDateTime = (d) => (d ? FMT_DATETIME.format(d).replace(/\//g, "-") : "—");
  const fmtTime = (d) => (d ? FMT_TIME.format(d) : "—");
  const fmtDate = (d) => (d ? FMT_DATE.format(d).replace(/\//g, "-") : "—");
  function fmtAgo(d, now = Date.now()) {
    if (!d) return "从未上报";
    const s = Math.max(0, Math.round((now - d.getTime()) / 1000));
    if (s < 60) return `${s} 秒前`;
    if (s < 3600) return `${Math.floor(s / 60)} 分钟前`;
    if (s < 86400) return `${Math.floor(s / 3600)} 小时前`;
    return fmtDateTime(d);
  }

  /** Set text only when it changed (avoids needless layout work). */
  function setText(el, text) {
    const t = String(text);
    if (el && el.textContent !== t) el.textContent = t;
  }
  function setAttr(el, name, value) {
    const v = String(value);
    if (el && el.getAttribute(name) !== v) el.setAttribute(name, v);
  }

  class HttpError extends Error {}

  /** GET a JSON endpoint; returns {text, data} (data is null when the text did not change). */
  async function getJSON(path, previousText) {
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(), CONFIG.requestTimeoutMs);
    try {
      const res = await fetch(CONFIG.apiBase + path, {
        signal: ctrl.signal, cache: "no-store", headers: { Accept: "application/json" },
      });
      if (!res.ok) throw new HttpError(`${path}: HTTP ${res.status}`);
      const text = await res.text();
      if (previousText !== undefined && text === previousText) return { text, data: null };
      return { text, data: JSON.parse(text) };
    } finally {
      clearTimeout(timer);
    }
  }

  // ---------------------------------------------------------------- state

  const state = {
    outlineLoaded: false,
    institutions: new Map(), // id -> institution
    institutionsLoadedAt: 0,
    devices: [], // last /api/devices
    devicesById: new Map(),
    byInstitution: new Map(), // institution id -> {devices: [], worst, counts}
    alarms: [],
    hazards: [],
    raw: {}, // endpoint -> last response text
    lastOk: null,
    failures: 0,
    stats: { polls: 0, lastPollMs: 0, lastDrawMs: 0, devices: 0 },
  };
  const markers = new Map(); // institution id -> L.CircleMarker
  const popupEls = new Map(); // institution id -> popup DOM element (reused while open)

  // ---------------------------------------------------------------- map

  const map = L.map("map", {
    zoomControl: true,
    attributionControl: Boolean(CONFIG.tileUrl),
    zoomSnap: 0.25,
    preferCanvas: false, // SVG paths carry the data-* hooks
  }).setView([31.0, 117.5], 8);
  map.createPane("outline").style.zIndex = 350; // above tiles, below markers
  if (CONFIG.tileUrl) {
    L.tileLayer(CONFIG.tileUrl, {
      attribution: CONFIG.tileAttribution, maxZoom: CONFIG.tileMaxZoom,
    }).addTo(map);
    document.body.classList.add("has-tiles");
  }
  L.control.scale({ imperial: false, position: "bottomright" }).addTo(map);

  const Legend = L.Control.extend({
    options: { position: "bottomleft" },
    onAdd() {
      const div = L.DomUtil.create("div", "fw-legend");
      div.id = "map-legend";
      div.innerHTML = ["alarm", "fault", "offline", "normal", "none"]
        .map((s) => `<span><i class="dot" style="background:${STATE_COLOR[s]}"></i>${STATE_ZH[s]}</span>`)
        .join("") + '<div class="en">机构标记颜色 = 其设备的最严重状态</div>';
      return div;
    },
  });
  new Legend().addTo(map);

  const Note = L.Control.extend({
    options: { position: "bottomright" },
    onAdd() {
      const div = L.DomUtil.create("div", "fw-note");
      div.id = "outline-note";
      div.hidden = true;
      return div;
    },
  });
  new Note().addTo(map);

  let outlineLayer = null;
  let fitted = false;

  function drawOutline(geojson) {
    const feats = Array.isArray(geojson?.features) ? geojson.features : [];
    const props = feats.find((f) => f?.properties?.name)?.properties || geojson?.properties || {};
    if (props.name) {
      setText($("county-name"), props.name);
      document.title = `Firewatch 智慧消防物联网监测 — ${props.name}`;
    }
    const note = $("outline-note");
    if (props.note) {
      note.textContent = `轮廓示意 · ${props.note}`;
      note.hidden = false;
    }
    if (outlineLayer) outlineLayer.remove();
    outlineLayer = L.geoJSON(geojson, {
      pane: "outline",
      interactive: false,
      style: { color: "#1d4ed8", weight: 2, opacity: 0.8, fillColor: "#dbeafe", fillOpacity: CONFIG.tileUrl ? 0.08 : 0.55, dashArray: "6 4" },
    }).addTo(map);
    const b = outlineLayer.getBounds();
    if (b.isValid()) {
      map.fitBounds(b, { padding: [20, 20], animate: false });
      fitted = true;
    }
  }

  function fitToMarkers() {
    if (fitted || markers.size === 0) return;
    const b = L.latLngBounds([...markers.values()].map((m) => m.getLatLng()));
    if (b.isValid()) {
      map.fitBounds(b.pad(0.3), { maxZoom: 13, animate: false });
      fitted = true;
    }
  }

  // ---------------------------------------------------------------- markers

  function markerStyle(worst) {
    const alarm = worst === "alarm";
    return {
      radius: alarm ? 11 : 8,
      color: alarm ? "#7f1d1d" : worst === "none" ? "#64748b" : "#ffffff",
      weight: alarm ? 3 : 2,
      opacity: 1,
      fillColor: STATE_COLOR[worst] || STATE_COLOR.none,
      fillOpacity: worst === "none" ? 0.6 : 0.95,
      dashArray: worst === "none" ? "3 3" : null,
    };
  }

  function syncInstitutions(list) {
    const seen = new Set();
    for (const inst of list) {
      seen.add(inst.id);
      state.institutions.set(inst.id, inst);
      const latlng = [Number(inst.lat), Number(inst.lon)];
      if (!Number.isFinite(latlng[0]) || !Number.isFinite(latlng[1])) continue;
      let m = markers.get(inst.id);
      if (!m) {
        const agg = state.byInstitution.get(inst.id);
        const worst = agg ? agg.worst : "none";
        m = L.circleMarker(latlng, { ...markerStyle(worst), className: "fw-marker" });
        m.fwState = worst;
        m.bindTooltip(() => tooltipHtml(inst.id), { direction: "top", offset: [0, -8], className: "fw-tooltip" });
        m.bindPopup(() => popupElement(inst.id), { minWidth: 320, maxWidth: 520, className: "fw-popup-wrap", autoPanPadding: [30, 30] });
        m.addTo(map);
        const path = m.getElement();
        if (path) {
          path.setAttribute("data-institution-id", inst.id);
          path.setAttribute("data-institution-type", inst.type || "");
          path.setAttribute("data-state", worst);
          path.setAttribute("aria-label", inst.name);
        }
        if (worst === "alarm") m.bringToFront();
        markers.set(inst.id, m);
      } else {
        const cur = m.getLatLng();
        if (cur.lat !== latlng[0] || cur.lng !== latlng[1]) m.setLatLng(latlng);
      }
    }
    for (const [id, m] of markers) {
      if (!seen.has(id)) {
        m.remove();
        markers.delete(id);
        popupEls.delete(id);
        state.institutions.delete(id);
      }
    }
    state.institutionsLoadedAt = Date.now();
    fitToMarkers();
  }

  function updateMarker(id) {
    const m = markers.get(id);
    if (!m) return;
    const agg = state.byInstitution.get(id);
    const worst = agg ? agg.worst : "none";
    if (m.fwState !== worst) {
      const wasAlarm = m.fwState === "alarm";
      m.fwState = worst;
      m.setStyle(markerStyle(worst));
      m.setRadius(markerStyle(worst).radius);
      const path = m.getElement();
      if (path) {
        path.setAttribute("data-state", worst);
        if (worst === "alarm" && !wasAlarm) {
          // restart the "newly in alarm" flash
          path.classList.remove("fw-new-alarm");
          void path.getBoundingClientRect();
          path.classList.add("fw-new-alarm");
        }
      }
      if (worst === "alarm") m.bringToFront();
    }
    if (m.isTooltipOpen()) m.getTooltip().update();
    if (m.isPopupOpen()) refreshPopup(id);
  }

  // ---------------------------------------------------------------- popup & tooltip

  function instHeader(inst, id) {
    const name = inst ? inst.name : id;
    const type = inst ? INST_TYPE_ZH[inst.type] || inst.type : "";
    const town = inst ? inst.township : "";
    return `<div class="fw-inst-name">${esc(name)}</div>` +
      `<div class="fw-inst-meta">${esc(town)}${type ? ` · ${esc(type)}` : ""}</div>`;
  }

  function readingsHtml(dev) {
    const r = dev.last_readings || {};
    const parts = Object.keys(r).sort(READING_ORDER).map((k) => {
      const meta = readingMeta(k);
      return `<span class="rd"><span class="rl">${esc(meta.label)}</span> <b>${esc(fmtNum(r[k], meta.digits))}</b>${meta.unit ? ` ${esc(meta.unit)}` : ""}</span>`;
    });
    const f = dev.last_flags || {};
    for (const k of Object.keys(f)) {
      if (f[k]) parts.push(`<span class="rd flag">${esc(FLAG_ZH[k] || k)}</span>`);
    }
    return parts.join("") || '<span class="muted">无读数</span>';
  }

  function sortDevices(devs) {
    return devs.slice().sort((a, b) =>
      (STATE_RANK[b.state] || 0) - (STATE_RANK[a.state] || 0) || String(a.id).localeCompare(String(b.id)));
  }

  function countsLine(agg) {
    if (!agg || agg.devices.length === 0) return '<span class="muted">无设备</span>';
    return STATES.filter((s) => agg.counts[s])
      .map((s) => `<span class="st st-${s}">${STATE_ZH[s]} ${agg.counts[s]}</span>`).join(" ");
  }

  function tooltipHtml(id) {
    const inst = state.institutions.get(id);
    const agg = state.byInstitution.get(id);
    let html = `<div class="fw-tip">${instHeader(inst, id)}<div class="fw-tip-counts">${countsLine(agg)}</div>`;
    if (agg && agg.devices.length) {
      const devs = sortDevices(agg.devices);
      const shown = devs.slice(0, 6);
      html += '<ul class="fw-tip-devs">' + shown.map((d) =>
        `<li><span class="st st-${esc(d.state)}">${esc(STATE_ZH[d.state] || d.state)}</span> ` +
        `${esc(KIND_ZH[d.kind] || d.kind)} · ${esc(d.location)}</li>`).join("") + "</ul>";
      if (devs.length > shown.length) html += `<div class="muted">…另 ${devs.length - shown.length} 台，点击查看全部</div>`;
    }
    return html + "</div>";
  }

  function deviceRowsHtml(id) {
    const agg = state.byInstitution.get(id);
    if (!agg || agg.devices.length === 0) return '<div class="muted">该机构暂无接入设备</div>';
    const now = Date.now();
    return sortDevices(agg.devices).map((d) =>
      `<div class="fw-dev" data-device-id="${esc(d.id)}" data-state="${esc(d.state)}">` +
        `<div class="fw-dev-head"><span class="st st-${esc(d.state)}">${esc(STATE_ZH[d.state] || d.state)}</span>` +
        `<span class="fw-dev-kind">${esc(KIND_ZH[d.kind] || d.kind)}</span>` +
        `<span class="fw-dev-loc">${esc(d.location)}</span></div>` +
        (d.state !== "normal" && d.state_reason ? `<div class="fw-dev-reason">${esc(d.state_reason)}</div>` : "") +
        `<div class="fw-dev-readings">${readingsHtml(d)}</div>` +
        `<div class="fw-dev-foot">${esc(d.id)} · ${esc(fmtAgo(parseTime(d.last_seen), now))}</div>` +
      "</div>").join("");
  }

  function popupElement(id) {
    let el = popupEls.get(id);
    if (!el) {
      el = document.createElement("div");
      el.className = "fw-popup";
      el.dataset.institutionId = id;
      el.innerHTML = '<div class="fw-popup-head"></div><div class="fw-popup-counts"></div><div class="fw-devs"></div>';
      popupEls.set(id, el);
    }
    el.fwCount = -1;
    fillPopup(id, el);
    return el;
  }

  function fillPopup(id, el) {
    const inst = state.institutions.get(id);
    const agg = state.byInstitution.get(id);
    const head = instHeader(inst, id) + (inst?.address ? `<div class="fw-inst-addr">${esc(inst.address)}</div>` : "");
    const parts = [[".fw-popup-head", head], [".fw-popup-counts", countsLine(agg)], [".fw-devs", deviceRowsHtml(id)]];
    for (const [sel, html] of parts) {
      const node = el.querySelector(sel);
      if (node.fwHtml !== html) { node.innerHTML = html; node.fwHtml = html; }
    }
    const n = agg ? agg.devices.length : 0;
    const changedSize = el.fwCount !== n;
    el.fwCount = n;
    return changedSize;
  }

  function refreshPopup(id) {
    const el = popupEls.get(id);
    const m = markers.get(id);
    if (!el || !m) return;
    if (fillPopup(id, el)) m.getPopup().update();
  }

  // ---------------------------------------------------------------- devices & counts

  function applyDevices(devices) {
    state.devices = devices;
    state.devicesById = new Map(devices.map((d) => [d.id, d]));
    const byInst = new Map();
    for (const d of devices) {
      let agg = byInst.get(d.institution_id);
      if (!agg) {
        agg = { devices: [], worst: "none", counts: { normal: 0, alarm: 0, fault: 0, offline: 0 } };
        byInst.set(d.institution_id, agg);
      }
      agg.devices.push(d);
      const s = STATE_RANK[d.state] ? d.state : "offline"; // an unknown state is treated as offline
      agg.counts[s] += 1;
      if (STATE_RANK[s] > STATE_RANK[agg.worst]) agg.worst = s;
    }
    const previous = state.byInstitution;
    state.byInstitution = byInst;

    // markers: update those whose institution appears now or appeared before
    const touched = new Set([...byInst.keys(), ...previous.keys()]);
    let unknown = false;
    for (const id of touched) {
      if (markers.has(id)) updateMarker(id);
      else if (!state.institutions.has(id)) unknown = true;
    }
    // a device of an institution the page does not know: reload the institutions (at most every 10 s)
    if (unknown && Date.now() - state.institutionsLoadedAt > 10000) loadInstitutions().catch(() => {});

    drawCounts();
  }

  function drawCounts() {
    const totals = { normal: 0, alarm: 0, fault: 0, offline: 0 };
    const instTotals = { normal: 0, alarm: 0, fault: 0, offline: 0 };
    const towns = new Map();
    for (const inst of state.institutions.values()) {
      const t = inst.township || "未知";
      if (!towns.has(t)) towns.set(t, { institutions: 0, devices: 0, normal: 0, alarm: 0, fault: 0, offline: 0 });
      towns.get(t).institutions += 1;
    }
    for (const [id, agg] of state.byInstitution) {
      const inst = state.institutions.get(id);
      const t = inst?.township || "未知";
      if (!towns.has(t)) towns.set(t, { institutions: 0, devices: 0, normal: 0, alarm: 0, fault: 0, offline: 0 });
      const row = towns.get(t);
      row.devices += agg.devices.length;
      for (const s of STATES) { totals[s] += agg.counts[s]; row[s] += agg.counts[s]; }
      if (agg.worst in instTotals) instTotals[agg.worst] += 1;
    }
    for (const s of STATES) {
      setText($(`count-${s}`), totals[s]);
      setText($(`inst-count-${s}`), instTotals[s]);
      setAttr(document.querySelector(`.tile[data-state="${s}"]`), "data-nonzero", totals[s] > 0);
    }
    setText($("count-total"), state.devices.length);
    setText($("count-institutions"), state.institutions.size);
    drawTownships(towns);
  }

  const townRows = new Map(); // township -> <tr>
  function drawTownships(towns) {
    const body = $("township-body");
    const names = [...towns.keys()].sort((a, b) => a.localeCompare(b, "zh-CN"));
    const same = names.length === townRows.size && names.every((n) => townRows.has(n));
    if (!same) {
      townRows.clear();
      body.textContent = "";
      for (const n of names) {
        const tr = document.createElement("tr");
        tr.dataset.township = n;
        tr.innerHTML = `<th scope="row"></th><td data-k="institutions"></td><td data-k="devices"></td>` +
          `<td data-k="alarm" class="c-alarm"></td><td data-k="fault" class="c-fault"></td><td data-k="offline" class="c-offline"></td>`;
        tr.firstChild.textContent = n;
        body.appendChild(tr);
        townRows.set(n, tr);
      }
    }
    for (const n of names) {
      const row = towns.get(n);
      const tr = townRows.get(n);
      for (const td of tr.querySelectorAll("td")) setText(td, row[td.dataset.k]);
      const worst = row.alarm ? "alarm" : row.fault ? "fault" : row.offline ? "offline" : "normal";
      setAttr(tr, "data-state", worst);
    }
  }

  // ---------------------------------------------------------------- alarms

  const alarmItems = new Map(); // id -> <li>
  function alarmValueText(a) {
    const unit = a.unit ? ` ${a.unit}` : "";
    if (a.value === null || a.value === undefined) {
      return a.set_point === null || a.set_point === undefined ? "" : `设定值 ${fmtNum(a.set_point)}${unit}`;
    }
    const sp = a.set_point === null || a.set_point === undefined ? "" : ` / 设定 ${fmtNum(a.set_point)}${unit}`;
    return `${fmtNum(a.value)}${unit}${sp}`;
  }

  function alarmHtml(a) {
    const dev = state.devicesById.get(a.device_id);
    const raised = parseTime(a.raised_at);
    const cleared = parseTime(a.cleared_at);
    const value = alarmValueText(a);
    const statusZh = ALARM_STATUS_ZH[a.status] || a.status;
    const sev = a.severity === "fault" ? "fault" : "alarm";
    const devText = dev ? `${KIND_ZH[dev.kind] || dev.kind} · ${dev.location}` : a.device_id;
    let foot = `${esc(a.device_id)}`;
    if (a.acknowledged_by) foot += ` · 确认人 ${esc(a.acknowledged_by)}`;
    if (cleared) foot += ` · 恢复于 ${esc(fmtTime(cleared))}`;
    return `<div class="li-head"><span class="chip status-${esc(a.status)}">${esc(statusZh)}</span>` +
      `<span class="chip sev-${sev}">${esc(SEVERITY_ZH[sev])}</span>` +
      `<span class="li-inst">${esc(a.institution_name || a.institution_id)}</span>` +
      `<time datetime="${esc(a.raised_at)}">${esc(fmtDateTime(raised))}</time></div>` +
      `<div class="li-title">${esc(a.title || a.rule)}${value ? ` <span class="li-value">${esc(value)}</span>` : ""}</div>` +
      `<div class="li-sub">${esc(devText)}</div>` +
      `<div class="li-foot">${foot}</div>`;
  }

  function applyAlarms(alarms) {
    state.alarms = alarms;
    syncList($("alarm-list"), alarmItems, alarms, "alarmId", alarmHtml, (a) => ({
      status: a.status, severity: a.severity, institutionId: a.institution_id,
    }));
    const open = alarms.filter((a) => a.status === "active" || a.status === "acknowledged").length;
    const active = alarms.filter((a) => a.status === "active").length;
    setText($("alarm-open-count"), open);
    setText($("active-alarm-count"), active);
    $("active-alarm-badge").hidden = active === 0;
    $("alarm-empty").hidden = alarms.length > 0;
  }

  // ---------------------------------------------------------------- hazards

  const hazardItems = new Map();
  function hazardHtml(h) {
    const deadline = parseTime(h.deadline);
    const overdue = deadline && h.status !== "closed" && h.status !== "rejected" && deadline.getTime() < Date.now();
    const statusZh = HAZARD_STATUS_ZH[h.status] || h.status;
    const cat = HAZARD_CATEGORY_ZH[h.category] || h.category;
    const src = HAZARD_SOURCE_ZH[h.source] || h.source;
    return `<div class="li-head"><span class="chip hz-${esc(h.status)}">${esc(statusZh)}</span>` +
      `<span class="li-inst">${esc(h.institution_name || h.institution_id)}</span>` +
      `<span class="li-town">${esc(h.township)}</span></div>` +
      `<div class="li-desc" title="${esc(h.description)}">${esc(h.description)}</div>` +
      `<div class="li-foot">责任人 <b>${esc(h.responsible_person)}</b>` +
      (h.responsible_phone ? ` ${esc(h.responsible_phone)}` : "") +
      ` · 整改期限 <span class="${overdue ? "overdue" : ""}">${esc(fmtDate(deadline))}${overdue ? "（逾期）" : ""}</span></div>` +
      `<div class="li-foot muted">${esc(cat)} · ${esc(src)}${h.responsible_unit ? ` · ${esc(h.responsible_unit)}` : ""} · #${esc(h.id)} 登记于 ${esc(fmtDate(parseTime(h.created_at)))}</div>`;
  }

  function applyHazards(hazards) {
    state.hazards = hazards;
    syncList($("hazard-list"), hazardItems, hazards, "hazardId", hazardHtml, (h) => ({
      status: h.status, institutionId: h.institution_id,
    }));
    setText($("hazard-open-count"), hazards.filter((h) => h.status !== "closed" && h.status !== "rejected").length);
    $("hazard-empty").hidden = hazards.length > 0;
  }

  /** Keyed list update: create new rows, rewrite changed ones, drop gone ones, keep API order. */
  function syncList(ul, items, rows, idKey, render, dataOf) {
    const seen = new Set();
    let prev = null;
    const firstDraw = items.size === 0;
    for (const row of rows) {
      const key = String(row.id);
      seen.add(key);
      const html = render(row);
      let li = items.get(key);
      if (!li) {
        li = document.createElement("li");
        li.dataset[idKey] = key;
        if (!firstDraw) li.classList.add("fresh");
        items.set(key, li);
      }
      if (li.fwHtml !== html) { li.innerHTML = html; li.fwHtml = html; }
      for (const [k, v] of Object.entries(dataOf(row))) {
        if (li.dataset[k] !== String(v ?? "")) li.dataset[k] = String(v ?? "");
      }
      const want = prev ? prev.nextSibling : ul.firstChild;
      if (want !== li) ul.insertBefore(li, want);
      prev = li;
    }
    for (const [key, li] of items) {
      if (!seen.has(key)) { li.remove(); items.delete(key); }
    }
  }

  function focusInstitution(id) {
    const m = markers.get(id);
    if (!m) return;
    map.panTo(m.getLatLng());
    m.openPopup();
  }
  for (const listId of ["alarm-list", "hazard-list"]) {
    $(listId).addEventListener("click", (ev) => {
      const li = ev.target.closest("li[data-institution-id]");
      if (li) focusInstitution(li.dataset.institutionId);
    });
  }

  // ---------------------------------------------------------------- connection

  function setConnection(ok, detail) {
    const body = document.body;
    const wanted = ok ? "ok" : "down";
    if (body.dataset.connection !== wanted) body.dataset.connection = wanted;
    $("conn-banner").hidden = ok;
    if (!ok) { setAttr($("health-status"), "data-health", "unknown"); setText($("health-status"), ""); }
    setText($("conn-text"), ok ? "已连接" : "连接中断");
    if (!ok) {
      const since = state.lastOk ? `最后成功更新于 ${fmtTime(state.lastOk)}，` : "";
      setText($("conn-banner-detail"), `${since}正在重试…${detail ? `（${detail}）` : ""}`);
    }
  }

  async function loadOutline() {
    const { data } = await getJSON("/api/map/outline");
    drawOutline(data);
    state.outlineLoaded = true;
  }

  async function loadInstitutions() {
    const { data } = await getJSON("/api/institutions");
    if (Array.isArray(data)) syncInstitutions(data);
    // redraw with the (possibly new) institutions
    for (const id of markers.keys()) updateMarker(id);
    drawCounts();
  }

  let healthAt = 0;
  async function checkHealth() {
    healthAt = Date.now();
    const el = $("health-status");
    try {
      const { data } = await getJSON("/api/health");
      const s = data?.status || "unknown";
      setAttr(el, "data-health", s);
      setText(el, s === "ok" ? "系统正常" : s === "degraded" ? "系统降级" : s);
      const details = [];
      if (data?.database && data.database !== "ok") details.push(`数据库: ${data.database}`);
      if (data?.version) details.push(`版本 ${data.version}`);
      setAttr(el, "title", details.join("\n") || "/api/health");
    } catch {
      setAttr(el, "data-health", "unknown");
      setText(el, "");
    }
  }

  async function poll() {
    const t0 = performance.now();
    try {
      if (!state.outlineLoaded) await loadOutline();
      if (state.institutionsLoadedAt === 0 || Date.now() - state.institutionsLoadedAt > 60000) {
        await loadInstitutions();
      }
      const [devs, alarms, hazards] = await Promise.all([
        getJSON("/api/devices", state.raw.devices),
        getJSON("/api/alarms?limit=50", state.raw.alarms),
        getJSON("/api/hazards?limit=50", state.raw.hazards),
      ]);
      const t1 = performance.now();
      // devices first: the alarm list looks up device kind and location
      if (devs.data) { applyDevices(Array.isArray(devs.data) ? devs.data : []); state.raw.devices = devs.text; }
      if (alarms.data) { applyAlarms(Array.isArray(alarms.data) ? alarms.data : []); state.raw.alarms = alarms.text; }
      else if (devs.data) applyAlarms(state.alarms); // device locations may have changed
      if (hazards.data) { applyHazards(Array.isArray(hazards.data) ? hazards.data : []); state.raw.hazards = hazards.text; }
      state.lastOk = new Date();
      state.failures = 0;
      setText($("last-update"), fmtTime(state.lastOk));
      setConnection(true);
      state.stats.lastDrawMs = Math.round(performance.now() - t1);
      state.stats.devices = state.devices.length;
      if (document.body.dataset.ready !== "true") document.body.dataset.ready = "true";
      if (Date.now() - healthAt > 5000) checkHealth();
    } catch (err) {
      state.failures += 1;
      const detail = err instanceof HttpError ? err.message
        : err?.name === "AbortError" ? "请求超时" : "网络不可达";
      setConnection(false, detail);
      if (Date.now() - healthAt > 5000) checkHealth();
    } finally {
      state.stats.polls += 1;
      state.stats.lastPollMs = Math.round(performance.now() - t0);
    }
  }

  let timer = null;
  async function loop() {
    const started = Date.now();
    await poll();
    // back off gently while the API is down (1 s, 2 s, then every 3 s)
    const period = state.failures ? Math.min(3000, CONFIG.pollMs * state.failures) : CONFIG.pollMs;
    timer = setTimeout(loop, Math.max(0, period - (Date.now() - started)));
  }

  window.firewatch = {
    map, markers, state, config: CONFIG,
    get stats() { return { ...state.stats }; },
    refresh: () => poll(), // one extra poll now (the 1 s loop carries on)
  };

  loop();
})();
