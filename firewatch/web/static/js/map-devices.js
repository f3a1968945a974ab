/* Device markers on the live map: each device a small circle coloured by its own state.
 *
 * Devices have no coordinates of their own, so each one sits on a small ring around its
 * institution's marker, in a fixed order (by id) and at a fixed distance in screen pixels, so
 * they never overlap the institution or each other at any zoom. They are shown only from
 * DEVICE_ZOOM on: at county zoom the institution markers (worst state of their devices) tell the
 * story and 2,000 device circles would only be noise. All device circles share one canvas
 * renderer, so a county's worth of devices is one <canvas>, not thousands of DOM nodes; a pushed
 * change restyles one circle and the canvas repaints once per animation frame.
 *
 * The canvas lies in its own pane just below the institution markers' SVG: a canvas above would
 * take every click over the map, while the SVG lets clicks between its paths through, so both
 * kinds of marker stay clickable.
 */

import { KIND_ZH, STATE_COLOR, STATE_ZH, esc } from "./vocab.js";

export const DEVICE_ZOOM = 14; // from this zoom on, devices are drawn around their institution
const DOT_RADIUS = 6; // px
const DOT_GAP = 5; // px between neighbouring circles on a ring
const MIN_RING = 26; // px from the institution's centre: clear of its largest (alarm) marker

function dotStyle(state) {
  return {
    radius: DOT_RADIUS, fillColor: STATE_COLOR[state] || STATE_COLOR.offline, fillOpacity: 1,
    color: state === "alarm" ? "#7f1d1d" : "#ffffff", weight: state === "alarm" ? 2.5 : 1.5, opacity: 1,
  };
}

/** Where the i-th of n devices goes, in pixels from its institution's centre (first at the top). */
function ringOffset(i, n) {
  const radius = Math.max(MIN_RING, (n * (2 * DOT_RADIUS + DOT_GAP)) / (2 * Math.PI));
  const angle = -Math.PI / 2 + (2 * Math.PI * i) / n;
  return L.point(radius * Math.cos(angle), radius * Math.sin(angle));
}

export class DeviceMarkers {
  /**
   * @param map the Leaflet map
   * @param state the map page's {institutions, devices, byInstitution}
   * @param centreOf institution id -> L.LatLng of its marker (or undefined)
   */
  constructor(map, state, centreOf) {
    this.map = map;
    this.state = state;
    this.centreOf = centreOf;
    this.markers = new Map(); // device id -> L.CircleMarker
    map.createPane("devices").style.zIndex = 390; // overlayPane (institution markers) is 400
    this.renderer = L.canvas({ pane: "devices", padding: 0.3 });
    this.layer = L.layerGroup();
    map.on("zoomend", () => this.show());
  }

  get visible() { return this.map.getZoom() >= DEVICE_ZOOM; }

  /** Add or restyle a device's circle; a new or moved device re-places the rings it changes. */
  put(d) {
    let m = this.markers.get(d.id);
    if (!m) {
      m = L.circleMarker([0, 0], { ...dotStyle(d.state), renderer: this.renderer });
      m.fwDeviceId = d.id;
      m.fwState = d.state;
      m.bindTooltip(() => this.tooltipHtml(m.fwDeviceId),
        { direction: "top", offset: [0, -DOT_RADIUS], className: "fw-tooltip" });
      m.on("click", () => { window.location.href = `/devices/${encodeURIComponent(m.fwDeviceId)}`; });
      this.markers.set(d.id, m);
      this.layer.addLayer(m);
    } else if (m.fwState !== d.state) {
      m.fwState = d.state;
      m.setStyle(dotStyle(d.state));
    }
    if (m.fwInstitutionId !== d.institution_id) {
      const from = m.fwInstitutionId;
      m.fwInstitutionId = d.institution_id;
      if (this.visible) {
        if (from) this.placeRing(from);
        this.placeRing(d.institution_id);
      }
    }
    if (m.isTooltipOpen()) m.getTooltip().update();
  }

  /** Drop circles of devices no longer in the snapshot. */
  prune() {
    for (const [id, m] of this.markers) {
      if (!this.state.devices.has(id)) { this.layer.removeLayer(m); this.markers.delete(id); }
    }
  }

  /** Draw the circles when zoomed in far enough (placed for this zoom), hide them otherwise. */
  show() {
    if (!this.visible) {
      this.layer.remove();
      return;
    }
    for (const id of this.state.byInstitution.keys()) this.placeRing(id);
    if (!this.map.hasLayer(this.layer)) this.layer.addTo(this.map);
  }

  placeRing(institutionId) {
    const centre = this.centreOf(institutionId);
    const agg = this.state.byInstitution.get(institutionId);
    if (!centre || !agg) return;
    const ids = [...agg.devices.keys()].sort();
    const origin = this.map.latLngToLayerPoint(centre);
    ids.forEach((id, i) => {
      this.markers.get(id)?.setLatLng(this.map.layerPointToLatLng(origin.add(ringOffset(i, ids.length))));
    });
  }

  /** Zoom in on an institution so its devices are drawn around it. */
  zoomTo(latlng) {
    this.map.setView(latlng, Math.max(DEVICE_ZOOM, this.map.getZoom()));
  }

  tooltipHtml(id) {
    const d = this.state.devices.get(id);
    if (!d) return esc(id);
    const inst = this.state.institutions.get(d.institution_id);
    return `<div class="fw-tip" data-device-id="${esc(d.id)}" data-state="${esc(d.state)}">` +
      `<div class="fw-inst-name">${esc(KIND_ZH[d.kind] || d.kind)} · ${esc(d.location)}</div>` +
      `<div><span class="st st-${esc(d.state)}">${esc(STATE_ZH[d.state] || d.state)}</span>` +
      (d.state !== "normal" && d.state_reason ? ` ${esc(d.state_reason)}` : "") + "</div>" +
      `<div class="fw-inst-meta">${esc(inst?.name || d.institution_id)} · ${esc(d.id)} · 点击查看详情</div></div>`;
  }
}
