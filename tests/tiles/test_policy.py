"""Open policy (issue 18, item 1): untrusted rasters reach no other file and no URL.

The hostile files are the ones from the issue: a VRT named ``x.tif`` whose band reads a local
file, VRTs whose sources are URLs on a local HTTP server that records every request (it must
receive none), a GeoTIFF whose metadata names another file as its overviews, a sidecar ``.ovr``
that is really a VRT, and GDAL virtual paths given directly. "Upload" cases open from the
uploads folder as a data folder, as the app does.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import rasterio

import tiles
from tests.tiles import rasters as gen
from tiles.formats import sniff
from tiles.opening import gdal_env, locate

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

SECRET_ROW0 = list(range(8))  # first bytes of the secret file, as the first pixels of a band


@pytest.fixture
def secret(tmp_path):
    return gen.secret_file(tmp_path)


@pytest.fixture
def uploads(tmp_path):
    folder = tmp_path / "uploads"
    folder.mkdir()
    return folder


def _assert_vrt_refusal(message: str) -> None:
    assert "a GDAL VRT file, which can read other files and URLs" in message
    for accepted in ("GeoTIFF", "JPEG2000", "PNG", "JPEG"):
        assert accepted in message
    assert "--trusted-dir" in message


# -- a VRT that reads a local file ------------------------------------------------------------
def test_vrt_named_tif_reading_a_file_is_refused(tmp_path, secret, uploads):
    hostile = gen.vrt_raw(uploads / "x.tif", str(secret))
    with rasterio.open(hostile) as ds:  # the attack works with a plain rasterio.open
        assert ds.driver == "VRT" and list(ds.read(1)[0, :8]) == SECRET_ROW0
    with pytest.raises(tiles.RasterFormatError) as info:
        tiles.open_raster(hostile)
    _assert_vrt_refusal(str(info.value))
    assert isinstance(info.value, tiles.RasterOpenError)
    with tiles.Catalog(tmp_path / "ws", policy=tiles.OpenPolicy(data_dirs=(uploads,))) as cat:
        with pytest.raises(tiles.RasterFormatError):  # the upload path
            cat.open(hostile)
        assert len(cat) == 0


def test_the_same_vrt_in_a_trusted_folder_opens(tmp_path, secret):
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    vrt = gen.vrt_raw(trusted / "mosaic.vrt", str(secret))
    policy = tiles.OpenPolicy(trusted_dirs=(trusted,), data_dirs=())
    with tiles.Catalog(tmp_path / "ws", policy=policy) as cat:
        raster = cat.get(cat.open(vrt))
        assert raster.driver == "VRT" and raster.trusted
        crop = tiles.read_crop(raster, rasterio.windows.Window(0, 0, 8, 1))
        assert list(crop.image[0, :, 0]) == SECRET_ROW0  # read through the pooled handle
    # the operator's own command-line raster: trusted by argument, wherever it lies
    assert tiles.open_raster(vrt, trusted=True).driver == "VRT"


# -- VRTs that fetch URLs ---------------------------------------------------------------------
@pytest.mark.parametrize("maker", [gen.vrt_raw, gen.vrt_complex], ids=["raw", "complex"])
def test_vrt_reading_a_url_is_refused_without_a_request(tmp_path, uploads, http_server, maker):
    hostile = maker(uploads / "x.tif", f"/vsicurl/{http_server.url('secret.bin')}")
    with pytest.raises(tiles.RasterFormatError) as info:
        tiles.open_raster(hostile, policy=tiles.OpenPolicy(data_dirs=(uploads,)))
    _assert_vrt_refusal(str(info.value))
    assert http_server.requests() == []


@pytest.mark.parametrize("source", ["/vsicurl/{url}", "/vsicurl?url={url}",
                                    "/vsicurl_streaming/{url}", "{url}"],
                         ids=["vsicurl", "vsicurl-query", "streaming", "http-driver"])
def test_trusted_vrt_makes_no_request_while_network_is_off(tmp_path, http_server, monkeypatch,
                                                           source):
    # libcurl skips GDAL's proxy guard for NO_PROXY hosts (see tiles.opening); the
    # /vsicurl/ family is blocked regardless, the plain-http case relies on the proxy.
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    vrt = gen.vrt_complex(trusted / "remote.vrt", source.format(url=http_server.url("a.tif")))
    policy = tiles.OpenPolicy(trusted_dirs=(trusted,))
    with pytest.raises(tiles.RasterOpenError, match="--allow-network"):
        tiles.open_raster(vrt, policy=policy)  # its first block cannot be read
    with tiles.open_dataset(vrt, policy=policy) as ds, gdal_env(policy, trusted=True):
        with pytest.raises(rasterio.errors.RasterioIOError):
            ds.read(1)
    assert http_server.requests() == []


def test_trusted_wms_description_makes_no_request(tmp_path, http_server, monkeypatch):
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    wms = gen.wms_xml(tmp_path / "tiles.xml", http_server.url("tms"))
    with pytest.raises(tiles.RasterOpenError):
        tiles.open_raster(wms, trusted=True)
    assert http_server.requests() == []
    with pytest.raises(tiles.RasterFormatError, match="WMS"):  # untrusted: refused by format
        tiles.open_raster(wms)


@pytest.mark.parametrize("allow_network", [False, True])
def test_reads_from_server_threads_follow_the_network_rule(tmp_path, http_server, allow_network):
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    vrt = gen.vrt_mosaic(trusted, f"/vsicurl/{http_server.url('patch.tif')}")
    policy = tiles.OpenPolicy(trusted_dirs=(trusted,), allow_network=allow_network)
    with tiles.Catalog(tmp_path / "ws", policy=policy) as cat:
        raster = cat.get(cat.open(vrt))  # first/last blocks are local: opens either way
        assert http_server.requests() == []

        def middle(_):
            try:
                return tiles.read_crop(raster, rasterio.windows.Window(500, 500, 100, 100))
            except tiles.RasterReadError as exc:  # never a raw rasterio error
                return exc

        with ThreadPoolExecutor(max_workers=3) as pool:
            list(pool.map(middle, range(6)))
    assert (http_server.requests() != []) == allow_network


def test_the_recorder_sees_requests_when_network_is_allowed(tmp_path, http_server):
    """The harness works: with allow_network the same trusted VRT does reach the server."""
    vrt = gen.vrt_complex(tmp_path / "remote.vrt", f"/vsicurl/{http_server.url('a.tif')}")
    with pytest.raises(tiles.RasterOpenError):  # 404
        tiles.open_raster(vrt, policy=tiles.OpenPolicy(allow_network=True), trusted=True)
    assert any("/a.tif" in line for line in http_server.requests())


# -- network and virtual paths given directly ------------------------------------------------------
@pytest.mark.parametrize("template", ["/vsicurl/{url}", "{url}", "/vsicurl?url={url}",
                                      "/vsicurl_streaming/{url}"])
def test_network_path_is_refused_without_a_request(http_server, template):
    path = template.format(url=http_server.url("x.tif"))
    for trusted in (False, True):
        with pytest.raises(tiles.RasterAccessError, match="--allow-network"):
            tiles.open_raster(path, trusted=trusted)
    with tiles.Catalog(http_server.log_path.parent / "ws") as cat:
        with pytest.raises(tiles.RasterAccessError):
            cat.open(path)
    assert http_server.requests() == []


def test_network_path_with_allow_network_reaches_the_server(http_server):
    with pytest.raises(tiles.RasterOpenError):  # 404, but the request was made
        tiles.open_raster(http_server.url("x.tif"), policy=tiles.OpenPolicy(allow_network=True))
    assert any("/x.tif" in line for line in http_server.requests())


@pytest.mark.parametrize("template", ["/vsisubfile/0_4096,{secret}", "/vsizip/{secret}/a.tif",
                                      "/vsimem/x.tif", "file://{secret}"])
def test_local_virtual_paths_are_refused_for_untrusted_opens(secret, template):
    with pytest.raises(tiles.RasterAccessError, match="virtual file systems"):
        tiles.open_raster(template.format(secret=secret),
                          policy=tiles.OpenPolicy(allow_network=True))


# -- data folders ---------------------------------------------------------------------------
def test_open_by_path_outside_data_dirs_is_refused(tmp_path, rasters):
    data = tmp_path / "data"
    data.mkdir()
    policy = tiles.OpenPolicy(data_dirs=(data,))
    with pytest.raises(tiles.RasterAccessError) as info:
        tiles.open_raster(rasters["utm_rgb"], policy=policy)
    message = str(info.value)
    assert str(data) in message and "--data-dir" in message
    # a missing file outside the folders gets the same answer: no existence oracle
    with pytest.raises(tiles.RasterAccessError):
        tiles.open_raster("/etc/no-such-file.tif", policy=policy)
    with pytest.raises(tiles.RasterAccessError):
        tiles.open_raster(data / ".." / rasters["utm_rgb"].name, policy=policy)


def test_symlink_escaping_a_data_dir_is_refused(tmp_path, rasters):
    data = tmp_path / "data"
    data.mkdir()
    (data / "escape.tif").symlink_to(rasters["utm_rgb"])
    (data / "inside.tif").write_bytes(rasters["utm_rgb"].read_bytes())
    (data / "alias.tif").symlink_to(data / "inside.tif")
    policy = tiles.OpenPolicy(data_dirs=(data,))
    with pytest.raises(tiles.RasterAccessError, match="resolves to"):
        tiles.open_raster(data / "escape.tif", policy=policy)
    assert tiles.open_raster(data / "inside.tif", policy=policy).width == 512
    assert tiles.open_raster(data / "alias.tif", policy=policy).path == data / "alias.tif"
    # the operator's own rasters ignore the data folders
    assert tiles.open_raster(data / "escape.tif", policy=policy, trusted=True).width == 512


def test_data_dir_itself_may_be_a_symlink(tmp_path, rasters):
    real = tmp_path / "real"
    real.mkdir()
    (real / "a.tif").write_bytes(rasters["utm_rgb"].read_bytes())
    (tmp_path / "link").symlink_to(real)
    policy = tiles.OpenPolicy(data_dirs=(tmp_path / "link",))
    assert tiles.open_raster(tmp_path / "link" / "a.tif", policy=policy).width == 512


# -- GeoTIFFs that name other files --------------------------------------------------------
def test_geotiff_naming_an_overview_file_is_refused(tmp_path, secret, uploads):
    ovr = gen.vrt_raw(tmp_path / "stash.tif", str(secret))  # e.g. an earlier, refused upload
    hostile = gen.geotiff_with_overview_file(uploads / "y.tif", str(ovr))
    with rasterio.open(hostile) as ds:  # the attack works with a plain rasterio.open
        assert ds.overviews(1) == [2]
        assert list(ds.read(1, out_shape=(64, 64))[0, :8]) == SECRET_ROW0
    with pytest.raises(tiles.RasterFormatError, match="external overview file"):
        tiles.open_raster(hostile, policy=tiles.OpenPolicy(data_dirs=(uploads,)))


def test_sidecar_overview_file_is_ignored_for_untrusted_opens(tmp_path, secret, rasters):
    folder = tmp_path / "folder"
    folder.mkdir()
    tif = folder / "a.tif"
    tif.write_bytes(rasters["utm_rgb_noovr"].read_bytes())
    gen.vrt_raw(folder / "a.tif.ovr", str(secret))  # GDAL would open it with any driver
    raster = tiles.open_raster(tif)
    assert raster.overviews == ()
    assert tiles.open_raster(tif, trusted=True).overviews != ()  # the operator's file: used


# -- policy values and sniffing -------------------------------------------------------------------
def test_policy_refuses_referencing_drivers():
    with pytest.raises(ValueError, match="VRT"):
        tiles.OpenPolicy(allowed_drivers=("GTiff", "VRT"))
    with pytest.raises(ValueError, match="sequence of folders"):
        tiles.OpenPolicy(data_dirs="/data")
    assert tiles.DEFAULT_POLICY.allowed_drivers == tiles.SAFE_DRIVERS
    assert set(tiles.SAFE_DRIVERS) == {"GTiff", "JP2OpenJPEG", "PNG", "JPEG", "WEBP"}
    assert not tiles.DEFAULT_POLICY.allow_network and tiles.DEFAULT_POLICY.data_dirs is None


@pytest.mark.parametrize(("head", "driver", "words"), [
    (b"II*\x00rest", "GTiff", "TIFF"),
    (b"\xef\xbb\xbf<?xml version='1.0'?>\n<VRTDataset rasterXSize='1'>", "VRT", "VRT"),
    (b"<GDAL_WMS>", "WMS", "fetches URLs"),
    (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "WEBP", "WebP"),
    (b"<!DOCTYPE html><html>", None, "HTML"),
    (b"\x01\x02\x03", None, None),
])
def test_sniff(head, driver, words):
    got_driver, what = sniff(head)
    assert got_driver == driver
    assert (what is None) if words is None else (words in what)


def test_files_of_other_kinds_say_what_they_are(tmp_path):
    page = tmp_path / "page.png"
    page.write_text("<!DOCTYPE html><html><body>not an image</body></html>")
    with pytest.raises(tiles.RasterFormatError, match="an HTML page"):
        tiles.open_raster(page)


def test_every_safe_format_opens(tmp_path, rasters):
    data = np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype="uint8")
    for driver, name in (("JP2OpenJPEG", "a.jp2"), ("WEBP", "a.webp"), ("PNG", "a.png")):
        with rasterio.open(tmp_path / name, "w", driver=driver, width=64, height=64, count=3,
                           dtype="uint8") as dst:
            dst.write(data)
        assert tiles.open_raster(tmp_path / name).driver == driver
    assert tiles.open_raster(rasters["plain_jpeg"]).driver == "JPEG"


def test_locate_reports_the_effective_trust(tmp_path, rasters):
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    copy = trusted / "a.tif"
    copy.write_bytes(rasters["utm_rgb"].read_bytes())
    policy = tiles.OpenPolicy(trusted_dirs=(trusted,), data_dirs=())
    assert locate(copy, policy).trusted  # under a trusted folder
    assert not locate(rasters["utm_rgb"], tiles.DEFAULT_POLICY).trusted
