"""GeoLens tiles: rasters in, pixels and lon/lat out. Never imports torch or engine.

Data flow (DESIGN.md)::

    path --Catalog.open / start_open / open_raster (under an OpenPolicy)--> Raster
    drawn GeoJSON (EPSG:4326 or pixels) --region_window--> Window (raster pixels)
    Window --context_window / full_window--> Window (what the crop shows)
    Window --read_crop(max_side, source=catalog.source(id))--> Crop (RGB uint8 HxWx3,
        transform crop px -> raster CRS)
    Window --window_box_in_crop(crop)--> box in crop px (the box a question is about)
    boxes in crop px --boxes_to_lonlat(crop)--> polygons in EPSG:4326 (georeferenced crops)
                     --boxes_to_raster_px(crop)--> polygons in raster pixels (any crop)
                     --boxes_to_result_space(crop)--> ("lonlat" | "pixel", polygons)
    polygons --to_feature / to_feature_collection / write_geojson--> RFC 7946 GeoJSON

Whole-scene search: Window (+ drawn polygon, metres per pixel) --plan_tiles--> TilePlan of
tiles of the model's input size; --tile_crops--> (PlannedTile, Crop), one windowed read each;
boxes per tile --tile_detections--> raster px --merge_tiles (NMS or WBF + seam rule)-->
MergedBox objects (:mod:`tiles.tiling`, :mod:`tiles.merge`).

Two dates: before + after Raster + one region --read_crop_pair--> CropPair (both crops warped
onto one grid, the after raster's by default, one transform; :mod:`tiles.pairs`).

Boxes are taken as users have them (:data:`tiles.types.BoxesPx`: tuples, objects with
x0/y0/x1/y1 or ``xyxy``, N x 4 or N x 5 arrays with angle_deg; :func:`as_boxes_px`).

Map tiles: :func:`render_tile` (Web Mercator XYZ) and :func:`render_pixel_tile` (pixel space,
Leaflet CRS.Simple; scheme in :mod:`tiles.pixelspace`).

A :class:`Raster` is a value holding no open file; the :class:`Catalog` owns each raster's pooled
datasets (:meth:`Catalog.source`), which reads take as ``source=`` (without one a read opens the
file for that call).

Untrusted rasters (uploads, paths typed in the app) are opened under an :class:`OpenPolicy`
(:mod:`tiles.opening`): safe formats only (:data:`SAFE_FORMATS`), optional data folders, no
GDAL network access unless allowed.
"""

from tiles.catalog import Catalog
from tiles.catalog_state import RestoreProblem
from tiles.cog import DEFAULT_COG_THRESHOLD_PX, build_cog, cog_cache_path, needs_cog
from tiles.crop import DEFAULT_MAX_SIDE, Crop, crop_shape, read_crop
from tiles.crs import LONLAT_CRS, crs_label
from tiles.errors import (
    BandPresetError,
    CropError,
    EmptyRasterError,
    GeoJSONReadError,
    GeoJSONWriteError,
    GeometryError,
    NotGeoreferencedError,
    OpenCancelledError,
    RasterAccessError,
    RasterFormatError,
    RasterOpenError,
    RasterReadError,
    RasterWriteError,
    RegionOutsideError,
    TileError,
    TilesError,
    TilingError,
    UnknownRasterError,
    UnsupportedCRSError,
)
from tiles.formats import SAFE_DRIVERS, SAFE_FORMATS, SafeFormat
from tiles.geojson import (
    COORDINATE_SPACE_KEY,
    read_geojson,
    to_feature,
    to_feature_collection,
    write_geojson,
)
from tiles.geometry import (
    LONLAT,
    as_boxes_px,
    box_to_polygon_px,
    boxes_to_lonlat,
    boxes_to_raster_px,
    boxes_to_result_space,
    lonlat_to_px,
    oriented_box_to_polygon,
    px_to_lonlat,
)
from tiles.jobs import OpenJob
from tiles.merge import (
    MERGE_METHODS,
    MergedBox,
    TileDetections,
    inner_edge_cuts,
    merge_boxes,
    merge_tiles,
    tile_detections,
)
from tiles.opening import DEFAULT_POLICY, OpenPolicy, gdal_cache_limit, open_dataset
from tiles.pairs import CropPair, PairGrid, PairOverlapError, read_crop_pair
from tiles.pixelspace import (
    LEAFLET_SIMPLE,
    PIXEL,
    PixelTileScheme,
    geometry_leaflet_simple_to_px,
    leaflet_simple_to_px,
    pixel_tile_scheme,
    px_to_leaflet_simple,
)
from tiles.presets import (
    AUTO_PRESET,
    BAND_PRESETS,
    BandPreset,
    BandSelection,
    get_band_preset,
    known_preset_names,
    select_bands,
)
from tiles.raster import Raster, open_raster
from tiles.region import (
    DEFAULT_POINT_SIZE_M,
    DEFAULT_POINT_SIZE_PX,
    as_geometry,
    point_square,
    region_window,
)
from tiles.render import MAX_ZOOM, render_pixel_tile, render_tile, transparent_png
from tiles.source import RasterSource
from tiles.tiling import (
    DEFAULT_OVERLAP,
    DEFAULT_TILE_PX,
    PlannedTile,
    TilePlan,
    empty_tile_predicate,
    ground_resolution_m,
    plan_tiles,
    tile_crops,
)
from tiles.types import BoxesPx, BoxLike
from tiles.windows import context_window, full_window, window_box_in_crop
from tiles.write import write_raster

__all__ = [
    "AUTO_PRESET",
    "BAND_PRESETS",
    "COORDINATE_SPACE_KEY",
    "DEFAULT_COG_THRESHOLD_PX",
    "DEFAULT_MAX_SIDE",
    "DEFAULT_OVERLAP",
    "DEFAULT_POINT_SIZE_M",
    "DEFAULT_POINT_SIZE_PX",
    "DEFAULT_POLICY",
    "DEFAULT_TILE_PX",
    "LEAFLET_SIMPLE",
    "LONLAT",
    "LONLAT_CRS",
    "MAX_ZOOM",
    "MERGE_METHODS",
    "PIXEL",
    "SAFE_DRIVERS",
    "SAFE_FORMATS",
    "BandPreset",
    "BandPresetError",
    "BandSelection",
    "BoxLike",
    "BoxesPx",
    "Catalog",
    "Crop",
    "CropError",
    "CropPair",
    "EmptyRasterError",
    "GeoJSONReadError",
    "GeoJSONWriteError",
    "GeometryError",
    "MergedBox",
    "NotGeoreferencedError",
    "OpenCancelledError",
    "OpenJob",
    "OpenPolicy",
    "PairGrid",
    "PairOverlapError",
    "PixelTileScheme",
    "PlannedTile",
    "Raster",
    "RasterAccessError",
    "RasterFormatError",
    "RasterOpenError",
    "RasterReadError",
    "RasterSource",
    "RasterWriteError",
    "RegionOutsideError",
    "RestoreProblem",
    "SafeFormat",
    "TileDetections",
    "TileError",
    "TilePlan",
    "TilesError",
    "TilingError",
    "UnknownRasterError",
    "UnsupportedCRSError",
    "as_boxes_px",
    "as_geometry",
    "box_to_polygon_px",
    "boxes_to_lonlat",
    "boxes_to_raster_px",
    "boxes_to_result_space",
    "build_cog",
    "cog_cache_path",
    "context_window",
    "crop_shape",
    "crs_label",
    "empty_tile_predicate",
    "full_window",
    "gdal_cache_limit",
    "geometry_leaflet_simple_to_px",
    "get_band_preset",
    "ground_resolution_m",
    "inner_edge_cuts",
    "known_preset_names",
    "leaflet_simple_to_px",
    "lonlat_to_px",
    "merge_boxes",
    "merge_tiles",
    "needs_cog",
    "open_dataset",
    "open_raster",
    "oriented_box_to_polygon",
    "pixel_tile_scheme",
    "plan_tiles",
    "point_square",
    "px_to_leaflet_simple",
    "px_to_lonlat",
    "read_crop",
    "read_crop_pair",
    "read_geojson",
    "region_window",
    "render_pixel_tile",
    "render_tile",
    "select_bands",
    "tile_crops",
    "tile_detections",
    "to_feature",
    "to_feature_collection",
    "transparent_png",
    "window_box_in_crop",
    "write_geojson",
    "write_raster",
]
