"""Open raster files under an explicit policy: :class:`OpenPolicy` and :func:`open_dataset`.

A raster named by someone the operator does not control (an upload, a path typed in the
browser) must not become a way to read other files or to fetch URLs. GDAL opens, by default,
formats that reference other files (a VRT whose band reads ``/etc/shadow``; a GeoTIFF whose
metadata names an ``OVERVIEW_FILE``; sidecar ``.ovr``/``.msk``/``.aux.xml`` files next to it) and
URLs (``/vsicurl/``, WMS descriptions, ``http://`` sources). So an open is checked in three ways:

* **Where** (:func:`locate`): an untrusted path must be a plain local file; when ``data_dirs``
  is set it must resolve (symlinks followed) inside one of them. GDAL virtual file systems
  (``/vsizip/``, ``/vsisubfile/``, ...) are refused; network locations (``/vsicurl/``,
  ``https://``, ``s3://``, ...) only pass with ``allow_network``.
* **What**: an untrusted file is opened with exactly one driver of ``allowed_drivers``, chosen
  from its first bytes (:func:`tiles.formats.sniff`), so GDAL never even tries the VRT driver
  on it (``rasterio.open`` takes one driver name, not a list, in rasterio 1.4). Sidecar files
  are ignored (``GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR``) and a file whose own metadata names
  another file (``OVERVIEW_FILE``, geolocation arrays) is refused.
* **Network** (:func:`gdal_env`): unless ``allow_network``, every open and read runs in a GDAL
  environment where ``/vsicurl/`` and its cousins (``/vsis3/``, ``/vsigs/``, streaming
  variants) accept no URL (``CPL_VSIL_CURL_ALLOWED_FILENAME`` names a file that cannot exist)
  and libcurl fetches of the other drivers (HTTP, WMS, WMTS, WCS: reachable only from trusted
  files) go through a proxy whose scheme libcurl rejects before connecting. Caveat: libcurl
  bypasses a proxy for hosts listed in a ``NO_PROXY``/``no_proxy`` environment variable, so for
  those hosts only the first guard holds (``/vsicurl/`` stays blocked; a *trusted* VRT with a
  plain ``http://`` source could still reach them).

Trusted opens (the operator's command-line rasters, files under ``trusted_dirs``) may use any
GDAL driver, VRT included, and their sidecar files; the network rule still applies to them.

The formats accepted from untrusted sources, and why, are in :mod:`tiles.formats`.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from tiles.errors import EmptyRasterError, RasterAccessError, RasterFormatError, RasterOpenError
from tiles.formats import REFERENCING_DRIVERS, SAFE_DRIVERS, SAFE_FORMATS, sniff
from tiles.types import PathLikeStr

if TYPE_CHECKING:
    from rasterio.io import DatasetReader

__all__ = [
    "DEFAULT_POLICY",
    "Location",
    "OpenPolicy",
    "gdal_cache_limit",
    "gdal_env",
    "gdal_options",
    "gdal_reason",
    "ignored_sidecars",
    "is_virtual_path",
    "locate",
    "open_dataset",
    "open_located",
]

_NETWORK_VSI = ("/vsicurl", "/vsis3", "/vsigs", "/vsiaz", "/vsiadls", "/vsioss", "/vsiswift",
                "/vsiwebhdfs", "/vsihdfs")  # prefixes; "_streaming" variants included
_NETWORK_SCHEMES = frozenset({"http", "https", "ftp", "s3", "gs", "az", "azure", "adls", "oss",
                              "swift", "hdfs", "webhdfs"})
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_SCHEMES_ANYWHERE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")

_NETWORK_OFF = "geolens-network-access-is-off"
_NETWORK_OFF_OPTIONS = {
    # /vsicurl/ and every handler built on it accept only this exact (impossible) name.
    "CPL_VSIL_CURL_ALLOWED_FILENAME": f"/vsicurl/{_NETWORK_OFF}",
    # Every other libcurl fetch (HTTP/WMS/... drivers): an unsupported proxy scheme makes libcurl
    # fail before it resolves or connects anything.
    "GDAL_HTTP_PROXY": f"{_NETWORK_OFF}://127.0.0.1:9",
    "GDAL_HTTPS_PROXY": f"{_NETWORK_OFF}://127.0.0.1:9",
}
_UNTRUSTED_OPTIONS = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}  # no sidecar files at all
# Set explicitly for trusted opens: rasterio sets options of the main thread process-wide, and a
# thread's own value must win over an untrusted open running in the main thread meanwhile.
_TRUSTED_OPTIONS = {"GDAL_DISABLE_READDIR_ON_OPEN": "FALSE"}

_SNIFF_BYTES = 4096
_SIDECAR_SUFFIXES = (".aux.xml", ".ovr", ".msk", ".aux")
_WORLD_FILE_SUFFIXES = (".wld", ".tfw", ".tifw", ".pgw", ".pngw", ".jgw", ".jpgw", ".j2w", ".wpw")


def _resolved_dirs(dirs: object, name: str) -> tuple[Path, ...]:
    if isinstance(dirs, (str, os.PathLike)):
        raise ValueError(f"OpenPolicy.{name} must be a sequence of folders, got one path {dirs!r}")
    return tuple(Path(d).expanduser().resolve() for d in dirs)


@dataclass(frozen=True)
class OpenPolicy:
    """Which rasters may be opened, from where, and whether GDAL may use the network.

    ``allowed_drivers``: GDAL drivers for untrusted files (default :data:`SAFE_DRIVERS`).
    ``trusted_dirs``: files under these folders (resolved) may use any driver (VRTs, sidecars);
    a trusted folder also counts as a data folder. ``data_dirs``: when not None, untrusted opens
    by path must resolve inside one of them (``--data-dir``). ``allow_network``: GDAL may fetch
    URLs (network paths, VRT sources); off by default.
    """

    allowed_drivers: tuple[str, ...] = SAFE_DRIVERS
    trusted_dirs: tuple[Path, ...] = ()
    data_dirs: tuple[Path, ...] | None = None
    allow_network: bool = False

    def __post_init__(self) -> None:
        drivers = tuple(self.allowed_drivers)
        if not drivers or not all(isinstance(d, str) and d for d in drivers):
            raise ValueError(f"OpenPolicy.allowed_drivers needs driver names, got {drivers!r}")
        unsafe = sorted(set(drivers) & REFERENCING_DRIVERS)
        if unsafe:
            raise ValueError(
                f"OpenPolicy.allowed_drivers must not include {unsafe}: these formats read other "
                "files or URLs. Put such files in a trusted folder (trusted_dirs, --trusted-dir)."
            )
        object.__setattr__(self, "allowed_drivers", drivers)
        object.__setattr__(self, "trusted_dirs", _resolved_dirs(self.trusted_dirs, "trusted_dirs"))
        if self.data_dirs is not None:
            object.__setattr__(self, "data_dirs", _resolved_dirs(self.data_dirs, "data_dirs"))

    def in_trusted_dir(self, resolved: Path) -> bool:
        """Whether the resolved path lies under one of ``trusted_dirs``."""
        return any(resolved.is_relative_to(d) for d in self.trusted_dirs)

    def in_data_dir(self, resolved: Path) -> bool:
        """Whether an untrusted open may read the resolved path (always, without data_dirs)."""
        if self.data_dirs is None:
            return True
        return any(resolved.is_relative_to(d) for d in (*self.data_dirs, *self.trusted_dirs))

    def with_data_dir(self, folder: Path) -> OpenPolicy:
        """This policy with one more data folder (a no-op when data_dirs is None)."""
        if self.data_dirs is None:
            return self
        return OpenPolicy(self.allowed_drivers, self.trusted_dirs,
                          (*self.data_dirs, Path(folder)), self.allow_network)

    @property
    def accepted_formats(self) -> str:
        """'GeoTIFF (COG included), JPEG2000, PNG, JPEG or WebP' for messages."""
        labels = [SAFE_FORMATS[d].label if d in SAFE_FORMATS else d for d in self.allowed_drivers]
        return labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} or {labels[-1]}"


DEFAULT_POLICY = OpenPolicy()


@dataclass(frozen=True)
class Location:
    """Where an open goes, after the policy checks: ``path`` is what GDAL gets (resolved for
    untrusted local files); ``local`` False for network paths; ``trusted`` the effective trust."""

    path: Path
    shown: Path  # the path as the analyst gave it (expanded), for messages and Raster.path
    local: bool
    trusted: bool


# -- where ------------------------------------------------------------------------------------
def is_virtual_path(text: str) -> bool:
    """True for GDAL virtual file system paths (``/vsi...``) and URLs (``scheme://``)."""
    return text.startswith("/vsi") or _URL.match(text) is not None


def _is_network(text: str) -> bool:
    schemes = {s.lower() for match in _SCHEMES_ANYWHERE.findall(text) for s in match.split("+")}
    return any(v in text for v in _NETWORK_VSI) or bool(schemes & _NETWORK_SCHEMES)


def _is_pure_network(text: str) -> bool:
    match = _URL.match(text)
    if match:
        return all(s.lower() in _NETWORK_SCHEMES for s in match.group(1).split("+"))
    return text.startswith(_NETWORK_VSI)


def _network_path(text: str) -> Path:
    """A network location as a Path that survives pathlib (which folds '//'): URLs become
    ``/vsicurl?url=`` with the '//' escaped, ``s3://``/``gs://`` become ``/vsis3/``/``/vsigs/``."""
    for prefix in ("/vsicurl/", "/vsicurl_streaming/"):
        if text.startswith(prefix) and _URL.match(text[len(prefix):]):
            text = text[len(prefix):]
    match = _URL.match(text)
    scheme = match.group(1).lower() if match else ""
    if scheme in ("s3", "gs"):
        return Path(f"/vsi{scheme}/{text[match.end():]}")
    if scheme in ("http", "https", "ftp"):
        return Path("/vsicurl?url=" + quote(text, safe=":/@").replace("//", "%2F%2F"))
    return Path(text)


def _refuse_virtual(text: str, policy: OpenPolicy, trusted: bool) -> None:
    if _is_network(text) and not policy.allow_network:
        raise RasterAccessError(
            f"cannot open {text!r}: it is a network location, and GeoLens does not fetch "
            "rasters over the network unless the operator starts it with "
            "--allow-network-rasters. Download the file and open the local copy."
        )
    if not trusted and not _is_pure_network(text):
        raise RasterAccessError(
            f"cannot open {text!r}: GDAL virtual file systems (/vsizip/, /vsisubfile/, "
            "/vsimem/, ...) can read any file on the server, so they are not accepted for "
            "uploads or paths typed in the app. Give the path of a plain raster file (the "
            "operator may pass such paths on the command line)."
        )


def _check_file(path: Path, shown: Path) -> None:
    if not path.exists():
        raise RasterOpenError(
            f"cannot open raster {str(shown)!r}: the file does not exist. Check the path "
            "(relative paths are taken from the directory GeoLens was started in)."
        )
    if path.is_dir():
        raise RasterOpenError(
            f"cannot open raster {str(shown)!r}: it is a directory. Pass one raster file "
            "inside it (for example a .tif)."
        )
    if not path.is_file():
        raise RasterOpenError(
            f"cannot open raster {str(shown)!r}: it is not a regular file (a device, pipe or "
            "socket). Pass a raster file."
        )
    if path.stat().st_size == 0:
        raise EmptyRasterError(
            f"cannot open raster {str(shown)!r}: the file is empty (0 bytes). It was probably "
            "not fully written or downloaded; export or copy it again."
        )


def _outside_data_dirs(shown: Path, resolved: Path, policy: OpenPolicy) -> RasterAccessError:
    folders = ", ".join(repr(str(d)) for d in (*(policy.data_dirs or ()), *policy.trusted_dirs))
    via = "" if str(resolved) == str(shown) else f" (it resolves to {str(resolved)!r})"
    return RasterAccessError(
        f"cannot open {str(shown)!r}{via}: rasters can only be opened from the data folders "
        f"{folders or '(none configured)'}. Copy the file into one of them, or ask the operator "
        "to add its folder with --data-dir."
    )


def locate(path: PathLikeStr, policy: OpenPolicy = DEFAULT_POLICY, *,
           trusted: bool = False) -> Location:
    """Apply the policy's location rules to ``path``; RasterAccessError/RasterOpenError say why
    not. The data-folder rule is checked before existence, so refusals reveal nothing about
    files outside the data folders."""
    text = os.fspath(path)
    if is_virtual_path(text):
        _refuse_virtual(text, policy, trusted)
        return Location(path=_network_path(text) if _is_pure_network(text) else Path(text),
                        shown=Path(text), local=False, trusted=trusted)
    shown = Path(text).expanduser()
    resolved = shown.resolve()
    trusted = trusted or policy.in_trusted_dir(resolved)
    if not trusted and (not policy.in_data_dir(resolved) or is_virtual_path(str(resolved))):
        raise _outside_data_dirs(shown, resolved, policy)
    target = shown if trusted else resolved
    _check_file(target, shown)
    return Location(path=target, shown=shown, local=True, trusted=trusted)


def ignored_sidecars(location: Location) -> list[Path]:
    """Sidecar files next to an untrusted local raster that GDAL will not read (world files,
    .aux.xml, .ovr, .msk): they are named here so the analyst learns why they have no effect."""
    if location.trusted or not location.local:
        return []
    path = location.path
    names = [path.with_name(path.name + s) for s in _SIDECAR_SUFFIXES]
    names += [path.with_suffix(s) for s in (*_WORLD_FILE_SUFFIXES, ".aux", ".prj")]
    return [p for p in dict.fromkeys(names) if p != path and p.exists()]


# -- what ---------------------------------------------------------------------------------------
def _refuse_format(shown: Path, what: str, policy: OpenPolicy) -> RasterFormatError:
    return RasterFormatError(
        f"cannot open {str(shown)!r}: it is {what}. Uploads and rasters opened from the app "
        f"must be {policy.accepted_formats}, which cannot reach other files or URLs. If the "
        "file is trusted, the operator can put it in a folder passed with --trusted-dir (files "
        "there may use any GDAL format, VRT included)."
    )


def _drivers_to_try(location: Location, policy: OpenPolicy) -> tuple[str, ...]:
    if not location.local:
        return policy.allowed_drivers
    with open(location.path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    driver, what = sniff(head)
    if driver in policy.allowed_drivers:
        return (driver,)
    if what is not None:
        raise _refuse_format(location.shown, what, policy)
    return policy.allowed_drivers  # unknown bytes: let the allowed drivers (and GDAL) judge


def gdal_reason(exc: BaseException) -> str:
    """The most specific GDAL message in an exception chain (rasterio wraps the real one)."""
    reason = str(exc)
    cause = exc.__cause__ or exc.__context__
    while cause is not None:
        if str(cause):
            reason = str(cause)
        cause = cause.__cause__ or cause.__context__
    return reason.rstrip(". ")


def _unreadable(shown: Path, exc: BaseException, policy: OpenPolicy) -> RasterOpenError:
    return RasterOpenError(
        f"cannot open raster {str(shown)!r}: GDAL says: {gdal_reason(exc)}. Check that the "
        f"file is a complete raster in a format GeoLens opens ({policy.accepted_formats}); "
        "re-download or re-export it if it is truncated or corrupt."
    )


def _external_reference(dataset: DatasetReader) -> str | None:
    """The other file an open dataset's own metadata names, if any (before anything reads it:
    GDAL opens OVERVIEW_FILE with every driver on the first overview query)."""
    overview_file = dataset.tags(ns="OVERVIEWS").get("OVERVIEW_FILE")
    if overview_file:
        return f"an external overview file ({overview_file!r})"
    geolocation = dataset.tags(ns="GEOLOCATION")
    if geolocation.get("X_DATASET") or geolocation.get("Y_DATASET"):
        return f"geolocation arrays in other files ({geolocation.get('X_DATASET')!r})"
    return None


# -- network and GDAL environment ---------------------------------------------------------------
def gdal_options(policy: OpenPolicy, *, trusted: bool) -> dict[str, str]:
    """GDAL config options for opens and reads under ``policy`` (see the module docstring)."""
    options = {} if policy.allow_network else dict(_NETWORK_OFF_OPTIONS)
    options.update(_TRUSTED_OPTIONS if trusted else _UNTRUSTED_OPTIONS)
    return options


@contextlib.contextmanager
def gdal_env(policy: OpenPolicy = DEFAULT_POLICY, *, trusted: bool = False) -> Iterator[None]:
    """A ``rasterio.Env`` with :func:`gdal_options`; wrap every open *and* read in it (VRT
    sources are opened lazily, at read time). Costs ~0.1-0.2 ms per entry."""
    with rasterio.Env(**gdal_options(policy, trusted=trusted)):
        yield


@contextlib.contextmanager
def gdal_cache_limit(cache_mb: int | None) -> Iterator[None]:
    """Cap GDAL's raster block cache at ``cache_mb`` MiB (``GDAL_CACHEMAX``) for the block;
    None or 0 leaves GDAL's own default (5 % of RAM). The cache is process-wide: rasterio sets
    it with ``GDALSetCacheMax64`` on entry and restores the previous size on exit. Long scans
    of scattered windows use it so that blocks no later read reuses do not pile up."""
    if cache_mb is None or cache_mb == 0:
        yield
        return
    if isinstance(cache_mb, bool) or not isinstance(cache_mb, int) or cache_mb < 0:
        raise ValueError(f"the GDAL block cache size is a whole number of MiB >= 0 (0: GDAL's "
                         f"default), got {cache_mb!r}")
    with rasterio.Env(GDAL_CACHEMAX=cache_mb * 1024 * 1024):
        yield


def _open_one(location: Location, driver: str | None) -> DatasetReader:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(location.path, driver=driver)


def open_located(location: Location, policy: OpenPolicy = DEFAULT_POLICY) -> DatasetReader:
    """Open a :func:`locate`-checked location: any driver when trusted, else one allowed driver
    chosen by :func:`sniff`; refuses untrusted files whose metadata names other files."""
    with gdal_env(policy, trusted=location.trusted):
        if location.trusted:
            try:
                return _open_one(location, None)
            except RasterioIOError as exc:
                raise _unreadable(location.shown, exc, policy) from exc
        first_error: RasterioIOError | None = None
        for driver in _drivers_to_try(location, policy):
            try:
                dataset = _open_one(location, driver)
            except RasterioIOError as exc:
                first_error = first_error or exc
                continue
            reference = _external_reference(dataset)
            if reference is not None:
                dataset.close()
                raise RasterFormatError(
                    f"cannot open {str(location.shown)!r}: it is a {dataset.driver} file whose "
                    f"metadata names {reference}, which GDAL would open with any driver (a way "
                    "to read other files or URLs). Re-export it without that metadata (e.g. "
                    "`gdal_translate in.tif out.tif`), or the operator can put it in a folder "
                    "passed with --trusted-dir."
                )
            return dataset
        raise _unreadable(location.shown, first_error, policy) from first_error


def open_dataset(path: PathLikeStr, *, policy: OpenPolicy = DEFAULT_POLICY,
                 trusted: bool = False) -> DatasetReader:
    """``rasterio.open`` under ``policy`` (:func:`locate` + :func:`open_located`), with our
    errors and without NotGeoreferencedWarning for plain images. The caller closes it; reads
    of trusted VRTs should run inside :func:`gdal_env` too."""
    return open_located(locate(path, policy, trusted=trusted), policy)
