"""Open a raster and describe it: :class:`Raster` and :func:`open_raster`.

A :class:`Raster` is a frozen description (CRS, geotransform, size, bands, nodata, overviews,
footprint in its CRS and in lon/lat). Rasters that the :class:`tiles.catalog.Catalog` opened also
carry its pooled dataset handles in ``source`` so that tiles and crops reuse open datasets;
a Raster from a bare :func:`open_raster` call has ``source=None`` and every read opens the file
for the duration of that call.

Plain images without georeferencing (PNG/JPEG, or a GeoTIFF with a geotransform but no CRS)
open in *pixel space*: ``georeferenced=False``, ``crs=None``, ``transform`` the identity, so the
"CRS" coordinates of that raster are its own pixel coordinates (x = column, y = row, y down).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from tiles.crs import LONLAT_CRS, crs_label, lonlat_bounds_of_ring, parse_crs, transform_xy
from tiles.errors import EmptyRasterError, RasterOpenError, UnsupportedCRSError
from tiles.types import BoundsCRS, BoundsLonLat, PathLikeStr

if TYPE_CHECKING:
    from rasterio.io import DatasetReader

    from tiles.source import RasterSource

__all__ = ["Raster", "describe_dataset", "open_dataset", "open_raster"]

log = logging.getLogger(__name__)

_EDGE_SAMPLES = 21  # points per edge when transforming a footprint (as rasterio's densify_pts)


@dataclass(frozen=True)
class Raster:
    """One opened raster. Coordinates in ``bounds_crs`` are in the raster CRS (pixel space for
    non-georeferenced rasters); ``bounds_lonlat`` is (west, south, east, north) in EPSG:4326,
    ``None`` when not georeferenced."""

    path: Path  # the file the analyst opened (reported everywhere)
    crs: str | None  # WKT; None in pixel space
    transform: Affine  # raster pixel (col, row) -> CRS (x, y); identity in pixel space
    width: int
    height: int
    count: int
    dtypes: tuple[str, ...]
    nodata: float | None
    colorinterp: tuple[str, ...]  # rasterio ColorInterp names per band
    descriptions: tuple[str | None, ...]
    overviews: tuple[int, ...]  # decimation factors of band 1, e.g. (2, 4, 8)
    bounds_crs: BoundsCRS  # (min x, min y, max x, max y) of the footprint in the CRS
    bounds_lonlat: BoundsLonLat | None
    georeferenced: bool
    tiled: bool
    driver: str
    has_dataset_mask: bool = False  # an internal/per-dataset mask (e.g. JPEG-compressed COGs)
    raster_id: str | None = None  # catalog id, None outside a catalog
    read_path: Path | None = None  # file actually read (a cached COG); None means ``path``
    source: RasterSource | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0 or self.count <= 0:
            raise EmptyRasterError(
                f"raster {str(self.path)!r} has size {self.width}x{self.height} with "
                f"{self.count} band(s); a raster needs at least 1x1 pixel and 1 band."
            )
        for name in ("dtypes", "colorinterp", "descriptions"):
            if len(getattr(self, name)) != self.count:
                raise ValueError(
                    f"Raster.{name} has {len(getattr(self, name))} entries for {self.count} bands"
                )
        if self.georeferenced != (self.crs is not None):
            raise ValueError("Raster.crs must be set exactly when georeferenced is True")
        if self.georeferenced and self.bounds_lonlat is None:
            raise ValueError("a georeferenced Raster needs bounds_lonlat")

    @property
    def name(self) -> str:
        """File name shown to the analyst."""
        return self.path.name

    @property
    def file_to_read(self) -> Path:
        """The file reads go to: the cached COG when the catalog made one, else ``path``."""
        return self.read_path or self.path

    @property
    def crs_label(self) -> str | None:
        """'EPSG:32618' when the CRS matches an authority code exactly, else the CRS name."""
        return crs_label(self.crs) if self.crs is not None else None

    @property
    def is_rotated(self) -> bool:
        """True when the geotransform has rotation/skew terms (not north-up)."""
        return self.transform.b != 0.0 or self.transform.d != 0.0

    @property
    def alpha_band(self) -> int | None:
        """1-based index of the alpha band, if any."""
        return self.colorinterp.index("alpha") + 1 if "alpha" in self.colorinterp else None


def open_dataset(path: Path) -> DatasetReader:
    """``rasterio.open`` with our errors and without NotGeoreferencedWarning for plain images."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as exc:
        raise RasterOpenError(
            f"cannot open raster {str(path)!r}: GDAL says: {str(exc).rstrip('.')}. Check that "
            "the file is a complete raster in a format GDAL reads (GeoTIFF, JPEG2000, PNG, "
            "JPEG, ...); re-download or re-export it if it is truncated or corrupt."
        ) from exc


def _check_path(path: Path) -> None:
    if not path.exists():
        raise RasterOpenError(
            f"cannot open raster {str(path)!r}: the file does not exist. Check the path "
            "(relative paths are taken from the directory GeoLens was started in)."
        )
    if path.is_dir():
        raise RasterOpenError(
            f"cannot open raster {str(path)!r}: it is a directory. Pass one raster file "
            "inside it (for example a .tif)."
        )
    if path.stat().st_size == 0:
        raise EmptyRasterError(
            f"cannot open raster {str(path)!r}: the file is empty (0 bytes). It was probably "
            "not fully written or downloaded; export or copy it again."
        )


def open_raster(path: PathLikeStr) -> Raster:
    """Open ``path`` with GDAL and describe it. Raises RasterOpenError, EmptyRasterError or
    UnsupportedCRSError with the path and what to do."""
    path = Path(path).expanduser()
    _check_path(path)
    with open_dataset(path) as dataset:
        return describe_dataset(dataset, path)


def describe_dataset(dataset: DatasetReader, path: Path) -> Raster:
    """Build a :class:`Raster` from an open dataset (``path`` is the path reported)."""
    _check_size(dataset, path)
    crs_wkt, transform = _georeferencing(dataset, path)
    georeferenced = crs_wkt is not None
    bounds_crs = _bounds_crs(transform, dataset.width, dataset.height)
    bounds_lonlat = (
        _bounds_lonlat(crs_wkt, transform, dataset.width, dataset.height, path)
        if georeferenced
        else None
    )
    mask_flags = dataset.mask_flag_enums[0] if dataset.count else ()
    return Raster(
        path=path,
        crs=crs_wkt,
        transform=transform,
        width=dataset.width,
        height=dataset.height,
        count=dataset.count,
        dtypes=tuple(dataset.dtypes),
        nodata=None if dataset.nodata is None else float(dataset.nodata),
        colorinterp=tuple(ci.name for ci in dataset.colorinterp),
        descriptions=tuple(dataset.descriptions),
        overviews=tuple(dataset.overviews(1)),
        bounds_crs=bounds_crs,
        bounds_lonlat=bounds_lonlat,
        georeferenced=georeferenced,
        tiled=bool(dataset.profile.get("tiled", False)),
        driver=dataset.driver,
        has_dataset_mask=any(flag.name == "per_dataset" for flag in mask_flags),
    )


def _check_size(dataset: DatasetReader, path: Path) -> None:
    if dataset.count == 0 or dataset.width == 0 or dataset.height == 0:
        subdatasets = list(dataset.subdatasets)
        hint = (
            f" It contains {len(subdatasets)} subdataset(s); open one of them instead, "
            f"e.g. {subdatasets[0]!r}."
            if subdatasets
            else " Check that the file holds raster data."
        )
        raise EmptyRasterError(
            f"raster {str(path)!r} has size {dataset.width}x{dataset.height} with "
            f"{dataset.count} band(s).{hint}"
        )


def _georeferencing(dataset: DatasetReader, path: Path) -> tuple[str | None, Affine]:
    """(CRS WKT or None, transform) — identity transform and None CRS in pixel space."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        transform = dataset.transform
    has_transform = transform != Affine.identity()
    gcps, _ = dataset.gcps
    if not has_transform and (gcps or dataset.rpcs):
        raise UnsupportedCRSError(
            f"raster {str(path)!r} is georeferenced only by GCPs/RPCs, which GeoLens does not "
            "warp on the fly. Warp it to a regular grid first, e.g. "
            "`gdalwarp -t_srs EPSG:4326 in.tif out.tif` (add -rpc for RPCs), and open the result."
        )
    if dataset.crs is None or not has_transform:
        if has_transform or dataset.crs is not None:
            log.warning(
                "raster %s has %s but no %s; opening it in pixel space",
                path, "a geotransform" if has_transform else "a CRS",
                "CRS" if has_transform else "geotransform",
            )
        return None, Affine.identity()
    if transform.determinant == 0:
        raise RasterOpenError(
            f"raster {str(path)!r} has a degenerate geotransform {tuple(transform)[:6]} "
            "(zero pixel size); fix it with `gdal_edit -a_ullr` or re-export the raster."
        )
    wkt = dataset.crs.to_wkt()
    parse_crs(wkt)  # raises UnsupportedCRSError for CRSs PROJ cannot read
    return wkt, transform


def _edge_ring_px(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-edge ring around the raster, ``_EDGE_SAMPLES`` points per edge, counter-clockwise
    on screen: top edge left->right, right edge down, bottom right->left, left edge up."""
    t = np.linspace(0.0, 1.0, _EDGE_SAMPLES)[:-1]
    cols = np.concatenate([t * width, np.full_like(t, width), (1 - t) * width, np.zeros_like(t)])
    rows = np.concatenate([np.zeros_like(t), t * height, np.full_like(t, height), (1 - t) * height])
    return cols, rows


def _bounds_crs(transform: Affine, width: int, height: int) -> BoundsCRS:
    cols = np.array([0.0, width, width, 0.0])
    rows = np.array([0.0, 0.0, height, height])
    xs, ys = transform @ (cols, rows)
    return (float(np.min(xs)), float(np.min(ys)), float(np.max(xs)), float(np.max(ys)))


def _bounds_lonlat(
    crs_wkt: str, transform: Affine, width: int, height: int, path: Path
) -> BoundsLonLat:
    cols, rows = _edge_ring_px(width, height)
    xs, ys = transform @ (cols, rows)
    try:
        lon, lat = transform_xy(crs_wkt, LONLAT_CRS, xs, ys, strict=False)
    except UnsupportedCRSError as exc:
        raise UnsupportedCRSError(f"raster {str(path)!r} cannot be placed on the map: {exc}") \
            from exc
    finite = np.isfinite(lon) & np.isfinite(lat)
    if not finite.any():
        raise UnsupportedCRSError(
            f"raster {str(path)!r} uses CRS {crs_label(crs_wkt)!r}, which cannot be placed on the "
            "map (no corner transforms to lon/lat). Reproject it to a terrestrial CRS, e.g. "
            "`gdalwarp -t_srs EPSG:4326 in.tif out.tif`."
        )
    lon, lat = lon[finite], lat[finite]
    return lonlat_bounds_of_ring(lon, lat)
