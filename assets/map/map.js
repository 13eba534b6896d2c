// GeoLens map: Leaflet + Leaflet.draw inside a Gradio 6 gr.HTML component.
//
// Runs as the component's js_on_load body, with `element`, `trigger`, `props` and `watch` in
// scope (see gradio/components/html.py). Leaflet and Leaflet.draw are loaded from /assets/vendor
// by the component's `head` before this runs. Nothing here contacts another host: online
// basemaps are offered in the layer switcher but only fetched when the analyst turns one on.
//
// Data contract (props.value, a JSON object, see app/map_view.py):
//   from Python: rasters[], active, results_seq, selected[], basemaps[], point_size_m, fit_seq,
//                focus {space, bounds, seq}, compare {after, before, names, dates} (two dates:
//                a swipe, before left of the divider, after right; null/before null: none)
//   Stored results never travel in the value: they are fetched from GET /results/features for
//   the current view (bbox) when the map moves or results_seq changes, newest first, capped.
//   pending {raster, space, features} (or null): boxes a running whole-scene search has found
//   so far, drawn dashed until the stored result arrives (then the value has no pending).
//   from here:   drawn (a GeoJSON Feature or null): properties.space is "lonlat" (EPSG:4326,
//                lon first) or "pixel" (raster pixels, x right, y down); properties.shape is
//                "rectangle", "polygon" or "point"; plus drawn_seq (increments per edit).
// Setting props.value fires the component's change event, which is how Python hears about it.
// A result popup's Select button sends the custom event "result_toggle" {result_id}; Python owns
// the selection and sends it back in `selected`.

const TASK_COLORS = {ask: "#2563eb", caption: "#059669", ground: "#d97706", classify: "#7c3aed", region: "#dc2626"};
const BOX_COLOR = "#f97316";
const SELECTED_COLOR = "#facc15";
const CHANGE_COLOR = "#e11d48";  // boxes of a change answer (two dates), drawn on the after raster

const root = element.querySelector(".gl-map");
const statusLine = element.querySelector(".gl-map-status");
const state = {
  map: null, kind: null, control: null, drawControl: null, drawnItems: null,
  resultsLayer: null, pendingLayer: null, rasterLayers: {}, baseLayers: {}, activeId: null, fitSeq: null,
  drawnFeature: null, drawnSeq: 0, value: {},
  results: {features: [], shown: 0, total: 0}, resultsSeq: null, fetchTimer: null, fetchCtl: null,
  focusSeq: null, resultsNote: null,
};
const LABEL_LIMIT = 300;  // permanent box labels only when fewer boxes than this are drawn

function esc(text) {
  return String(text === null || text === undefined ? "" : text)
    .replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
}

function currentValue() {
  const v = props.value;
  return v && typeof v === "object" ? v : {};
}

function activeRaster(v) {
  return (v.rasters || []).find(r => r.id === v.active) || null;
}

// --- coordinates -------------------------------------------------------------------------
// lonlat maps use Web Mercator (Leaflet lat/lng are WGS84 degrees). Pixel maps use CRS.Simple
// with (lat, lng) = (-row, col), one map unit per image pixel (tiles.pixelspace).
function pixelToLatLng(x, y) {
  return L.latLng(-y, x);
}

function latLngToPixel(latlng) {
  return [latlng.lng, -latlng.lat];
}

function rasterBounds(r) {
  return L.latLngBounds(r.fit_bounds);
}

// --- map lifecycle -----------------------------------------------------------------------
function buildMap(kind) {
  if (state.map) { state.map.remove(); }
  state.noticeCtl = null;
  state.sideBySide = null; state.compareBefore = null; state.compareIds = null;  // belonged to the old map
  state.rasterLayers = {}; state.baseLayers = {}; state.activeId = null; state.fitSeq = null;
  const map = L.map(root, {
    crs: kind === "pixel" ? L.CRS.Simple : L.CRS.EPSG3857,
    center: [0, 0], zoom: kind === "pixel" ? -2 : 2, minZoom: kind === "pixel" ? -8 : 0,
    maxZoom: kind === "pixel" ? 6 : 24, zoomSnap: 0.25, attributionControl: true,
  });
  map.attributionControl.setPrefix(false);
  state.map = map; state.kind = kind;
  state.drawnItems = L.featureGroup().addTo(map);
  state.resultsLayer = L.featureGroup().addTo(map);
  state.pendingLayer = L.featureGroup().addTo(map);
  addDrawControl(map);
  addZoomToRasterControl(map);
  addResultsNote(map);
  map.on("mousemove", ev => showCursor(ev.latlng));
  map.on("moveend", () => scheduleFetch());
  state.resultsSeq = null;
  state.control = null;
  setDrawn(null);
}

function addDrawControl(map) {
  const shape = {color: "#0ea5e9", weight: 2, fillOpacity: 0.08};
  state.drawControl = new L.Control.Draw({
    position: "topleft",
    draw: {
      polyline: false, circle: false, circlemarker: false,
      rectangle: {shapeOptions: shape, showArea: false},
      polygon: {shapeOptions: shape, showArea: false, allowIntersection: false},
      marker: {},
    },
    edit: {featureGroup: state.drawnItems, remove: true},
  });
  map.addControl(state.drawControl);
  map.on(L.Draw.Event.CREATED, ev => {
    hideNotice();
    state.drawnItems.clearLayers();
    ev.layer.glShape = ev.layerType === "marker" ? "point" : ev.layerType;
    state.drawnItems.addLayer(ev.layer);
    emitDrawn();
  });
  map.on(L.Draw.Event.EDITED, () => emitDrawn());
  map.on(L.Draw.Event.DELETED, () => emitDrawn());
}

function addZoomToRasterControl(map) {
  const Ctl = L.Control.extend({
    options: {position: "topleft"},
    onAdd: function () {
      const div = L.DomUtil.create("div", "leaflet-bar gl-zoom-raster");
      const a = L.DomUtil.create("a", "", div);
      a.href = "#"; a.title = "Zoom to raster"; a.setAttribute("role", "button");
      a.innerHTML = "&#x2922;";
      L.DomEvent.on(a, "click", ev => { L.DomEvent.stop(ev); zoomToActive(); });
      return div;
    },
  });
  map.addControl(new Ctl());
}

function showNotice(text) {
  // A note that stays until the analyst draws again (the status line follows the cursor).
  if (!state.noticeCtl) {
    const Ctl = L.Control.extend({
      options: {position: "bottomleft"},
      onAdd: function () { return L.DomUtil.create("div", "gl-map-notice"); },
    });
    state.noticeCtl = new Ctl();
  }
  state.noticeCtl.addTo(state.map);
  state.noticeCtl.getContainer().textContent = text;
}

function hideNotice() {
  if (state.noticeCtl && state.noticeCtl.getContainer()) { state.noticeCtl.remove(); }
}

function addResultsNote(map) {
  const Ctl = L.Control.extend({
    options: {position: "bottomleft"},
    onAdd: function () { const div = L.DomUtil.create("div", "gl-results-note"); div.style.display = "none"; return div; },
  });
  const ctl = new Ctl();
  map.addControl(ctl);
  state.resultsNote = ctl.getContainer();
}

function zoomToActive() {
  const r = activeRaster(state.value);
  if (r && state.map) { state.map.fitBounds(rasterBounds(r)); }
}

function showCursor(latlng) {
  const r = activeRaster(state.value);
  if (r && r.kind === "pixel") {
    const [x, y] = latLngToPixel(latlng);
    statusLine.textContent = "x " + x.toFixed(1) + " px, y " + y.toFixed(1) + " px (plain image, pixel space)";
  } else {
    statusLine.textContent = "lon " + latlng.lng.toFixed(6) + ", lat " + latlng.lat.toFixed(6);
  }
}

// --- layers ------------------------------------------------------------------------------
function rasterLayer(r) {
  const opts = Object.assign({}, r.tile_options, {bounds: L.latLngBounds(r.tile_options.bounds),
                                                  attribution: esc(r.name)});
  const layer = L.tileLayer(r.tile_url, opts);
  layer.glKey = r.id + "|" + r.tile_url;
  return layer;
}

function syncLayers(v) {
  const map = state.map;
  const wanted = {};
  (v.rasters || []).forEach(r => {
    if (r.kind !== state.kind) { return; }
    if (r.kind === "pixel" && r.id !== v.active) { return; }
    wanted[r.id] = r;
  });
  Object.keys(state.rasterLayers).forEach(id => {
    const layer = state.rasterLayers[id];
    const r = wanted[id];
    if (!r || layer.glKey !== r.id + "|" + r.tile_url) { map.removeLayer(layer); delete state.rasterLayers[id]; }
  });
  Object.values(wanted).forEach(r => {
    if (!state.rasterLayers[r.id]) {
      state.rasterLayers[r.id] = rasterLayer(r);
      if (r.id === v.active) { state.rasterLayers[r.id].addTo(map); }
    }
  });
  const ar = activeRaster(v);
  if (ar && ar.kind === "pixel" && ar.kind === state.kind) {
    map.setMinZoom(ar.tile_options.minZoom - 1);
    map.setMaxZoom(ar.tile_options.maxZoom);
  }
  const active = state.rasterLayers[v.active];
  if (active) { if (!map.hasLayer(active)) { active.addTo(map); } active.bringToFront(); }
  rebuildLayerControl(v);
}

// --- two dates: swipe between the "before" raster (left of the divider) and the shown one ---
// v.compare = {after, before, before_raster, after_raster, before_date, after_date} (app/compare.py);
// the swipe is leaflet-side-by-side (assets/vendor/leaflet-side-by-side), shown while the
// compared "after" raster is the active one on a lon/lat map.
function syncCompare(v) {
  const map = state.map;
  const c = v.compare;
  const before = c && c.before ? state.rasterLayers[c.before] : null;
  const after = c ? state.rasterLayers[c.after] : null;
  const on = !!(before && after && state.kind === "lonlat" && c.after === v.active && L.control.sideBySide);
  if (!on) {
    if (state.sideBySide) { state.sideBySide.remove(); state.sideBySide = null; }
    if (state.compareBefore && state.compareBefore !== state.rasterLayers[v.active] && map.hasLayer(state.compareBefore)) {
      map.removeLayer(state.compareBefore);
    }
    state.compareBefore = null; state.compareIds = null;
    element.dataset.compare = "";
    return;
  }
  if (state.compareBefore && state.compareBefore !== before && state.compareBefore !== after &&
      map.hasLayer(state.compareBefore)) {
    map.removeLayer(state.compareBefore);
  }
  if (!map.hasLayer(before)) { before.addTo(map); }
  after.bringToFront();
  if (!state.sideBySide) {
    state.sideBySide = L.control.sideBySide(before, after).addTo(map);
  } else {
    state.sideBySide.setLeftLayers(before);
    state.sideBySide.setRightLayers(after);
  }
  state.compareBefore = before; state.compareIds = [c.before, c.after];
  element.dataset.compare = c.before + ">" + c.after;
}

function rebuildLayerControl(v) {
  if (state.control) { state.control.remove(); }
  const bases = {};
  if (state.kind === "lonlat") {
    if (!state.baseLayers.none) { state.baseLayers.none = L.layerGroup().addTo(state.map); }
    bases["No basemap (offline)"] = state.baseLayers.none;
    (v.basemaps || []).forEach(b => {
      if (!state.baseLayers[b.name]) {
        state.baseLayers[b.name] = L.tileLayer(b.url, {attribution: b.attribution, maxZoom: 22,
                                                        maxNativeZoom: b.max_zoom || 19});
      }
      bases[b.name + " (online)"] = state.baseLayers[b.name];
    });
  }
  const overlays = {};
  (v.rasters || []).forEach(r => {
    if (state.rasterLayers[r.id]) { overlays[esc(r.name)] = state.rasterLayers[r.id]; }
  });
  overlays["Results"] = state.resultsLayer;
  overlays["Drawn region"] = state.drawnItems;
  state.control = L.control.layers(bases, overlays, {collapsed: false, position: "topright"}).addTo(state.map);
}

// --- results -----------------------------------------------------------------------------
function popupHtml(p, selected) {
  const rows = [["task", p.task], ["question", p.question], ["answer", p.answer],
                ["label", p.label], ["score", p.score === null || p.score === undefined ? null : Number(p.score).toFixed(3)],
                ["found", p.scan ? p.scan.count + " (" + p.scan.tiles_done + " of " +
                                   (p.scan.tiles_total - (p.scan.prefiltered || 0)) + " tiles" +
                                   (p.scan.prefiltered ? ", the most likely of " + p.scan.tiles_total : "") +
                                   (p.scan.stopped ? ", stopped" : "") + ")" : null],
                ["tiles", p.tiles],
                ["before", p.before_raster ? p.before_raster + (p.before_date ? " (" + p.before_date + ")" : "") : null],
                ["after", p.after_raster ? p.after_raster + (p.after_date ? " (" + p.after_date + ")" : "") : null],
                ["model", p.model], ["created", p.created_at]];
  const body = rows.filter(r => r[1] !== null && r[1] !== undefined && r[1] !== "")
    .map(r => "<tr><th>" + esc(r[0]) + "</th><td>" + esc(r[1]) + "</td></tr>").join("");
  const label = selected ? "Deselect" : "Select";
  return "<table class='gl-popup'>" + body + "</table>" +
    "<button type='button' class='gl-select' data-result='" + esc(p.result_id) + "'>" + label + "</button>";
}

function featureToLayer(r, feature) {
  if (r && r.kind === "pixel") {
    const toLatLng = c => pixelToLatLng(c[0], c[1]);
    return L.GeoJSON.geometryToLayer(feature, {coordsToLatLng: toLatLng});
  }
  return L.GeoJSON.geometryToLayer(feature);
}

function resultStyle(p, selected) {
  if (p.kind === "box" && p.before_raster) {
    return {color: selected ? SELECTED_COLOR : CHANGE_COLOR, weight: selected ? 4 : 3, fillOpacity: 0.15};
  }
  if (p.kind === "box") {
    return {color: selected ? SELECTED_COLOR : BOX_COLOR, weight: selected ? 4 : 2, fillOpacity: 0.12};
  }
  // A question about the whole raster is an outline only: hundreds of them must not darken it.
  return {color: selected ? SELECTED_COLOR : (TASK_COLORS[p.task] || "#334155"), weight: selected ? 4 : 2,
          dashArray: "6 4", fill: !p.whole_raster, fillOpacity: 0.04};
}

function viewQuery(v) {
  const r = activeRaster(v);
  const b = state.map.getBounds();
  if (state.kind === "pixel") {
    if (!r) { return null; }
    const sw = latLngToPixel(b.getSouthWest()), ne = latLngToPixel(b.getNorthEast());
    return "space=pixel&raster=" + encodeURIComponent(r.id) + "&bbox=" + [sw[0], ne[1], ne[0], sw[1]].join(",");
  }
  const w = Math.max(b.getWest(), -180), e = Math.min(b.getEast(), 180);
  const s = Math.max(b.getSouth(), -90), n = Math.min(b.getNorth(), 90);
  if (!(w <= e && s <= n)) { return null; }
  return "space=lonlat&bbox=" + [w, s, e, n].join(",");
}

function fetchResults() {
  clearTimeout(state.fetchTimer);
  if (!state.map) { return; }
  const query = viewQuery(state.value);
  if (state.fetchCtl) { state.fetchCtl.abort(); }
  if (!query) { state.results = {features: [], shown: 0, total: 0}; renderResults(); return; }
  const ctl = new AbortController();
  state.fetchCtl = ctl;
  element.dataset.resultsLoading = "1";
  fetch("/results/features?" + query + "&limit=1000", {signal: ctl.signal, credentials: "same-origin"})
    .then(resp => resp.json().then(body => (resp.ok ? body : Promise.reject(new Error(body.error || resp.status)))))
    .then(fc => { if (state.fetchCtl === ctl) { state.results = fc; renderResults(); } })
    .catch(err => { if (err.name !== "AbortError") { statusLine.textContent = "Results could not be loaded: " + err.message; } })
    .finally(() => { if (state.fetchCtl === ctl) { state.fetchCtl = null; element.dataset.resultsLoading = "0"; } });
}

function scheduleFetch() {
  clearTimeout(state.fetchTimer);
  state.fetchTimer = setTimeout(fetchResults, 120);
}

function renderResults() {
  // Unbind first: a permanent tooltip of a layer removed during a zoom animation can outlive it.
  state.resultsLayer.eachLayer(l => { if (l.getTooltip && l.getTooltip()) { l.unbindTooltip(); } });
  state.resultsLayer.clearLayers();
  const v = state.value;
  const r = activeRaster(v);
  const selected = new Set(v.selected || []);
  const features = state.results.features || [];
  const nBoxes = features.filter(f => f.properties.kind === "box").length;
  features.forEach(f => {
    const p = f.properties;
    const isSel = selected.has(p.result_id);
    const layer = featureToLayer(r, f);
    if (layer.setStyle) { layer.setStyle(resultStyle(p, isSel)); }
    layer.glResultId = p.result_id;
    layer.bindPopup(() => popupHtml(p, selected.has(p.result_id)), {maxWidth: 360});
    if (p.kind === "box" && p.label) {
      const score = p.score === null || p.score === undefined ? "" : " " + Number(p.score).toFixed(2);
      layer.bindTooltip(esc(p.label + score), {permanent: nBoxes < LABEL_LIMIT, direction: "top",
                                               className: "gl-box-label"});
    }
    state.resultsLayer.addLayer(layer);
  });
  const shown = state.results.shown || 0, total = state.results.total || 0;
  if (state.resultsNote) {
    state.resultsNote.style.display = total > shown || state.results.total_is_lower_bound ? "" : "none";
    const more = state.results.total_is_lower_bound ? "+" : "";
    state.resultsNote.textContent = "Showing the newest " + shown.toLocaleString() + " of " + total.toLocaleString() +
      more + " results in view; zoom in to see the others.";
  }
  element.dataset.resultLayers = String(features.length);
  if (!state.value.pending) { renderPending(state.value); }  // the stored result replaced them
  element.dataset.resultsShown = String(shown);
  element.dataset.resultsTotal = String(total);
}

function renderPending(v) {
  // Boxes of a running whole-scene search (not stored yet): dashed, redrawn on every update.
  state.pendingLayer.eachLayer(l => { if (l.getTooltip && l.getTooltip()) { l.unbindTooltip(); } });
  state.pendingLayer.clearLayers();
  const pending = v.pending;
  const r = activeRaster(v);
  if (!pending || !r || pending.raster !== r.id) { element.dataset.pendingBoxes = "0"; return; }
  const features = pending.features || [];
  features.forEach(f => {
    const p = f.properties;
    const layer = featureToLayer(r, f);
    if (layer.setStyle) { layer.setStyle({color: BOX_COLOR, weight: 2, dashArray: "4 3", fillOpacity: 0.08}); }
    if (p.label) {  // on hover only: permanent labels cost a layout each, on every update
      const score = p.score === null || p.score === undefined ? "" : " " + Number(p.score).toFixed(2);
      layer.bindTooltip(esc(p.label + score), {direction: "top", className: "gl-box-label"});
    }
    state.pendingLayer.addLayer(layer);
  });
  element.dataset.pendingBoxes = String(features.length);
}

function toggleSelected(resultId) {
  // The selection is Python's (per session); ask it to toggle, it sends the new value back.
  trigger("result_toggle", {result_id: resultId});
  state.map.closePopup();
}

root.addEventListener("click", ev => {
  const btn = ev.target.closest ? ev.target.closest("button.gl-select") : null;
  if (btn) { ev.preventDefault(); toggleSelected(btn.getAttribute("data-result")); }
});

// --- drawn region ------------------------------------------------------------------------
function pointPreview(latlng, sizeM) {
  const half = sizeM / 2;
  const dLat = half / 111320;
  const dLng = half / (111320 * Math.max(Math.cos(latlng.lat * Math.PI / 180), 1e-6));
  return L.rectangle([[latlng.lat - dLat, latlng.lng - dLng], [latlng.lat + dLat, latlng.lng + dLng]],
                     {color: "#0ea5e9", weight: 1, dashArray: "2 4", fill: false, interactive: false});
}

function layerToFeature(layer) {
  const r = activeRaster(state.value);
  const feature = layer.toGeoJSON(false);
  const space = state.kind === "pixel" ? "pixel" : "lonlat";
  if (space === "pixel" && r) {
    const conv = ll => latLngToPixel(ll);
    if (layer.getLatLng) {
      feature.geometry.coordinates = conv(layer.getLatLng());
    } else {
      feature.geometry.coordinates = layer.getLatLngs().map(ring => {
        const pts = ring.map(conv);
        pts.push(pts[0]);
        return pts;
      });
    }
  }
  feature.properties = {space: space, shape: layer.glShape || "polygon", raster_id: r ? r.id : null};
  return feature;
}

function setDrawn(feature) {
  state.drawnFeature = feature;
  if (state.pointPreview && state.map) { state.map.removeLayer(state.pointPreview); state.pointPreview = null; }
}

function emitDrawn() {
  const layers = state.drawnItems.getLayers();
  const layer = layers.length ? layers[layers.length - 1] : null;
  setDrawn(layer ? layerToFeature(layer) : null);
  if (layer && layer.getLatLng && state.kind === "lonlat") {
    state.pointPreview = pointPreview(layer.getLatLng(), state.value.point_size_m || 100).addTo(state.map);
  }
  state.drawnSeq += 1;
  const next = Object.assign({}, currentValue(), {drawn: state.drawnFeature, drawn_seq: state.drawnSeq});
  state.value = next;
  props.value = next;
}

// --- sync from Python --------------------------------------------------------------------
function sync() {
  const v = currentValue();
  state.value = v;
  const r = activeRaster(v);
  const kind = r ? r.kind : (state.kind || "lonlat");
  const rebuilt = kind !== state.kind || !state.map;
  const previousDrawing = state.drawnFeature;
  if (rebuilt) { buildMap(kind); }
  syncLayers(v);
  syncCompare(v);
  const activeChanged = r && r.id !== state.activeId;
  if (activeChanged && previousDrawing && previousDrawing.properties.raster_id !== r.id) {
    // A drawing belongs to the raster it was drawn on: switching rasters clears it, visibly.
    const from = (v.rasters || []).find(x => x.id === previousDrawing.properties.raster_id);
    state.drawnItems.clearLayers();
    setDrawn(null);
    state.drawnSeq += 1;
    showNotice("The drawing was cleared: it was made on " + (from ? from.name : "another raster") +
               ". Draw again on " + r.name + ".");
  }
  if (r && (activeChanged || v.fit_seq !== state.fitSeq)) { state.map.fitBounds(rasterBounds(r)); }
  const focus = v.focus;
  if (focus && focus.seq !== state.focusSeq && focus.space === state.kind) {
    state.map.fitBounds(L.latLngBounds(focus.bounds), {maxZoom: state.kind === "pixel" ? 4 : 20, padding: [40, 40]});
  }
  state.focusSeq = focus ? focus.seq : null;
  state.activeId = r ? r.id : null;
  state.fitSeq = v.fit_seq;
  if (rebuilt || activeChanged || v.results_seq !== state.resultsSeq) {
    state.resultsSeq = v.results_seq;
    fetchResults();
  } else {
    renderResults();
  }
  if (v.pending) { renderPending(v); }
  element.dataset.activeRaster = state.activeId || "";
  element.dataset.mapKind = state.kind;
  const drawnText = JSON.stringify(state.drawnFeature);
  if (JSON.stringify(v.drawn === undefined ? null : v.drawn) !== drawnText || v.drawn_seq !== state.drawnSeq) {
    const next = Object.assign({}, v, {drawn: state.drawnFeature, drawn_seq: state.drawnSeq});
    state.value = next;
    props.value = next;  // Python's update did not know the current drawing: send it back
  }
}

const resize = new ResizeObserver(() => { if (state.map) { state.map.invalidateSize(); } });
resize.observe(root);
watch("value", () => { try { sync(); } catch (err) { console.error("GeoLens map sync failed:", err); } });

// A small handle for tests and the browser console: read-only views of the Leaflet state.
window.geolens = {
  map: () => state.map,
  kind: () => state.kind,
  drawnFeature: () => state.drawnFeature,
  drawnLatLngs: () => {
    const layers = state.drawnItems ? state.drawnItems.getLayers() : [];
    if (!layers.length) { return null; }
    const l = layers[layers.length - 1];
    const flat = ll => ll.map(p => [p.lng, p.lat]);
    return l.getLatLng ? [[l.getLatLng().lng, l.getLatLng().lat]] : flat(l.getLatLngs()[0]);
  },
  resultLayerCount: () => (state.resultsLayer ? state.resultsLayer.getLayers().length : 0),
  pendingCount: () => (state.pendingLayer ? state.pendingLayer.getLayers().length : 0),
  resultsLoading: () => element.dataset.resultsLoading === "1",
  notice: () => (state.noticeCtl && state.noticeCtl.getContainer() ? state.noticeCtl.getContainer().textContent : ""),
  resultsCounts: () => ({shown: state.results.shown || 0, total: state.results.total || 0}),
  tileLayerUrls: () => Object.values(state.rasterLayers).map(l => l._url),
  compare: () => (state.sideBySide ? {before: state.compareIds[0], after: state.compareIds[1]} : null),
};

statusLine.textContent = "Draw a rectangle, polygon or point (toolbar on the left), then ask.";
try { sync(); } catch (err) { console.error("GeoLens map init failed:", err); }
