"""Raster formats by their first bytes: :func:`sniff`, and the formats safe for untrusted files.

:data:`SAFE_FORMATS` is the registry of GDAL drivers that :class:`tiles.opening.OpenPolicy`
accepts for untrusted files by default, each with the reason it is safe: the pixels and the
georeferencing live in the one file. :func:`sniff` names a file's format from its first bytes,
so an untrusted file is opened with exactly that driver (GDAL never tries the VRT driver on a
``.tif``), and a refused file can be described to the analyst in words ("a GDAL VRT file,
which can read other files and URLs").

Left out of the safe set on purpose: VRT and GDAL's XML service descriptions (WMS, WMTS, WCS:
read other files or URLs), HFA/Erdas ``.img`` (spill ``.ige`` and dependent ``.rrd`` files),
ENVI/EHdr and other raw formats (a header that points at a data file), netCDF/HDF5 (external
links, OPeNDAP URLs), NITF and SAFE/product folders (many files).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["REFERENCING_DRIVERS", "SAFE_DRIVERS", "SAFE_FORMATS", "SafeFormat", "sniff"]


@dataclass(frozen=True)
class SafeFormat:
    """A GDAL driver accepted for untrusted files, and why it is safe to accept."""

    driver: str
    label: str  # what the analyst calls it
    reason: str


SAFE_FORMATS: dict[str, SafeFormat] = {f.driver: f for f in (
    SafeFormat("GTiff", "GeoTIFF (COG included)",
               "pixels, georeferencing and internal overviews/masks in one file; the common "
               "analysis format. Sidecars are ignored and an OVERVIEW_FILE in its metadata is "
               "refused for untrusted opens"),
    SafeFormat("JP2OpenJPEG", "JPEG2000",
               "Sentinel-2 and many archives ship .jp2; its GMLJP2 CRS boxes are resolved "
               "inside the file"),
    SafeFormat("PNG", "PNG", "plain images (DIOR-style datasets, screenshots); one file"),
    SafeFormat("JPEG", "JPEG", "plain photos and aerial frames; one file"),
    SafeFormat("WEBP", "WebP", "plain images; one file"),
)}
SAFE_DRIVERS: tuple[str, ...] = tuple(SAFE_FORMATS)

# Drivers that read other files or URLs by design; refused in allowed_drivers (use trusted_dirs).
REFERENCING_DRIVERS = frozenset({
    "VRT", "WMS", "WMTS", "WCS", "HTTP", "DAAS", "EEDAI", "OGCAPI", "STACIT", "STACTA", "ESRIC",
    "PLMOSAIC", "NGW", "GTI", "HFA", "ENVI", "EHdr", "netCDF", "HDF5", "HDF4", "SENTINEL2",
})

_SIGNATURES: tuple[tuple[bytes, str | None, str], ...] = (
    (b"II*\x00", "GTiff", "a TIFF file"),
    (b"MM\x00*", "GTiff", "a TIFF file"),
    (b"II+\x00", "GTiff", "a BigTIFF file"),
    (b"MM\x00+", "GTiff", "a BigTIFF file"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JP2OpenJPEG", "a JPEG2000 file"),
    (b"\xffO\xffQ", "JP2OpenJPEG", "a JPEG2000 codestream"),
    (b"\x89PNG\r\n\x1a\n", "PNG", "a PNG image"),
    (b"\xff\xd8\xff", "JPEG", "a JPEG image"),
    (b"GIF8", "GIF", "a GIF image"),
    (b"EHFA_HEADER_TAG", "HFA",
     "an ERDAS Imagine (.img) file, which can read other files (.ige, .rrd)"),
    (b"\x89HDF\r\n\x1a\n", "HDF5", "an HDF5 file, whose external links can read other files"),
    (b"CDF\x01", "netCDF", "a netCDF file, which can reference other files and URLs"),
    (b"CDF\x02", "netCDF", "a netCDF file, which can reference other files and URLs"),
    (b"PK\x03\x04", None, "a ZIP archive"),
    (b"ENVI", "ENVI", "an ENVI header, which reads a separate data file"),
)
_XML_KINDS: tuple[tuple[bytes, str, str], ...] = (
    (b"<VRTDataset", "VRT", "a GDAL VRT file, which can read other files and URLs"),
    (b"<GDAL_WMS", "WMS", "a GDAL WMS/tile-service description, which fetches URLs"),
    (b"<GDAL_WMTS", "WMTS", "a GDAL WMTS description, which fetches URLs"),
    (b"<WCS_GDAL", "WCS", "a GDAL WCS description, which fetches URLs"),
    (b"<OGRVRTDataSource", "OGR_VRT", "a GDAL vector VRT, which can read other files"),
)


def sniff(head: bytes) -> tuple[str | None, str | None]:
    """(GDAL driver, description) guessed from a file's first bytes; (None, None) when unknown.
    The description says what the file is in words ("a GDAL VRT file, which can read other
    files and URLs"); the driver may be None for non-raster files (a ZIP archive, HTML)."""
    for signature, driver, what in _SIGNATURES:
        if head.startswith(signature):
            return driver, what
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP", "a WebP image"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"<"):
        for tag, driver, what in _XML_KINDS:
            if tag in head:
                return driver, what
        lowered = text[:512].lower()
        if lowered.startswith(b"<!doctype html") or b"<html" in lowered:
            return None, "an HTML page"
        return None, "an XML document"
    return None, None
