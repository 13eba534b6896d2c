"""Open a raster and describe it: :class:`Raster` and :func:`open_raster`.

A :class:`Raster` is a frozen description (CRS, geotransform, size, bands, nodata, overviews,
footprint in its CRS and in lon/lat): a value, holding no open file. Open datasets belong to
whoever opened them: the :class:`tiles.catalog.Catalog` keeps one pooled
:class:`tiles.source.RasterSource` per raster (``catalog.source(raster_id)``), which reads take
as ``source=``; a read without one opens the file for the duration of that call.

:func:`open_raster` applies an :class:`tiles.opening.OpenPolicy` (where the file may come from,
which formats, no network) and reads the first and last block and the smallest overview, so a
truncated file is refused at open. A footprint whose edge leaves the Earth (a geostationary
full disk) is found from an interior grid and its limb instead of the edge alone.

Plain images without georeferencing (PNG/JPEG, or a GeoTIFF with a geotransform but no CRS)
open in *pixel space*: ``georeferenced=False``, ``crs=None``, ``transform`` the identity, so the
"CRS" coordinates of that raster are its own pixel coordinates (x = column, y = row, y down).
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from tiles.crs import (
    LONLAT_CRS,
    crs_label,
    lonlat_bounds_of_points,
    lonlat_bounds_of_ring,
    parse_crs,
    transform_xy,
)
from tiles.errors import EmptyRasterError, RasterOpenError, UnsupportedCRSError
from tiles.opening import (
    DEFAULT_POLICY,
    OpenPolicy,
    gdal_env,
    gdal_reason,
    ignored_sidecars,
    locate,
    open_located,
)
from tiles.types import BoundsCRS, BoundsLonLat, PathLikeStr

if TYPE_CHECKING:
    from rasterio.io import DatasetReader

__all__ = ["Raster", "check_readable", "describe_dataset", "open_raster"]

log = logging.getLogger(__name__)

_EDGE_SAMPLES = 21  # points per edge when transforming a footprint (as rasterio's densify_pts)
_GRID_SAMPLES = 65  # grid points per side when part of the edge is off the Earth
_LIMB_BISECTIONS = 24  # halvings of a grid step (65 px at 4096 px) -> far below a pixel


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
    # How ``file_to_read`` is reopened (tiles.opening): the policy and whether it is trusted.
    trusted: bool = False
    policy: OpenPolicy = field(default=DEFAULT_POLICY, compare=False, repr=False)

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


def open_raster(
    path: PathLikeStr, *, policy: OpenPolicy = DEFAULT_POLICY, trusted: bool = False
) -> Raster:
    """Open ``path`` under ``policy`` (see :mod:`tiles.opening`), check that its pixels can be
    read, and describe it. ``trusted``: the operator's own raster (any GDAL driver). Raises
    RasterAccessError/RasterFormatError (refused by the policy), RasterOpenError (unreadable),
    EmptyRasterError or UnsupportedCRSError, each with the path and what to do."""
    location = locate(path, policy, trusted=trusted)
    sidecars = ignored_sidecars(location)
    if sidecars:
        log.warning(
            "ignoring %s next to %s: sidecar files of untrusted rasters can name other files; "
            "embed the georeferencing (gdal_translate) or put the folder in --trusted-dir",
            ", ".join(p.name for p in sidecars), location.shown,
        )
    with gdal_env(policy, trusted=location.trusted), open_located(location, policy) as dataset:
        raster = describe_dataset(dataset, location.shown if location.local else location.path)
        check_readable(dataset, raster.path, policy=policy, trusted=location.trusted)
    return dataclasses.replace(raster, policy=policy, trusted=location.trusted)


def check_readable(
    dataset: DatasetReader, path: Path, *, policy: OpenPolicy = DEFAULT_POLICY,
    trusted: bool = False,
) -> None:
    """Read the first and last block of band 1 at full resolution and the smallest overview;
    a truncated or corrupt file fails here, at open, instead of as a blank map later."""
    block_h, block_w = dataset.block_shapes[0]
    last_row = (dataset.height - 1) // block_h * block_h
    last_col = (dataset.width - 1) // block_w * block_w
    reads = [
        ("the first block", Window(0, 0, min(block_w, dataset.width),
                                   min(block_h, dataset.height)), None),
        ("the last block", Window(last_col, last_row, dataset.width - last_col,
                                  dataset.height - last_row), None),
    ]
    factors = dataset.overviews(1)
    if factors:
        shape = (max(1, dataset.height // factors[-1]), max(1, dataset.width // factors[-1]))
        reads.append((f"overview 1/{factors[-1]}", None, shape))
    for what, window, out_shape in reads:
        try:
            dataset.read(1, window=window, out_shape=out_shape)
        except RasterioIOError as exc:
            hint = "" if policy.allow_network or not trusted else (
                " If it reads other files or URLs (a VRT), check them: network access is off "
                "unless GeoLens is started with --allow-network-rasters."
            )
            raise RasterOpenError(
                f"raster {str(path)!r} cannot be read at {what} of band 1: it may be truncated "
                f"or corrupt (GDAL says: {gdal_reason(exc)}). Re-download or re-export it, "
                f"then open it again.{hint}"
            ) from exc


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


def _to_lonlat(crs_wkt: str, transform: Affine, cols: np.ndarray, rows: np.ndarray,
               path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Raster pixel positions -> (lon, lat); points off the Earth come back non-finite."""
    xs, ys = transform @ (cols, rows)
    try:
        return transform_xy(crs_wkt, LONLAT_CRS, xs, ys, strict=False)
    except UnsupportedCRSError as exc:
        raise UnsupportedCRSError(
            f"raster {str(path)!r} uses CRS {crs_label(crs_wkt)!r}, which has no transformation "
            f"to lon/lat on the Earth (EPSG:4326) ({exc.__cause__ or exc}). GeoLens places only "
            "Earth rasters on the map; to look at its pixels, open a copy without the CRS "
            "(`gdal_edit.py -unsetsrs copy.tif`), which opens in pixel space."
        ) from exc


def _limb_points(crs_wkt: str, transform: Affine, inside: tuple[np.ndarray, np.ndarray],
                 outside: tuple[np.ndarray, np.ndarray], path: Path) -> tuple[np.ndarray, ...]:
    """Bisect between pixel positions on the Earth (``inside``) and off it (``outside``) to the
    last position still on the Earth: the limb of a full-disk image, to a hundredth of a pixel."""
    (c_in, r_in), (c_out, r_out) = inside, outside
    for _ in range(_LIMB_BISECTIONS):
        c_mid, r_mid = (c_in + c_out) / 2, (r_in + r_out) / 2
        lon, lat = _to_lonlat(crs_wkt, transform, c_mid, r_mid, path)
        ok = np.isfinite(lon) & np.isfinite(lat)
        c_in, r_in = np.where(ok, c_mid, c_in), np.where(ok, r_mid, r_in)
        c_out, r_out = np.where(ok, c_out, c_mid), np.where(ok, r_out, r_mid)
    return _to_lonlat(crs_wkt, transform, c_in, r_in, path)


def _footprint_points(crs_wkt: str, transform: Affine, width: int, height: int,
                      path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Finite lon/lat of a ``_GRID_SAMPLES``-square grid over the raster (edges included) plus
    the limb between grid points on and off the Earth."""
    cols, rows = np.meshgrid(np.linspace(0.0, width, _GRID_SAMPLES),
                             np.linspace(0.0, height, _GRID_SAMPLES))
    lon, lat = _to_lonlat(crs_wkt, transform, cols, rows, path)
    ok = np.isfinite(lon) & np.isfinite(lat)
    lons, lats = [lon[ok]], [lat[ok]]
    for a, b in ((np.s_[:, :-1], np.s_[:, 1:]), (np.s_[:-1, :], np.s_[1:, :])):
        edge = ok[a] != ok[b]  # neighbours on either side of the limb
        if edge.any():
            first_in = ok[a][edge]
            c0, c1 = cols[a][edge], cols[b][edge]
            r0, r1 = rows[a][edge], rows[b][edge]
            inside = (np.where(first_in, c0, c1), np.where(first_in, r0, r1))
            outside = (np.where(first_in, c1, c0), np.where(first_in, r1, r0))
            limb_lon, limb_lat = _limb_points(crs_wkt, transform, inside, outside, path)
            lons.append(limb_lon)
            lats.append(limb_lat)
    return np.concatenate(lons), np.concatenate(lats)


def _poles_inside(crs_wkt: str, transform: Affine, width: int, height: int) -> list[float]:
    """Latitudes (+90, -90) of the poles that lie inside the raster."""
    xs, ys = transform_xy(LONLAT_CRS, crs_wkt, np.array([0.0, 0.0]), np.array([90.0, -90.0]),
                          strict=False)
    with np.errstate(invalid="ignore"):  # a pole off the Earth's visible side comes back inf
        cols, rows = ~transform @ (xs, ys)
    inside = (np.isfinite(cols) & np.isfinite(rows) & (cols >= 0) & (cols <= width)
              & (rows >= 0) & (rows <= height))
    return [lat for lat, yes in zip((90.0, -90.0), inside, strict=True) if yes]


def _bounds_lonlat(
    crs_wkt: str, transform: Affine, width: int, height: int, path: Path
) -> BoundsLonLat:
    """Lon/lat bounds from the densified edge ring; when part of the edge is off the Earth
    (a geostationary full disk: its corners are space), from an interior grid and the limb."""
    cols, rows = _edge_ring_px(width, height)
    lon, lat = _to_lonlat(crs_wkt, transform, cols, rows, path)
    if (np.isfinite(lon) & np.isfinite(lat)).all():
        return lonlat_bounds_of_ring(lon, lat)
    lon, lat = _footprint_points(crs_wkt, transform, width, height, path)
    if lon.size == 0:
        raise UnsupportedCRSError(
            f"raster {str(path)!r} uses CRS {crs_label(crs_wkt)!r}, but none of its pixels (edges "
            f"and a {_GRID_SAMPLES}x{_GRID_SAMPLES} interior grid) lies on the Earth in that CRS, "
            "so it cannot be placed on the map. Check its georeferencing with `gdalinfo`: the "
            "geotransform probably does not belong to this CRS. To look at its pixels anyway, "
            "open a copy without the CRS (`gdal_edit.py -unsetsrs copy.tif`)."
        )
    try:
        poles = _poles_inside(crs_wkt, transform, width, height)
    except UnsupportedCRSError:
        poles = []
    return lonlat_bounds_of_points(lon, lat, poles=poles)
