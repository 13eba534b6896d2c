"""Window -> tiles of the model's input size: :func:`plan_tiles`, :class:`TilePlan`.

A whole-scene search reads a window (the whole raster, :func:`tiles.full_window`, or a drawn
region, :func:`tiles.region_window`) as tiles of ``tile_px`` x ``tile_px`` model pixels. At a
decimation ``d`` (raster pixels per model pixel, >= 1) a tile covers ``span = round(tile_px * d)``
raster pixels per side; neighbours overlap by ``overlap_px`` model pixels. Along each axis the
tiles start at the window's start every ``stride = span - overlap`` raster pixels and the last
one is shifted back to end exactly at the window's end, so

* every pixel of the window lies in at least one tile (edge strips included),
* every tile is full size and lies inside the window,

except on an axis where the window is shorter than one tile: there one tile covers it, grown
about the window to full size inside the raster (clipped to the raster when that is smaller).

The plan is in raster pixels (x = column, y = row), so it holds for any geotransform, rotated
and skewed ones included; only the ground resolution (:func:`ground_resolution_m`, used when the
analyst asks for metres per pixel) looks at the CRS. Planning reads no pixels: tiles entirely
outside a drawn polygon are skipped geometrically, and tiles that are entirely nodata can be
skipped by a caller's ``skip`` predicate (which may read, e.g. a tiny decimated crop; see
:func:`empty_tile_predicate`). :func:`tile_crops` then reads tile by tile (windowed reads;
GDAL serves decimated reads from overviews), never the whole raster.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from pyproj import Geod
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

from tiles.crop import Crop, check_window, crop_shape, read_crop
from tiles.crs import LONLAT_CRS, parse_crs, transform_xy
from tiles.errors import NotGeoreferencedError, TilingError
from tiles.raster import Raster
from tiles.region import as_geometry
from tiles.source import RasterSource

__all__ = [
    "DEFAULT_OVERLAP",
    "DEFAULT_TILE_PX",
    "PlannedTile",
    "TilePlan",
    "empty_tile_predicate",
    "ground_resolution_m",
    "plan_tiles",
    "tile_crops",
]

DEFAULT_TILE_PX = 512
DEFAULT_OVERLAP = 0.125  # fraction of the tile: 64 px at 512 px
_GEOD = Geod(ellps="WGS84")


@dataclass(frozen=True)
class PlannedTile:
    """One tile: ``window`` in raster pixels (whole pixels, inside the raster), read at
    ``out_px`` = (width, height) model pixels (``tile_px`` x ``tile_px`` for full tiles)."""

    index: int  # position in TilePlan.tiles
    row: int  # grid row (y) and column (x) in the full grid, skipped tiles included
    col: int
    window: Window
    out_px: tuple[int, int]

    @property
    def max_side(self) -> int:
        """The ``max_side`` that reads this tile at ``out_px`` (:func:`tiles.read_crop`)."""
        return max(self.out_px)

    @property
    def bounds_px(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the tile in raster pixels (pixel edges)."""
        w = self.window
        return (int(w.col_off), int(w.row_off), int(w.col_off + w.width),
                int(w.row_off + w.height))


@dataclass(frozen=True)
class TilePlan:
    """Tiles covering ``window`` (raster pixels) at ``decimation`` raster px per model px."""

    window: Window  # the planned window: whole pixels, inside the raster
    tile_px: int  # model input side (model pixels)
    overlap_px: int  # overlap between neighbours (model pixels)
    decimation: float  # raster pixels per model pixel (1.0 = native), = span_px / tile_px
    span_px: int  # raster pixels per full tile side
    grid_shape: tuple[int, int]  # (rows, cols) of the full grid
    tiles: tuple[PlannedTile, ...]
    skipped_outside: int = 0  # tiles not meeting the drawn polygon
    skipped_empty: int = 0  # tiles the skip predicate refused (e.g. all nodata)

    def __post_init__(self) -> None:
        if self.tile_px < 1 or not 0 <= self.overlap_px < self.tile_px or self.decimation < 1:
            raise TilingError(f"inconsistent TilePlan: tile_px={self.tile_px}, overlap_px="
                              f"{self.overlap_px}, decimation={self.decimation}")

    @property
    def skipped(self) -> int:
        """Tiles of the grid that will not be read."""
        return self.skipped_outside + self.skipped_empty

    def __len__(self) -> int:
        return len(self.tiles)


def ground_resolution_m(raster: Raster, window: Window | None = None) -> tuple[float, float]:
    """(metres per pixel along a row (x), along a column (y)) of ``raster`` at ``window``'s centre.

    Projected CRSs: the lengths of the geotransform's column vector ``(a, d)`` and row vector
    ``(b, e)`` (so rotated and skewed grids count correctly) times the CRS's linear unit in
    metres (feet CRSs included). Geographic CRSs (degrees): the geodesic length on the WGS84
    ellipsoid of one pixel step at the window's centre (pyproj.Geod). NotGeoreferencedError for
    plain images: give a decimation instead.
    """
    if not raster.georeferenced:
        raise NotGeoreferencedError(
            f"raster {raster.name!r} is not georeferenced, so it has no metres per pixel; "
            "give a decimation factor (raster pixels per model pixel) instead."
        )
    crs = parse_crs(raster.crs)
    t = raster.transform
    if not crs.is_geographic:
        unit = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
        return math.hypot(t.a, t.d) * unit, math.hypot(t.b, t.e) * unit
    window = window or Window(0, 0, raster.width, raster.height)
    col = window.col_off + window.width / 2
    row = window.row_off + window.height / 2
    x, y = t * (np.array([col, col + 1, col]), np.array([row, row, row + 1]))
    lon, lat = transform_xy(raster.crs, LONLAT_CRS, x, y)
    _, _, dist = _GEOD.inv(lon[[0, 0]], lat[[0, 0]], lon[1:], lat[1:])
    return float(dist[0]), float(dist[1])


def plan_tiles(
    raster: Raster,
    window: Window | None = None,
    *,
    tile_px: int = DEFAULT_TILE_PX,
    overlap: float | None = None,
    overlap_px: int | None = None,
    polygon: Any = None,
    gsd_m: float | None = None,
    decimation: float | None = None,
    skip: Callable[[PlannedTile], bool] | None = None,
) -> TilePlan:
    """Tiles of ``tile_px`` model pixels covering ``window`` (raster pixels; default: the
    polygon's bounds, else the whole raster).

    Overlap between neighbours: ``overlap`` as a fraction of the tile in [0, 1) or
    ``overlap_px`` model pixels in [0, tile_px) (default 0.125). Resolution: native, or
    ``gsd_m`` metres per model pixel (>= the raster's, see :func:`ground_resolution_m`), or
    ``decimation`` raster pixels per model pixel (>= 1). ``polygon``: the drawn region in raster
    pixels (shapely geometry or GeoJSON dict); tiles not meeting its interior are skipped.
    ``skip(tile)`` returning True drops a tile (e.g. :func:`empty_tile_predicate`: all nodata).
    Nothing is read here except what ``skip`` reads.
    """
    tile_px = _check_tile_px(tile_px)
    over = _overlap_model_px(tile_px, overlap, overlap_px)
    factor = _decimation(raster, window, gsd_m, decimation)
    geom = _pixel_polygon(polygon)
    window = _plan_window(raster, window, geom)
    span = max(tile_px, round(tile_px * factor))
    stride = span - min(span - 1, round(over * span / tile_px))
    cols = _axis_spans(int(window.col_off), int(window.width), span, stride, raster.width)
    rows = _axis_spans(int(window.row_off), int(window.height), span, stride, raster.height)
    eff = span / tile_px
    keep = np.ones((len(rows), len(cols)), bool)
    if geom is not None:
        keep = _meets_polygon(geom, rows, cols)
    tiles: list[PlannedTile] = []
    skipped_empty = 0
    for r, c in zip(*np.nonzero(keep), strict=True):
        (y0, h), (x0, w) = rows[r], cols[c]
        tile_window = Window(x0, y0, w, h)
        out_h, out_w = crop_shape(tile_window, math.ceil(max(w, h) / eff - 1e-9))
        tile = PlannedTile(len(tiles), int(r), int(c), tile_window, (out_w, out_h))
        if skip is not None and skip(tile):
            skipped_empty += 1
            continue
        tiles.append(tile)
    return TilePlan(window=window, tile_px=tile_px, overlap_px=over, decimation=eff,
                    span_px=span, grid_shape=(len(rows), len(cols)), tiles=tuple(tiles),
                    skipped_outside=int(keep.size - keep.sum()), skipped_empty=skipped_empty)


def tile_crops(
    raster: Raster, plan: TilePlan, *, source: RasterSource | None = None,
    preset: str | None = None,
) -> Iterator[tuple[PlannedTile, Crop]]:
    """(tile, crop) for each tile of ``plan``, read one window at a time (``tiles.read_crop`` at
    the tile's ``out_px``; decimated reads come from overviews). ``source``: the raster's pool
    (``catalog.source(raster_id)``); None opens the file per read."""
    for tile in plan.tiles:
        yield tile, read_crop(raster, tile.window, tile.max_side, preset=preset, source=source)


def empty_tile_predicate(
    raster: Raster, *, source: RasterSource | None = None, probe_px: int = 16,
) -> Callable[[PlannedTile], bool]:
    """A ``skip`` predicate for :func:`plan_tiles`: True when a ``probe_px`` decimated read of
    the tile has no valid pixel (all nodata / alpha 0 / masked). A probe can miss objects
    smaller than ``span / probe_px`` raster pixels standing alone in nodata."""
    def is_empty(tile: PlannedTile) -> bool:
        crop = read_crop(raster, tile.window, probe_px, source=source)
        return not bool(crop.valid.any())

    return is_empty


def _check_tile_px(tile_px: Any) -> int:
    if isinstance(tile_px, bool) or not isinstance(tile_px, (int, np.integer)) or tile_px < 8:
        raise TilingError(f"tile_px must be an integer >= 8 (the model's input side in pixels, "
                          f"e.g. 512), got {tile_px!r}")
    return int(tile_px)


def _overlap_model_px(tile_px: int, overlap: float | None, overlap_px: int | None) -> int:
    if overlap is not None and overlap_px is not None:
        raise TilingError(f"give the overlap as a fraction or in pixels, not both (overlap="
                          f"{overlap!r}, overlap_px={overlap_px!r})")
    if overlap_px is not None:
        if isinstance(overlap_px, bool) or not isinstance(overlap_px, (int, np.integer)) \
                or not 0 <= overlap_px < tile_px:
            raise TilingError(f"overlap_px must be an integer in [0, {tile_px}) (smaller than "
                              f"the tile), got {overlap_px!r}; e.g. {tile_px // 8}")
        return int(overlap_px)
    fraction = DEFAULT_OVERLAP if overlap is None else overlap
    if isinstance(fraction, bool) or not (math.isfinite(fraction) and 0 <= fraction < 1):
        raise TilingError(f"overlap must be a fraction of the tile in [0, 1), got {overlap!r}; "
                          f"e.g. 0.125 (use overlap_px= for pixels)")
    return min(tile_px - 1, round(fraction * tile_px))


def _decimation(raster: Raster, window: Window | None, gsd_m: float | None,
                decimation: float | None) -> float:
    if gsd_m is not None and decimation is not None:
        raise TilingError(f"give gsd_m or decimation, not both (gsd_m={gsd_m!r}, decimation="
                          f"{decimation!r})")
    if decimation is not None:
        if isinstance(decimation, bool) or not (math.isfinite(decimation) and decimation >= 1):
            raise TilingError(f"decimation must be >= 1 raster pixels per model pixel (1 = "
                              f"native), got {decimation!r}")
        return float(decimation)
    if gsd_m is None:
        return 1.0
    if isinstance(gsd_m, bool) or not (math.isfinite(gsd_m) and gsd_m > 0):
        raise TilingError(f"gsd_m must be a positive number of metres per pixel, got {gsd_m!r}")
    native = max(ground_resolution_m(raster, window))
    if gsd_m < native * (1 - 1e-6):
        raise TilingError(f"gsd_m={gsd_m:g} m is finer than raster {raster.name!r}'s native "
                          f"{native:.4g} m per pixel; use gsd_m >= {native:.4g} (or native)")
    return max(1.0, gsd_m / native)


def _pixel_polygon(polygon: Any) -> BaseGeometry | None:
    """A prepared private copy of ``polygon``: preparing the caller's own geometry would leave
    GEOS's lazily built prepared state on it, and two threads running predicates on one
    prepared geometry race on that state (a segfault, seen when the app's scene search merged
    found objects in one thread while its worker merged in another)."""
    if polygon is None:
        return None
    geom = shapely.from_wkb(shapely.to_wkb(as_geometry(polygon)))
    shapely.prepare(geom)
    return geom


def _plan_window(raster: Raster, window: Window | None, geom: BaseGeometry | None) -> Window:
    """The whole-pixel cover of ``window`` (or of the polygon, or the raster), inside the
    raster; RegionOutsideError when it misses the raster."""
    if window is None:
        if geom is None:
            return Window(0, 0, raster.width, raster.height)
        x0, y0, x1, y1 = geom.bounds
        window = Window(x0, y0, max(x1 - x0, 1e-9), max(y1 - y0, 1e-9))
    check_window(raster, window)
    col0 = max(0, math.floor(window.col_off + 1e-9))
    row0 = max(0, math.floor(window.row_off + 1e-9))
    col1 = min(raster.width, math.ceil(window.col_off + window.width - 1e-9))
    row1 = min(raster.height, math.ceil(window.row_off + window.height - 1e-9))
    return Window(col0, row0, max(1, col1 - col0), max(1, row1 - row0))


def _axis_spans(start: int, length: int, span: int, stride: int,
                size: int) -> list[tuple[int, int]]:
    """(offset, length) of the tiles along one axis of ``length`` pixels from ``start``."""
    if length <= span:
        if size <= span:
            return [(0, size)]
        offset = start - (span - length) // 2
        return [(min(max(offset, 0), size - span), span)]
    count = math.ceil((length - span) / stride) + 1
    offsets = start + stride * np.arange(count)
    offsets[-1] = start + length - span
    return [(int(o), span) for o in offsets]


def _meets_polygon(geom: BaseGeometry, rows: list, cols: list) -> np.ndarray:
    """(rows, cols) bool: the tile's box shares interior area (or a line/point) with ``geom``."""
    y0 = np.array([o for o, _ in rows], float)[:, None]
    y1 = y0 + np.array([n for _, n in rows], float)[:, None]
    x0 = np.array([o for o, _ in cols], float)[None, :]
    x1 = x0 + np.array([n for _, n in cols], float)[None, :]
    boxes = shapely.box(*np.broadcast_arrays(x0, y0, x1, y1))
    return shapely.intersects(geom, boxes) & ~shapely.touches(geom, boxes)
