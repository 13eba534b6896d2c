"""Co-registered crop pairs of two dates: :class:`CropPair` and :func:`read_crop_pair`.

Two rasters of the same place (a "before" and an "after" acquisition) rarely share a pixel
grid: NAIP 2009 and 2020 of one quarter-quad differ by a 1 m shift and one row; a Sentinel-2
scene in UTM and a basemap in Web Mercator share nothing. A change question needs both images
on ONE grid, so that a box in crop pixels is the same ground in both.

:func:`read_crop_pair` takes one region (lon/lat, any CRS, or either raster's pixels) and
reads both rasters over it onto a common grid:

* the grid is the after raster's pixel grid by default (``grid="after"``; boxes the model
  returns are then after-raster pixels), the before raster's (``grid="before"``), or a chosen
  CRS and resolution (:class:`PairGrid`, pixels aligned to multiples of the resolution like
  ``gdalwarp -tap``);
* the crop covers the whole grid pixels that the region covers where BOTH rasters have a
  footprint (partial overlaps shrink it to the shared ground); when that is larger than
  ``max_side`` the grid is coarsened exactly as :func:`tiles.read_crop` decimates;
* each raster is warped onto the crop's grid by GDAL's warper through a
  :class:`rasterio.vrt.WarpedVRT` whose output grid is just the crop: only the source blocks
  under the crop are read, never the whole raster. Resampling is ``bilinear`` by default (a
  sub-pixel shift is interpolated, not snapped to the nearest pixel, which would move edges by
  up to half a pixel between the dates); ``nearest`` keeps original values (classification
  maps); palette rasters always use ``nearest``. The warp equals ``gdalwarp -r <resampling>
  -te/-tr`` of the same grid (tests/tiles/test_pairs.py checks this pixel for pixel);
* display bands come from the same band logic as single crops (:func:`tiles.select_bands`:
  4-band NAIP R,G,B,NIR shows R,G,B; non-uint8 data gets the raster's map stretch);
* validity: a source pixel is no data where the raster's nodata value, alpha band or internal
  mask says so, and where the grid lies off the raster. The pair's mask is the AND of both
  (``CropPair.valid``); both crops carry it and are 0 outside it, so the model never sees
  "change" where one date simply has no data.

Both crops get the same ``transform`` (crop px -> grid CRS) and ``crs`` (the grid's), so
:func:`tiles.boxes_to_lonlat` works on either. Their ``window`` is the crop's window on the
common grid: for the default grid that is the after raster's pixels (the after crop behaves
like any :func:`tiles.read_crop` crop); the before crop's ``window`` is NOT in the before
raster's pixels unless ``grid="before"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from affine import Affine
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window
from shapely.geometry import Point, Polygon, box
from shapely.geometry.base import BaseGeometry

from tiles.crop import DEFAULT_MAX_SIDE, Crop, crop_shape
from tiles.crs import LONLAT_CRS, crs_label, lonlat_bounds_of_ring, parse_crs, transform_xy
from tiles.display import display_stats, needs_stretch, palette_lut, to_display_rgb
from tiles.errors import CropError, NotGeoreferencedError, RegionOutsideError
from tiles.pixelspace import LEAFLET_SIMPLE, PIXEL, PIXEL_SPACES, geometry_leaflet_simple_to_px
from tiles.presets import select_bands
from tiles.raster import Raster
from tiles.reading import raster_handle
from tiles.region import DEFAULT_POINT_SIZE_M, DEFAULT_POINT_SIZE_PX, as_geometry, point_square
from tiles.source import RasterSource
from tiles.types import BoundsLonLat, CRSLike

__all__ = [
    "PAIR_GRIDS",
    "PAIR_RESAMPLING",
    "CropPair",
    "PairGrid",
    "PairOverlapError",
    "read_crop_pair",
]

PAIR_GRIDS = ("after", "before")
PAIR_RESAMPLING = Resampling.bilinear
_DENSIFY_PARTS = 32  # segments along the longer side of a geometry before reprojecting it
_EDGE_SAMPLES = 21  # points per raster edge for its footprint on the grid
_SNAP_PX = 1e-6


class PairOverlapError(RegionOutsideError):
    """Two rasters (or the region and their shared ground) do not overlap; the message names
    both footprints in lon/lat."""


@dataclass(frozen=True)
class PairGrid:
    """A chosen common grid: ``crs`` and pixel size ``resolution`` in CRS units (one number,
    or (x, y)). Pixel edges are aligned to multiples of the resolution (``gdalwarp -tap``)."""

    crs: CRSLike
    resolution: float | tuple[float, float]

    def __post_init__(self) -> None:
        res = self.resolution_xy
        if not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in res):
            raise CropError(
                f"PairGrid resolution must be one or two finite numbers > 0 (CRS units per "
                f"pixel), got {self.resolution!r}"
            )
        parse_crs(self.crs)  # UnsupportedCRSError for a CRS PROJ cannot read

    @property
    def resolution_xy(self) -> tuple[float, float]:
        res = self.resolution
        if isinstance(res, (tuple, list)):
            if len(res) != 2:
                raise CropError(f"PairGrid resolution must be x or (x, y), got {res!r}")
            return float(res[0]), float(res[1])
        if isinstance(res, bool) or not isinstance(res, (int, float)):
            raise CropError(f"PairGrid resolution must be a number or (x, y), got {res!r}")
        return float(res), float(res)


@dataclass(frozen=True)
class _Grid:
    name: str  # "after" | "before" | "custom"
    crs: str  # WKT
    transform: Affine  # grid px -> grid CRS


@dataclass(frozen=True)
class CropPair:
    """Two crops of one ground footprint on one pixel grid (``before`` earlier, ``after``
    later). A box in crop pixels is the same ground in both; ``transform`` maps crop px to
    ``crs`` for both."""

    before: Crop
    after: Crop
    transform: Affine  # crop px (x right, y down, pixel edges) -> grid CRS
    crs: str  # grid CRS WKT
    grid: str  # "after", "before" or "custom"
    grid_window: Window  # grid pixels the crop covers (before any decimation)
    resampling: str  # rasterio Resampling name used for both warps
    footprint_lonlat: BoundsLonLat  # ground the crop covers, (west, south, east, north)
    before_footprint_lonlat: BoundsLonLat  # the whole before raster
    after_footprint_lonlat: BoundsLonLat  # the whole after raster

    def __post_init__(self) -> None:
        if self.before.image.shape != self.after.image.shape:
            raise ValueError(
                f"CropPair crops must have one shape, got {self.before.image.shape} and "
                f"{self.after.image.shape}"
            )
        if not (self.before.transform == self.after.transform == self.transform):
            raise ValueError("CropPair crops must share the pair's transform")

    @property
    def valid(self) -> np.ndarray:
        """(H, W) bool: True where both dates have data."""
        return self.after.valid

    @property
    def width(self) -> int:
        return self.after.width

    @property
    def height(self) -> int:
        return self.after.height

    @property
    def crs_label(self) -> str:
        return crs_label(self.crs)


def read_crop_pair(
    before: Raster,
    after: Raster,
    region: Any,
    region_crs: CRSLike | None = LONLAT_CRS,
    *,
    region_raster: str = "after",
    grid: str | PairGrid | None = None,
    max_side: int = DEFAULT_MAX_SIDE,
    resampling: Resampling = PAIR_RESAMPLING,
    preset: str | None = None,
    before_preset: str | None = None,
    before_source: RasterSource | None = None,
    after_source: RasterSource | None = None,
    point_size_m: float = DEFAULT_POINT_SIZE_M,
    point_size_px: float = DEFAULT_POINT_SIZE_PX,
) -> CropPair:
    """Read ``before`` and ``after`` over ``region`` onto one common grid (module docstring).

    ``region``: a GeoJSON geometry/Feature, a shapely geometry or a rasterio Window. Its
    coordinates are in ``region_crs`` (EPSG:4326 by default, any CRS), or in pixels of
    ``region_raster`` ("after" or "before") when ``region_crs`` is ``"pixel"``/None or
    ``"leaflet-simple"``, or the region is a Window. Points become ground squares of
    ``point_size_m`` (``point_size_px`` in pixel space) as in :func:`tiles.region_window`.
    ``grid``: None/"after", "before", or a :class:`PairGrid`. ``preset``/``before_preset``:
    band presets (``before_preset`` defaults to ``preset``). ``*_source``: the rasters' pooled
    datasets (``catalog.source(raster_id)``); None opens each file for the call.

    Raises NotGeoreferencedError (a raster in pixel space), PairOverlapError (the rasters, or
    the region and their shared ground, do not overlap: names both footprints),
    RegionOutsideError (the region misses both rasters), CropError/GeometryError (bad input).
    """
    _check_inputs(before, after, region_raster, max_side, resampling)
    the_grid = _resolve_grid(before, after, grid)
    anchor = after if region_raster == "after" else before
    region_px = _region_on_grid(region, region_crs, anchor, the_grid, point_size_m,
                                point_size_px)
    before_fp = _footprint_on_grid(before, the_grid)
    after_fp = _footprint_on_grid(after, the_grid)
    window = _pair_window(region_px, before_fp, after_fp, before, after)
    out_h, out_w = crop_shape(window, max_side)
    scale_x, scale_y = window.width / out_w, window.height / out_h
    transform = (the_grid.transform @ Affine.translation(window.col_off, window.row_off)
                 @ Affine.scale(scale_x, scale_y))
    shape = (out_h, out_w)
    image_b, valid_b = _warp_display_rgb(before, before_source, before_preset or preset,
                                         the_grid.crs, transform, shape, resampling)
    image_a, valid_a = _warp_display_rgb(after, after_source, preset, the_grid.crs, transform,
                                         shape, resampling)
    valid = valid_b & valid_a
    image_b[~valid] = 0
    image_a[~valid] = 0

    def crop(raster: Raster, image: np.ndarray) -> Crop:
        return Crop(image=image, valid=valid.copy(), transform=transform, crs=the_grid.crs,
                    window=window, raster_path=raster.path, raster_id=raster.raster_id,
                    scale_x=scale_x, scale_y=scale_y)

    return CropPair(
        before=crop(before, image_b), after=crop(after, image_a), transform=transform,
        crs=the_grid.crs, grid=the_grid.name, grid_window=window,
        resampling=Resampling(resampling).name,
        footprint_lonlat=_crop_bounds_lonlat(the_grid.crs, transform, out_w, out_h),
        before_footprint_lonlat=before.bounds_lonlat, after_footprint_lonlat=after.bounds_lonlat,
    )


def _check_inputs(before: Raster, after: Raster, region_raster: str, max_side: int,
                  resampling: Any) -> None:
    for role, raster in (("before", before), ("after", after)):
        if not isinstance(raster, Raster):
            raise CropError(
                f"{role} must be a tiles.Raster (from Catalog.open or tiles.open_raster), got "
                f"{type(raster).__name__}"
            )
        if not raster.georeferenced:
            raise NotGeoreferencedError(
                f"the {role} raster {raster.name!r} is not georeferenced (pixel space), so it "
                "cannot be placed on a common grid with another date; compare two "
                "georeferenced rasters (GeoTIFFs with a CRS)."
            )
    if region_raster not in PAIR_GRIDS:
        raise CropError(
            f"region_raster must be 'after' or 'before' (whose pixels a pixel-space region is "
            f"in), got {region_raster!r}"
        )
    if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 1:
        raise CropError(f"max_side must be an integer >= 1 (pixels), got {max_side!r}")
    try:
        Resampling(resampling)
    except ValueError:
        raise CropError(
            f"resampling must be a rasterio Resampling (e.g. Resampling.bilinear), got "
            f"{resampling!r}"
        ) from None


def _resolve_grid(before: Raster, after: Raster, grid: str | PairGrid | None) -> _Grid:
    if grid is None or grid == "after":
        return _Grid("after", after.crs, after.transform)
    if grid == "before":
        return _Grid("before", before.crs, before.transform)
    if isinstance(grid, PairGrid):
        res_x, res_y = grid.resolution_xy
        return _Grid("custom", parse_crs(grid.crs).to_wkt(), Affine(res_x, 0, 0, 0, -res_y, 0))
    raise CropError(
        f"grid must be None, 'after', 'before' or a tiles.PairGrid(crs, resolution), got "
        f"{grid!r}"
    )


def _densify(geom: BaseGeometry) -> BaseGeometry:
    minx, miny, maxx, maxy = geom.bounds
    span = max(maxx - minx, maxy - miny)
    return shapely.segmentize(geom, span / _DENSIFY_PARTS) if span > 0 else geom


def _points_as_squares(geom: BaseGeometry, square) -> BaseGeometry:
    """Every point of ``geom`` replaced by ``square(x, y)`` (a polygon)."""
    if isinstance(geom, Point):
        return square(geom.x, geom.y)
    if geom.geom_type in ("MultiPoint", "GeometryCollection", "MultiPolygon",
                          "MultiLineString"):
        parts = [_points_as_squares(part, square) for part in shapely.get_parts(geom)]
        return parts[0] if len(parts) == 1 else shapely.GeometryCollection(parts)
    return geom


def _to_grid_px(geom: BaseGeometry, geom_crs: str, grid: _Grid) -> BaseGeometry:
    """A geometry in ``geom_crs`` (densified first) -> grid pixels."""
    inverse = ~grid.transform
    same = parse_crs(geom_crs) == parse_crs(grid.crs)

    def convert(xy: np.ndarray) -> np.ndarray:
        x, y = xy[:, 0], xy[:, 1]
        if not same:
            x, y = transform_xy(geom_crs, grid.crs, x, y)
        cols, rows = inverse @ (x, y)
        return np.column_stack([cols, rows])

    return shapely.transform(_densify(geom), convert)


def _region_on_grid(region: Any, region_crs: CRSLike | None, anchor: Raster, grid: _Grid,
                    point_size_m: float, point_size_px: float) -> BaseGeometry:
    if isinstance(region, Window):
        values = (region.col_off, region.row_off, region.width, region.height)
        if not all(math.isfinite(v) for v in values) or region.width <= 0 or region.height <= 0:
            raise CropError(f"a region window must be finite with a positive size, got {region!r}")
        geom, region_crs = box(region.col_off, region.row_off, region.col_off + region.width,
                               region.row_off + region.height), PIXEL
    else:
        geom = as_geometry(region)
    if region_crs is None or (isinstance(region_crs, str) and region_crs in PIXEL_SPACES):
        if region_crs == LEAFLET_SIMPLE:
            geom = geometry_leaflet_simple_to_px(geom)
        geom = _points_as_squares(geom, lambda x, y: point_square(
            x, y, PIXEL, point_size_px=point_size_px))
        affine = anchor.transform
        geom = shapely.transform(_densify(geom), lambda xy: np.column_stack(
            affine @ (xy[:, 0], xy[:, 1])))
        geom_crs = anchor.crs
    else:
        geom = _points_as_squares(geom, lambda x, y: point_square(
            x, y, region_crs, point_size_m=point_size_m))
        geom_crs = parse_crs(region_crs).to_wkt()
    return _to_grid_px(geom, geom_crs, grid)


def _edge_ring(raster: Raster) -> Polygon:
    t = np.linspace(0.0, 1.0, _EDGE_SAMPLES)[:-1]
    w, h = raster.width, raster.height
    cols = np.concatenate([t * w, np.full_like(t, w), (1 - t) * w, np.zeros_like(t)])
    rows = np.concatenate([np.zeros_like(t), t * h, np.full_like(t, h), (1 - t) * h])
    xs, ys = raster.transform @ (cols, rows)
    return Polygon(zip(xs, ys, strict=True))


def _footprint_on_grid(raster: Raster, grid: _Grid) -> Polygon:
    ring = _edge_ring(raster)
    if parse_crs(raster.crs) == parse_crs(grid.crs):
        inverse = ~grid.transform
        return shapely.transform(ring, lambda xy: np.column_stack(inverse @ (xy[:, 0], xy[:, 1])))
    xy = shapely.get_coordinates(ring)
    x, y = transform_xy(raster.crs, grid.crs, xy[:, 0], xy[:, 1])
    cols, rows = ~grid.transform @ (x, y)
    return Polygon(zip(cols, rows, strict=True)).buffer(0)


def _describe(raster: Raster, role: str) -> str:
    west, south, east, north = raster.bounds_lonlat
    return (f"the {role} raster {raster.name!r} covers lon {west:.6f}..{east:.6f}, "
            f"lat {south:.6f}..{north:.6f}")


def _pair_window(region_px: BaseGeometry, before_fp: Polygon, after_fp: Polygon,
                 before: Raster, after: Raster) -> Window:
    both = before_fp.intersection(after_fp)
    footprints = f"{_describe(before, 'before')} and {_describe(after, 'after')} (EPSG:4326)"
    if both.is_empty or both.area <= 0:
        raise PairOverlapError(
            f"the two rasters do not overlap: {footprints}. Compare two rasters of the same "
            "place."
        )
    if region_px.geom_type in ("Polygon", "MultiPolygon"):
        area = region_px.buffer(0) if not region_px.is_valid else region_px
    else:  # lines, mixed collections: their bounding box (at least one pixel)
        minx, miny, maxx, maxy = region_px.bounds
        area = box(minx, miny, max(maxx, minx + 1), max(maxy, miny + 1))
    shared = area.intersection(both)
    if shared.is_empty or shared.area <= 0:
        covered = [role for role, fp in (("before", before_fp), ("after", after_fp))
                   if area.intersects(fp)]
        what = (f"covers only the {covered[0]} raster" if len(covered) == 1
                else "misses the ground both rasters cover" if covered
                else "misses both rasters")
        error = PairOverlapError if covered else RegionOutsideError
        raise error(
            f"the region {what}: {footprints}. Draw the region where both dates overlap."
        )
    minx, miny, maxx, maxy = shared.bounds
    c0, r0 = math.floor(minx + _SNAP_PX), math.floor(miny + _SNAP_PX)
    c1, r1 = math.ceil(maxx - _SNAP_PX), math.ceil(maxy - _SNAP_PX)
    return Window(c0, r0, max(c1, c0 + 1) - c0, max(r1, r0 + 1) - r0)


def _warp_display_rgb(
    raster: Raster, source: RasterSource | None, preset: str | None, crs: str,
    transform: Affine, shape: tuple[int, int], resampling: Resampling,
) -> tuple[np.ndarray, np.ndarray]:
    """(rgb (H, W, 3) uint8, valid (H, W) bool) of ``raster`` warped onto the crop grid."""
    selection = select_bands(raster, preset)
    method = Resampling.nearest if selection.palette else Resampling(resampling)
    out_h, out_w = shape
    options: dict[str, Any] = {
        "crs": crs, "transform": transform, "width": out_w, "height": out_h,
        "resampling": method,
    }
    alpha = raster.alpha_band
    if alpha is not None:
        options.update(src_alpha=alpha, dst_alpha=alpha)
    else:
        options["add_alpha"] = True
    if raster.nodata is not None:
        options["src_nodata"] = raster.nodata
    purpose = f"a {out_w}x{out_h} px crop warped onto the common grid of a pair"
    with raster_handle(raster, purpose, source=source) as (handle, pool):
        with WarpedVRT(handle.dataset, **options) as vrt:
            data = vrt.read(list(selection.indexes))
            valid = vrt.read(alpha if alpha is not None else vrt.count) > 0
        stats = display_stats(handle, pool, raster, selection) if (
            needs_stretch(raster, selection) and not selection.palette) else None
        lut = palette_lut(handle, pool, selection.indexes[0]) if selection.palette else None
    rgb = to_display_rgb(data, stats, lut)
    if not rgb.flags.writeable or rgb.base is not None:
        rgb = np.ascontiguousarray(rgb).copy()
    if raster.nodata is not None and math.isnan(raster.nodata):
        valid &= ~np.isnan(data).all(axis=0)
    return rgb, valid


def _crop_bounds_lonlat(crs: str, transform: Affine, width: int, height: int) -> BoundsLonLat:
    t = np.linspace(0.0, 1.0, _EDGE_SAMPLES)[:-1]
    cols = np.concatenate([t * width, np.full_like(t, width), (1 - t) * width, np.zeros_like(t)])
    rows = np.concatenate([np.zeros_like(t), t * height, np.full_like(t, height),
                           (1 - t) * height])
    xs, ys = transform @ (cols, rows)
    lon, lat = transform_xy(crs, LONLAT_CRS, xs, ys)
    return lonlat_bounds_of_ring(lon, lat)
