"""Generator of small test rasters (committed code, TorchGeo-style ``data.py``).

Every function writes one raster with plain rasterio (independent of the code under test) into
a directory and returns its path. Contents are deterministic and chosen so that tests can
check pixel values: a colour gradient, coloured marker squares at known pixels, distinct value
ranges per band. Sizes stay small (<= 2048 px) so the whole set builds in about a second.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from PIL import Image
from rasterio.control import GroundControlPoint
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning

UTM33 = "EPSG:32633"  # UTM zone 33N (central Europe)
# A rotated, north-not-up grid: 10 m pixels rotated by 30 degrees about the upper-left corner.
ROTATION_DEG = 30.0
MARKER_PX = (200, 60)  # (col, row) of the red marker square's top-left pixel in rgb rasters
MARKER_SIZE = 24


def gradient_rgb(height: int, width: int) -> np.ndarray:
    """(3, H, W) uint8: red grows along x, green along y, blue constant 60; a red marker."""
    cols = np.linspace(20, 230, width, dtype="float32")[None, :].repeat(height, 0)
    rows = np.linspace(20, 230, height, dtype="float32")[:, None].repeat(width, 1)
    rgb = np.stack([cols, rows, np.full_like(cols, 60)]).astype("uint8")
    col, row = MARKER_PX
    rgb[:, row:row + MARKER_SIZE, col:col + MARKER_SIZE] = np.array([255, 0, 0])[:, None, None]
    return rgb


def _write(path: Path, data: np.ndarray, **profile) -> Path:
    profile = {"driver": "GTiff", "count": data.shape[0], "height": data.shape[1],
               "width": data.shape[2], "dtype": data.dtype.name, **profile}
    colorinterp = profile.pop("colorinterp", None)
    overviews = profile.pop("overviews", None)
    descriptions = profile.pop("descriptions", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
            if colorinterp:
                dst.colorinterp = [ColorInterp[c] for c in colorinterp]
            for i, text in enumerate(descriptions or (), start=1):
                dst.set_band_description(i, text)
            if overviews:
                dst.build_overviews(overviews, Resampling.average)
    return path


def utm_rgb(directory: Path, *, overviews: bool = True) -> Path:
    """512x384 uint8 RGB, UTM 33N, 10 m pixels, tiled, with overviews (2, 4)."""
    transform = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_300_000.0)
    return _write(directory / f"utm_rgb{'' if overviews else '_noovr'}.tif",
                  gradient_rgb(384, 512), crs=UTM33, transform=transform, tiled=True,
                  blockxsize=256, blockysize=256, colorinterp=("red", "green", "blue"),
                  overviews=[2, 4] if overviews else None)


def geographic_rgb(directory: Path) -> Path:
    """400x300 uint8 RGB in EPSG:4326, 0.0005 degree pixels near Berlin."""
    transform = Affine(0.0005, 0.0, 13.2, 0.0, -0.0005, 52.6)
    return _write(directory / "geographic_rgb.tif", gradient_rgb(300, 400), crs="EPSG:4326",
                  transform=transform, colorinterp=("red", "green", "blue"))


def webmercator_rgb(directory: Path) -> Path:
    """300x300 uint8 RGB in EPSG:3857, 2 m pixels near Paris."""
    transform = Affine(2.0, 0.0, 261_000.0, 0.0, -2.0, 6_250_000.0)
    return _write(directory / "webmercator_rgb.tif", gradient_rgb(300, 300), crs="EPSG:3857",
                  transform=transform, colorinterp=("red", "green", "blue"))


def rotated_transform() -> Affine:
    """10 m pixels rotated by ROTATION_DEG (counter-clockwise) about the upper-left corner."""
    return (Affine.translation(500_000.0, 5_300_000.0)
            @ Affine.rotation(ROTATION_DEG) @ Affine.scale(10.0, -10.0))


def rotated_rgb(directory: Path) -> Path:
    """400x300 uint8 RGB, UTM 33N, rotated geotransform, red marker at MARKER_PX."""
    return _write(directory / "rotated_rgb.tif", gradient_rgb(300, 400), crs=UTM33,
                  transform=rotated_transform(), colorinterp=("red", "green", "blue"))


# uint16 4-band: each band has its own value range so a wrong band order is visible.
UINT16_BAND_VALUES = {"blue": (1000, 1200), "green": (3000, 3200), "red": (6000, 9000),
                      "nir": (20000, 30000)}
NODATA_BLOCK = (slice(0, 64), slice(0, 64))  # rows, cols set to nodata in nodata rasters


def uint16_4band(directory: Path) -> Path:
    """256x256 uint16 bands (blue, green, red, nir) like an analysis-ready multispectral
    stack; nodata 0 in the top-left 64x64 block. Red varies along x (dark left, bright right),
    blue and green are nearly constant."""
    rng = np.random.default_rng(0)
    height = width = 256
    bands = []
    for name, (lo, hi) in UINT16_BAND_VALUES.items():
        if name == "red":
            band = np.linspace(lo, hi, width)[None, :].repeat(height, 0)
        else:
            band = rng.uniform(lo, hi, (height, width))
        bands.append(band.astype("uint16"))
    data = np.stack(bands)
    data[(slice(None), *NODATA_BLOCK)] = 0
    transform = Affine(10.0, 0.0, 600_000.0, 0.0, -10.0, 5_200_000.0)
    return _write(directory / "uint16_4band.tif", data, crs=UTM33, transform=transform,
                  nodata=0, colorinterp=("blue", "green", "red", "nir"),
                  descriptions=("B02", "B03", "B04", "B08"))


def float32_nan(directory: Path) -> Path:
    """200x200 float32 reflectance 0..0.5 with NaN nodata in the top-left block."""
    data = np.linspace(0.0, 0.5, 200 * 200, dtype="float32").reshape(1, 200, 200)
    data[(slice(None), *NODATA_BLOCK)] = np.nan
    transform = Affine(10.0, 0.0, 600_000.0, 0.0, -10.0, 5_200_000.0)
    return _write(directory / "float32_nan.tif", data, crs=UTM33, transform=transform,
                  nodata=float("nan"))


def nodata_rgb(directory: Path) -> Path:
    """256x256 uint8 RGB, nodata 0 in the top-left 64x64 block."""
    data = gradient_rgb(256, 256)
    data[(slice(None), *NODATA_BLOCK)] = 0
    transform = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_300_000.0)
    return _write(directory / "nodata_rgb.tif", data, crs=UTM33, transform=transform, nodata=0)


def alpha_rgba(directory: Path) -> Path:
    """256x256 uint8 RGBA, alpha 0 in the top-left 64x64 block."""
    rgb = gradient_rgb(256, 256)
    alpha = np.full((1, 256, 256), 255, "uint8")
    alpha[(slice(None), *NODATA_BLOCK)] = 0
    transform = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_300_000.0)
    return _write(directory / "alpha_rgba.tif", np.concatenate([rgb, alpha]), crs=UTM33,
                  transform=transform, colorinterp=("red", "green", "blue", "alpha"))


def palette_gray(directory: Path) -> Path:
    """128x128 uint8 classes 0..3 with a color table (class 2 is pure green)."""
    data = (np.arange(128)[None, :] // 32).repeat(128, 0).astype("uint8")[None]
    path = _write(directory / "palette.tif", data, crs=UTM33,
                  transform=Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_300_000.0),
                  colorinterp=("palette",))
    with rasterio.open(path, "r+") as dst:
        dst.write_colormap(1, {0: (0, 0, 0, 255), 1: (255, 0, 0, 255), 2: (0, 255, 0, 255),
                               3: (0, 0, 255, 255)})
    return path


def large_striped(directory: Path, size: int = 2048) -> Path:
    """size x size uint8 RGB, striped (not tiled), no overviews: a COG candidate."""
    transform = Affine(1.0, 0.0, 500_000.0, 0.0, -1.0, 5_300_000.0)
    return _write(directory / "large_striped.tif", gradient_rgb(size, size), crs=UTM33,
                  transform=transform, colorinterp=("red", "green", "blue"))


def antimeridian_rgb(directory: Path) -> Path:
    """300x200 uint8 RGB in UTM 60N at ~60 degrees N, 1 km pixels, crossing 180 degrees."""
    transform = Affine(1000.0, 0.0, 560_000.0, 0.0, -1000.0, 6_700_000.0)
    return _write(directory / "antimeridian_rgb.tif", gradient_rgb(200, 300),
                  crs="EPSG:32660", transform=transform, colorinterp=("red", "green", "blue"))


def plain_png(directory: Path) -> Path:
    """300x200 RGB PNG without georeferencing."""
    path = directory / "plain.png"
    Image.fromarray(gradient_rgb(200, 300).transpose(1, 2, 0)).save(path)
    return path


def plain_jpeg(directory: Path) -> Path:
    """640x480 RGB JPEG without georeferencing."""
    path = directory / "plain.jpg"
    Image.fromarray(gradient_rgb(480, 640).transpose(1, 2, 0)).save(path, quality=95)
    return path


def corrupt_file(directory: Path) -> Path:
    """Random bytes with a .tif name (not a raster at all)."""
    path = directory / "corrupt.tif"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype="uint8").tobytes())
    return path


def truncated_tiff(directory: Path, source: Path) -> Path:
    """The first 200 bytes of a valid GeoTIFF (header survives, everything else is gone)."""
    path = directory / "truncated.tif"
    path.write_bytes(source.read_bytes()[:200])
    return path


def empty_file(directory: Path) -> Path:
    """A 0-byte .tif."""
    path = directory / "empty.tif"
    path.write_bytes(b"")
    return path


def gcp_only(directory: Path) -> Path:
    """64x64 uint8 georeferenced only by ground control points (no geotransform)."""
    gcps = [GroundControlPoint(row=0, col=0, x=500_000.0, y=5_300_000.0),
            GroundControlPoint(row=0, col=64, x=500_640.0, y=5_300_000.0),
            GroundControlPoint(row=64, col=0, x=500_000.0, y=5_299_360.0)]
    path = directory / "gcp_only.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=1,
                           dtype="uint8") as dst:
            dst.write(np.zeros((1, 64, 64), "uint8"))
            dst.gcps = (gcps, rasterio.crs.CRS.from_string(UTM33))
    return path


def mars_crs(directory: Path) -> Path:
    """64x64 uint8 in a Mars CRS (IAU_2015:49900): no path to EPSG:4326 exists."""
    transform = Affine(100.0, 0.0, 0.0, 0.0, -100.0, 0.0)
    return _write(directory / "mars.tif", np.zeros((1, 64, 64), "uint8"),
                  crs=rasterio.crs.CRS.from_user_input("IAU_2015:49900"), transform=transform)


ALL_GEOREFERENCED = ("utm_rgb", "geographic_rgb", "webmercator_rgb", "rotated_rgb",
                     "uint16_4band", "float32_nan", "nodata_rgb", "alpha_rgba",
                     "antimeridian_rgb")


def build_all(directory: Path) -> dict[str, Path]:
    """Write every test raster into ``directory``; name -> path."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: globals()[name](directory) for name in ALL_GEOREFERENCED}
    paths.update(
        utm_rgb_noovr=utm_rgb(directory, overviews=False),
        palette=palette_gray(directory),
        large_striped=large_striped(directory),
        plain_png=plain_png(directory),
        plain_jpeg=plain_jpeg(directory),
        corrupt=corrupt_file(directory),
        truncated=truncated_tiff(directory, paths["utm_rgb"]),
        empty=empty_file(directory),
        gcp_only=gcp_only(directory),
        mars=mars_crs(directory),
    )
    return paths


# -- hostile files (tests/tiles/test_policy.py) -------------------------------------------------
SECRET_SIZE = 64  # the "secret" file is read as a SECRET_SIZE x SECRET_SIZE byte raster


def secret_file(directory: Path) -> Path:
    """A non-raster file of known bytes (row r, column c holds (r * 64 + c) % 256)."""
    path = directory / "secret.bin"
    path.write_bytes(bytes(i % 256 for i in range(SECRET_SIZE * SECRET_SIZE)))
    return path


def vrt_raw(path: Path, source: str) -> Path:
    """GDAL VRT XML (under any name, e.g. x.tif) whose VRTRawRasterBand reads ``source`` as
    raw bytes: the file-read attack of issue 18."""
    path.write_text(
        f'<VRTDataset rasterXSize="{SECRET_SIZE}" rasterYSize="{SECRET_SIZE}">'
        '<VRTRasterBand dataType="Byte" band="1" subClass="VRTRawRasterBand">'
        f'<SourceFilename relativetoVRT="0">{source}</SourceFilename>'
        f"<ImageOffset>0</ImageOffset><PixelOffset>1</PixelOffset>"
        f"<LineOffset>{SECRET_SIZE}</LineOffset></VRTRasterBand></VRTDataset>"
    )
    return path


def vrt_complex(path: Path, source: str) -> Path:
    """GDAL VRT XML whose ComplexSource reads band 1 of the raster at ``source``."""
    path.write_text(
        f'<VRTDataset rasterXSize="{SECRET_SIZE}" rasterYSize="{SECRET_SIZE}">'
        '<VRTRasterBand dataType="Byte" band="1"><ComplexSource>'
        f'<SourceFilename relativeToVRT="0">{source}</SourceFilename>'
        "<SourceBand>1</SourceBand></ComplexSource></VRTRasterBand></VRTDataset>"
    )
    return path


def wms_xml(path: Path, server_url: str) -> Path:
    """A GDAL WMS (TMS) description whose tiles come from ``server_url``/{z}/{x}/{y}.png."""
    path.write_text(
        f"<GDAL_WMS><Service name=\"TMS\"><ServerUrl>{server_url}/${{z}}/${{x}}/${{y}}.png"
        "</ServerUrl></Service><DataWindow><UpperLeftX>-20037508.34</UpperLeftX>"
        "<UpperLeftY>20037508.34</UpperLeftY><LowerRightX>20037508.34</LowerRightX>"
        "<LowerRightY>-20037508.34</LowerRightY><TileLevel>2</TileLevel><TileCountX>1"
        "</TileCountX><TileCountY>1</TileCountY><YOrigin>top</YOrigin></DataWindow>"
        "<Projection>EPSG:3857</Projection><BlockSizeX>256</BlockSizeX>"
        "<BlockSizeY>256</BlockSizeY><BandsCount>3</BandsCount><Cache/></GDAL_WMS>"
    )
    return path


def geotiff_with_overview_file(path: Path, overview_file: str) -> Path:
    """A valid 128x128 GeoTIFF whose GDAL metadata names ``overview_file`` as its overviews
    (GDAL opens that file, with any driver, on the first overview query)."""
    transform = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_300_000.0)
    _write(path, np.zeros((1, 128, 128), "uint8"), crs=UTM33, transform=transform)
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(ns="OVERVIEWS", OVERVIEW_FILE=overview_file)
    return path


# -- footprints off the Earth (tests/tiles/test_footprint.py) --------------------------------
FULL_DISK_HALF_M = 5434894.7  # GOES ABI full disk: +-0.151872 rad scan angle * 35786023 m


def geostationary_full_disk(directory: Path, lon_0: float = -75.0, size: int = 256) -> Path:
    """size x size uint8 full-disk image in a geostationary CRS (GOES-East at lon_0=-75): its
    corners and most of its edges are space; value 100 everywhere."""
    crs = rasterio.crs.CRS.from_proj4(
        f"+proj=geos +h=35786023 +lon_0={lon_0} +sweep=x +ellps=GRS80 +units=m +no_defs")
    half = FULL_DISK_HALF_M
    transform = Affine(2 * half / size, 0.0, -half, 0.0, -2 * half / size, half)
    return _write(directory / f"full_disk_{lon_0:g}.tif", np.full((1, size, size), 100, "uint8"),
                  crs=crs, transform=transform)


def vrt_mosaic(directory: Path, remote: str) -> Path:
    """1024x1024 VRT (128 px blocks): a local 7-valued GeoTIFF everywhere, plus a 64 px patch
    at (512, 512) from ``remote``. Its first and last blocks are local, so it opens without
    touching ``remote``; a read over the middle needs it."""
    base = directory / "mosaic_base.tif"
    _write(base, np.full((1, 1024, 1024), 7, "uint8"))

    def source(filename: str, offset: int, size: int, properties: str = "") -> str:
        return (f'<ComplexSource><SourceFilename relativeToVRT="0">{filename}</SourceFilename>'
                f"<SourceBand>1</SourceBand>{properties}"
                f'<SrcRect xOff="0" yOff="0" xSize="{size}" ySize="{size}"/>'
                f'<DstRect xOff="{offset}" yOff="{offset}" xSize="{size}" ySize="{size}"/>'
                "</ComplexSource>")

    lazy = ('<SourceProperties RasterXSize="64" RasterYSize="64" DataType="Byte" '
            'BlockXSize="64" BlockYSize="64"/>')  # known size: GDAL opens it only to read
    path = directory / "mosaic.vrt"
    path.write_text(
        '<VRTDataset rasterXSize="1024" rasterYSize="1024"><VRTRasterBand dataType="Byte" '
        f'band="1" blockXSize="128" blockYSize="128">{source(str(base), 0, 1024)}'
        f"{source(remote, 512, 64, lazy)}</VRTRasterBand></VRTDataset>"
    )
    return path
