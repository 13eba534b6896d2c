"""The map component: Leaflet + Leaflet.draw in a Gradio ``gr.HTML``, and its value contract.

The component's value is one JSON object shared by Python and the browser
(``assets/map/map.js`` documents the JavaScript side):

* Python writes ``rasters`` (:class:`MapRaster` dicts), ``active`` (catalog id),
  ``results_seq`` (the results store's version: when it changes, the map fetches the results
  in view again from ``/results/features``; stored results never travel in this value, so its
  size does not grow with the history), ``selected`` (result ids), ``basemaps``
  (:class:`Basemap` dicts, fetched only when the analyst turns one on), ``point_size_m``,
  ``fit_seq`` (bump it to zoom to the active raster) and ``focus`` (``{space, bounds, seq}``:
  zoom to one result), and ``pending`` (``{raster, space, features}`` or null: the boxes a
  whole-scene search has found so far, drawn until the stored result replaces them).
* The browser writes ``drawn`` (the region the analyst drew, a GeoJSON Feature, see
  :class:`DrawnRegion`) and ``drawn_seq``; each write fires the component's ``change`` event.
  A result popup's Select button fires the custom event ``result_toggle`` with ``result_id``
  (the selection itself is per-session state in Python; ``selected`` only shows it).

Leaflet, Leaflet.draw and the map JS/CSS are served by our own server from ``assets/`` (see
:mod:`app.server`): the page never loads code from another host.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from app.errors import AssetNotFoundError, UserInputError

if TYPE_CHECKING:
    from tiles import Raster

__all__ = [
    "DRAWN_SHAPES",
    "MAP_ASSETS",
    "Basemap",
    "DrawnRegion",
    "MapRaster",
    "basemap_catalog",
    "build_map",
    "drawn_region",
    "map_head",
    "map_js",
    "map_raster",
    "map_template",
    "map_value",
]

log = logging.getLogger(__name__)

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
MAP_ASSETS = {
    "css": ("vendor/leaflet/leaflet.css", "vendor/leaflet-draw/leaflet.draw.css",
            "vendor/leaflet-side-by-side/layout.css", "vendor/leaflet-side-by-side/range.css", "map/map.css"),
    "js": ("vendor/leaflet/leaflet.js", "vendor/leaflet-draw/leaflet.draw.js",
           "vendor/leaflet-side-by-side/leaflet-side-by-side.js"),
}
DRAWN_SHAPES = ("rectangle", "polygon", "point")
# Online basemaps offered in the layer switcher, by their name in leafmap's catalog.
BASEMAP_NAMES = ("OpenStreetMap", "Esri.WorldImagery")


def _asset(relative: str) -> Path:
    path = ASSETS_DIR / relative
    if not path.is_file():
        raise AssetNotFoundError(
            f"missing app asset {path}; the checkout is incomplete (restore assets/ from git)"
        )
    return path


def _versioned_url(relative: str) -> str:
    digest = hashlib.sha1(_asset(relative).read_bytes()).hexdigest()[:10]
    return f"/assets/{relative}?v={digest}"


def map_head() -> str:
    """``<link>``/``<script>`` tags for the component's ``head`` (local URLs, cache-busted)."""
    links = [f'<link rel="stylesheet" href="{_versioned_url(p)}">' for p in MAP_ASSETS["css"]]
    scripts = [f'<script src="{_versioned_url(p)}"></script>' for p in MAP_ASSETS["js"]]
    return "\n".join(links + scripts)


def map_js() -> str:
    """The component's ``js_on_load`` body (``assets/map/map.js``)."""
    return _asset("map/map.js").read_text(encoding="utf-8")


def map_template() -> str:
    """The component's ``html_template`` (``assets/map/map.html``; static, no ``${}``)."""
    return _asset("map/map.html").read_text(encoding="utf-8")


@dataclass(frozen=True)
class MapRaster:
    """A raster layer as the map sees it.

    ``kind`` "lonlat": Web Mercator tiles; ``kind`` "pixel": a plain image on a Leaflet
    CRS.Simple map where (lat, lng) = (-row, col) (:mod:`tiles.pixelspace`). ``tile_options``
    are the ``L.tileLayer`` options (``bounds`` as ``[[south, west], [north, east]]`` in map
    coordinates); ``fit_bounds`` is what "zoom to raster" shows. No server path is sent to
    the browser: the raster is named by its file name and catalog id only.
    """

    id: str
    name: str
    kind: str
    tile_url: str
    tile_options: dict[str, Any]
    fit_bounds: tuple[tuple[float, float], tuple[float, float]]
    crs: str | None = None
    preset: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("lonlat", "pixel"):
            raise ValueError(f"MapRaster.kind must be 'lonlat' or 'pixel', got {self.kind!r}")
        if not all(k in self.tile_url for k in ("{z}", "{x}", "{y}")):
            raise ValueError(f"MapRaster.tile_url needs {{z}}, {{x}} and {{y}}: {self.tile_url!r}")


def _native_zoom_lonlat(raster: Raster) -> int:
    """Web Mercator zoom whose pixels are about as fine as the raster's (rounded up, 0..22)."""
    west, south, east, north = raster.bounds_lonlat
    lat = math.radians(max(min((south + north) / 2, 85.0), -85.0))
    res_m = max((east - west) * 111_320.0 * math.cos(lat) / raster.width,
                (north - south) * 110_574.0 / raster.height, 1e-3)
    return int(min(max(math.ceil(math.log2(156_543.034 * math.cos(lat) / res_m)), 0), 22))


def map_raster(raster: Raster, preset: str | None = None) -> MapRaster:
    """The map's view of an opened (catalog) raster, tiles rendered with band ``preset``."""
    from tiles.pixelspace import pixel_tile_scheme

    query = f"?preset={quote(preset)}" if preset and preset != "auto" else ""
    url = f"/tiles/{raster.raster_id}/{{z}}/{{x}}/{{y}}.png{query}"
    if raster.georeferenced:
        west, south, east, north = raster.bounds_lonlat
        native = _native_zoom_lonlat(raster)
        bounds = ((south, west), (north, east))
        options = {"tileSize": 256, "minZoom": 0, "maxNativeZoom": native, "maxZoom": min(native + 3, 24),
                   "noWrap": True, "bounds": [list(bounds[0]), list(bounds[1])]}
        kind, crs = "lonlat", raster.crs_label
    else:
        options = pixel_tile_scheme(raster.width, raster.height).leaflet_options()
        bounds = ((-float(raster.height), 0.0), (0.0, float(raster.width)))
        kind, crs = "pixel", None
    return MapRaster(id=raster.raster_id, name=raster.name, kind=kind,
                     tile_url=url, tile_options=options, fit_bounds=bounds, crs=crs, preset=preset)


@dataclass(frozen=True)
class Basemap:
    """An online XYZ basemap (off until the analyst picks it in the layer switcher)."""

    name: str
    url: str
    attribution: str
    max_zoom: int = 19


def basemap_catalog(names: Sequence[str] = BASEMAP_NAMES) -> tuple[Basemap, ...]:
    """The named basemaps from leafmap's catalog (imported lazily: it is slow to import)."""
    try:
        catalog = importlib.import_module("leafmap.basemaps").xyz_to_leaflet()
    except ImportError as exc:
        raise ImportError(
            "online basemaps come from leafmap's catalog: pip install leafmap==0.63.1 "
            "(or start with --no-basemaps)"
        ) from exc
    out = []
    for name in names:
        entry = catalog.get(name)
        if entry is None:
            raise KeyError(f"basemap {name!r} is not in leafmap's catalog; known: {sorted(catalog)[:20]}...")
        url = entry["url"].replace("{s}.", "")  # one host, no subdomain rotation
        out.append(Basemap(name=name, url=url, attribution=str(entry.get("attribution", name)),
                           max_zoom=int(entry.get("max_zoom", 19))))
    return tuple(out)


def map_value(
    rasters: Sequence[MapRaster],
    active_id: str | None,
    *,
    results_seq: int = 0,
    selected: Sequence[str] = (),
    basemaps: Sequence[Basemap] = (),
    point_size_m: float = 100.0,
    fit_seq: int = 0,
    focus: Mapping[str, Any] | None = None,
    previous: Mapping[str, Any] | None = None,
    pending: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The component value Python sends. ``previous`` (the value the browser last sent) keeps
    the analyst's drawing (``drawn``, ``drawn_seq``) so an update never erases it."""
    value: dict[str, Any] = {
        "rasters": [asdict(r) for r in rasters],
        "active": active_id,
        "results_seq": int(results_seq),
        "selected": list(selected),
        "basemaps": [asdict(b) for b in basemaps],
        "point_size_m": float(point_size_m),
        "fit_seq": int(fit_seq),
        "focus": dict(focus) if focus else None,
        "pending": dict(pending) if pending else None,
    }
    previous = previous if isinstance(previous, Mapping) else {}
    value["drawn"] = previous.get("drawn")
    value["drawn_seq"] = previous.get("drawn_seq", 0)
    return value


@dataclass(frozen=True)
class DrawnRegion:
    """What the analyst drew: a GeoJSON geometry in ``space`` ("lonlat": EPSG:4326, lon first;
    "pixel": raster pixels of raster ``raster_id``, x right, y down)."""

    geometry: dict[str, Any]
    space: str
    shape: str
    raster_id: str | None = None

    def __post_init__(self) -> None:
        if self.space not in ("lonlat", "pixel"):
            raise UserInputError(f"drawn region space must be 'lonlat' or 'pixel', got {self.space!r}")
        if self.shape not in DRAWN_SHAPES:
            raise UserInputError(f"drawn shape must be one of {DRAWN_SHAPES}, got {self.shape!r}")
        expected = "Point" if self.shape == "point" else "Polygon"
        if self.geometry.get("type") != expected:
            raise UserInputError(f"a drawn {self.shape} must be a {expected}, got {self.geometry.get('type')!r}")
        if not _finite_coords(self.geometry.get("coordinates")):
            raise UserInputError("the drawn region has missing or non-finite coordinates; draw it again")


def _finite_coords(coords: Any) -> bool:
    if isinstance(coords, (int, float)) and not isinstance(coords, bool):
        return math.isfinite(coords)
    if isinstance(coords, list) and coords:
        return all(_finite_coords(c) for c in coords)
    return False


def drawn_region(value: Any) -> DrawnRegion | None:
    """The region in a map value sent by the browser, or None when nothing is drawn."""
    if not isinstance(value, Mapping):
        return None
    drawn = value.get("drawn")
    if drawn is None:
        return None
    if not isinstance(drawn, Mapping) or not isinstance(drawn.get("geometry"), Mapping):
        raise UserInputError("the drawn region is not a GeoJSON Feature; clear it and draw again")
    props = drawn.get("properties") if isinstance(drawn.get("properties"), Mapping) else {}
    return DrawnRegion(
        geometry=dict(drawn["geometry"]),
        space=str(props.get("space", "lonlat")),
        shape=str(props.get("shape", "polygon")),
        raster_id=props.get("raster_id"),
    )


def build_map(value: Mapping[str, Any] | None = None, elem_id: str = "geolens-map"):
    """The ``gr.HTML`` map component (Gradio 6 ``html_template`` + ``head`` + ``js_on_load``)."""
    import gradio as gr

    return gr.HTML(
        value=dict(value) if value else {},
        html_template=map_template(),
        js_on_load=map_js(),
        head=map_head(),
        apply_default_css=False,
        elem_id=elem_id,
        min_height=380,
    )
