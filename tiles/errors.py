"""Exceptions raised by ``tiles``.

One root, :class:`TilesError`; each subclass also inherits the matching builtin (as rasterio's
``RasterioIOError(RasterioError, OSError)`` does) so callers that only know Python's exceptions
still catch them. Messages quote the bad value and say what to do next; ``app/`` shows them to
the analyst verbatim.
"""

from __future__ import annotations

__all__ = [
    "BandPresetError",
    "CropError",
    "EmptyRasterError",
    "GeoJSONReadError",
    "GeoJSONWriteError",
    "GeometryError",
    "NotGeoreferencedError",
    "OpenCancelledError",
    "RasterAccessError",
    "RasterFormatError",
    "RasterOpenError",
    "RasterReadError",
    "RasterWriteError",
    "RegionOutsideError",
    "TileError",
    "TilesError",
    "TilingError",
    "UnknownRasterError",
    "UnsupportedCRSError",
]


class TilesError(Exception):
    """Root of every error ``tiles`` raises on purpose."""


class RasterOpenError(TilesError, OSError):
    """A raster is missing, unreadable or corrupt (message: path, GDAL's reason, next step)."""


class RasterAccessError(RasterOpenError):
    """The open policy refuses a location: outside the data folders (``--data-dir``), a network
    URL while network access is off, or a GDAL virtual file system path."""


class RasterFormatError(RasterOpenError):
    """The open policy refuses a file's format for an untrusted open (a GDAL VRT, a tile-service
    description, a file whose metadata names another file, ...): it could read other files or
    URLs."""


class RasterReadError(RasterOpenError):
    """Pixels of an opened raster cannot be read (truncated or corrupt file, changed on disk)."""


class OpenCancelledError(TilesError):
    """An open was cancelled before its raster was ready (the COG build stopped; nothing kept)."""


class EmptyRasterError(TilesError, ValueError):
    """A raster file is empty (0 bytes) or has zero width, height or bands."""


class UnsupportedCRSError(TilesError, ValueError):
    """A CRS cannot be parsed or cannot be transformed to lon/lat (EPSG:4326)."""


class NotGeoreferencedError(UnsupportedCRSError):
    """Lon/lat asked of a raster or crop without georeferencing (a plain image: pixel space)."""


class RegionOutsideError(TilesError, ValueError):
    """A region does not overlap the raster (message names the raster's lon/lat bounds)."""


class GeometryError(TilesError, ValueError):
    """A geometry is not valid GeoJSON, is empty, or has a type that is not supported."""


class UnknownRasterError(TilesError, KeyError):
    """A catalog id is not (or no longer) open."""

    def __str__(self) -> str:
        # KeyError's str() is the repr of its argument; show the message as written.
        return str(self.args[0]) if self.args else ""


class BandPresetError(TilesError, ValueError):
    """A band preset is unknown or does not fit the raster's bands."""


class TileError(TilesError, ValueError):
    """A tile request is malformed (zoom/x/y out of range, wrong tiling scheme for the raster)."""


class TilingError(TilesError, ValueError):
    """A tiling plan or a merge is asked with bad parameters (tile size, overlap, resolution,
    thresholds); the message quotes the value and the valid range."""


class CropError(TilesError, ValueError):
    """A crop request is malformed (empty window, bad max_side, bad box)."""


class RasterWriteError(TilesError, OSError):
    """A raster could not be written (bad array/CRS/transform or an I/O failure)."""


class GeoJSONWriteError(TilesError, OSError):
    """A GeoJSON file could not be written (unserialisable properties or an I/O failure)."""


class GeoJSONReadError(TilesError, OSError):
    """A GeoJSON file is missing, unreadable or not a FeatureCollection."""
