"""GeoLens tiles: rasters in, pixels and lon/lat out. Never imports torch or engine.

Data flow (DESIGN.md)::

    path --Catalog.open / start_open / open_raster (under an OpenPolicy)--> Raster
    drawn GeoJSON (EPSG:4326) --region_window--> Window (raster pixels)
    Window --read_crop(max_side)--> Crop (RGB uint8 HxWx3, transform crop px -> raster CRS)
    boxes in crop px --boxes_to_lonlat(crop)--> polygons in EPSG:4326
    polygons --to_feature / to_feature_collection / write_geojson--> RFC 7946 GeoJSON

Map tiles: :func:`render_tile` (Web Mercator XYZ) and :func:`render_pixel_tile` (pixel space,
Leaflet CRS.Simple; scheme in :mod:`tiles.pixelspace`).

Untrusted rasters (uploads, paths typed in the app) are opened under an :class:`OpenPolicy`
(:mod:`tiles.opening`): safe formats only (:data:`SAFE_FORMATS`), optional data folders, no
GDAL network access unless allowed.
"""

from tiles.catalog import Catalog
from tiles.catalog_state import RestoreProblem
from tiles.cog import DEFAULT_COG_THRESHOLD_PX, build_cog, cog_cache_path, needs_cog
from tiles.crop import DEFAULT_MAX_SIDE, Crop, crop_shape, read_crop
from tiles.crs import LONLAT_CRS, crs_label
from tiles.display import STRETCH_PERCENTILES, DisplayStats
from tiles.errors import (
    BandPresetError,
    CropError,
    EmptyRasterError,
    GeoJSONReadError,
    GeoJSONWriteError,
    GeometryError,
    OpenCancelledError,
    RasterAccessError,
    RasterFormatError,
    RasterOpenError,
    RasterReadError,
    RasterWriteError,
    RegionOutsideError,
    TileError,
    TilesError,
    UnknownRasterError,
    UnsupportedCRSError,
)
from tiles.geojson import (
    COORDINATE_SPACE_KEY,
    feature_geometry,
    read_geojson,
    to_feature,
    to_feature_collection,
    write_geojson,
)
from tiles.geometry import (
    box_to_polygon_px,
    boxes_to_lonlat,
    lonlat_to_px,
    oriented_box_to_polygon,
    px_to_lonlat,
)
from tiles.jobs import OpenJob
from tiles.formats import SAFE_DRIVERS, SAFE_FORMATS, SafeFormat
from tiles.opening import DEFAULT_POLICY, OpenPolicy, open_dataset
from tiles.pixelspace import (
    LEAFLET_SIMPLE,
    PIXEL,
    PixelTileScheme,
    geometry_leaflet_simple_to_px,
    geometry_px_to_leaflet_simple,
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
from tiles.region import DEFAULT_POINT_SIZE_M, DEFAULT_POINT_SIZE_PX, as_geometry, region_window
from tiles.render import MAX_ZOOM, render_pixel_tile, render_tile, transparent_png
from tiles.write import write_raster

__all__ = [
    "AUTO_PRESET",
    "BAND_PRESETS",
    "COORDINATE_SPACE_KEY",
    "DEFAULT_COG_THRESHOLD_PX",
    "DEFAULT_MAX_SIDE",
    "DEFAULT_POINT_SIZE_M",
    "DEFAULT_POINT_SIZE_PX",
    "DEFAULT_POLICY",
    "LEAFLET_SIMPLE",
    "LONLAT_CRS",
    "MAX_ZOOM",
    "PIXEL",
    "SAFE_DRIVERS",
    "SAFE_FORMATS",
    "STRETCH_PERCENTILES",
    "BandPreset",
    "BandPresetError",
    "BandSelection",
    "Catalog",
    "Crop",
    "CropError",
    "DisplayStats",
    "EmptyRasterError",
    "GeoJSONReadError",
    "GeoJSONWriteError",
    "GeometryError",
    "OpenCancelledError",
    "OpenJob",
    "OpenPolicy",
    "PixelTileScheme",
    "Raster",
    "RasterAccessError",
    "RasterFormatError",
    "RasterOpenError",
    "RasterReadError",
    "RasterWriteError",
    "RegionOutsideError",
    "RestoreProblem",
    "SafeFormat",
    "TileError",
    "TilesError",
    "UnknownRasterError",
    "UnsupportedCRSError",
    "as_geometry",
    "box_to_polygon_px",
    "boxes_to_lonlat",
    "build_cog",
    "cog_cache_path",
    "crop_shape",
    "crs_label",
    "feature_geometry",
    "geometry_leaflet_simple_to_px",
    "geometry_px_to_leaflet_simple",
    "get_band_preset",
    "known_preset_names",
    "leaflet_simple_to_px",
    "lonlat_to_px",
    "needs_cog",
    "open_dataset",
    "open_raster",
    "oriented_box_to_polygon",
    "pixel_tile_scheme",
    "px_to_leaflet_simple",
    "px_to_lonlat",
    "read_crop",
    "read_geojson",
    "region_window",
    "render_pixel_tile",
    "render_tile",
    "select_bands",
    "to_feature",
    "to_feature_collection",
    "transparent_png",
    "write_geojson",
    "write_raster",
]
