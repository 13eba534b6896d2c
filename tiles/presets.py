"""Band presets: which three bands of a multispectral raster become red, green and blue.

An explicit registry (:data:`BAND_PRESETS`), never guessed from file names. A preset names its
bands (matched against the raster's band descriptions, e.g. "B04" or "B4") and gives their
1-based positions in the product's standard band stack, used when the file carries no
descriptions. ``"auto"`` picks bands from the color interpretation (red/green/blue), else the
first three non-alpha bands, else a single gray (or palette) band.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tiles.errors import BandPresetError
from tiles.raster import Raster

__all__ = [
    "AUTO_PRESET",
    "BAND_PRESETS",
    "BandPreset",
    "BandSelection",
    "get_band_preset",
    "select_bands",
]

AUTO_PRESET = "auto"


@dataclass(frozen=True)
class BandPreset:
    """A named RGB composite: band names (looked up in descriptions) and default positions."""

    name: str
    description: str
    band_names: tuple[str, str, str]
    default_indexes: tuple[int, int, int]  # 1-based positions in the standard stack

    def __post_init__(self) -> None:
        if len(self.band_names) != 3 or len(self.default_indexes) != 3:
            raise ValueError(f"preset {self.name!r} needs exactly 3 bands")
        if min(self.default_indexes) < 1:
            raise ValueError(f"preset {self.name!r} band positions are 1-based")


@dataclass(frozen=True)
class BandSelection:
    """Bands to display, 1-based: three (R, G, B) or one (gray; ``palette`` when it has a
    color table to expand)."""

    indexes: tuple[int, ...]
    palette: bool = False

    def __post_init__(self) -> None:
        if len(self.indexes) not in (1, 3) or min(self.indexes) < 1:
            raise ValueError(f"a band selection is 1 or 3 band indexes >= 1, got {self.indexes}")
        if self.palette and len(self.indexes) != 1:
            raise ValueError("a palette selection has exactly one band")


# Sentinel-2 L1C/L2A stack: B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 (B10) B11 B12 -> B08 is 8.
# Landsat 8/9 Collection 2 stack: B1 coastal, B2 blue, B3 green, B4 red, B5 NIR, B6, B7 SWIR.
# NAIP: R, G, B, NIR.
BAND_PRESETS: dict[str, BandPreset] = {
    preset.name: preset
    for preset in (
        BandPreset("sentinel2-true-color", "Sentinel-2 true colour (B04, B03, B02)",
                   ("B04", "B03", "B02"), (4, 3, 2)),
        BandPreset("sentinel2-false-color", "Sentinel-2 colour infrared (B08, B04, B03)",
                   ("B08", "B04", "B03"), (8, 4, 3)),
        BandPreset("landsat89-true-color", "Landsat 8/9 true colour (B4, B3, B2)",
                   ("B4", "B3", "B2"), (4, 3, 2)),
        BandPreset("landsat89-false-color", "Landsat 8/9 colour infrared (B5, B4, B3)",
                   ("B5", "B4", "B3"), (5, 4, 3)),
        BandPreset("naip-rgb", "NAIP natural colour (R, G, B)", ("R", "G", "B"), (1, 2, 3)),
        BandPreset("naip-false-color", "NAIP colour infrared (NIR, R, G)",
                   ("NIR", "R", "G"), (4, 1, 2)),
    )
}


def known_preset_names() -> list[str]:
    """Every accepted preset name, ``"auto"`` first."""
    return [AUTO_PRESET, *BAND_PRESETS]


def get_band_preset(name: str) -> BandPreset:
    """The registered preset ``name``; BandPresetError lists the known names."""
    try:
        return BAND_PRESETS[name]
    except (KeyError, TypeError):
        raise BandPresetError(
            f"unknown band preset {name!r}; known presets: {', '.join(known_preset_names())}"
        ) from None


def _band_key(name: str) -> str:
    """'B04', 'b4', 'B4 ' -> 'B4'; other names upper-cased and stripped."""
    name = name.strip().upper()
    match = re.fullmatch(r"B0*(\d+A?)", name)
    return f"B{match.group(1)}" if match else name


def select_bands(raster: Raster, preset: str | None = None) -> BandSelection:
    """Bands to show as RGB for ``preset`` (None means ``"auto"``)."""
    if preset is None or preset == AUTO_PRESET:
        return _auto_bands(raster)
    chosen = get_band_preset(preset)
    by_name = {
        _band_key(desc): i + 1 for i, desc in enumerate(raster.descriptions) if desc
    }
    keys = [_band_key(n) for n in chosen.band_names]
    if all(k in by_name for k in keys):
        return BandSelection(tuple(by_name[k] for k in keys))
    if max(chosen.default_indexes) <= raster.count:
        return BandSelection(chosen.default_indexes)
    raise BandPresetError(
        f"band preset {preset!r} needs bands {', '.join(chosen.band_names)} (positions "
        f"{chosen.default_indexes} of the standard stack), but raster {raster.name!r} has "
        f"{raster.count} band(s) with descriptions {list(raster.descriptions)}. Use preset "
        f"'auto' or one matching this product: {', '.join(known_preset_names())}"
    )


def _auto_bands(raster: Raster) -> BandSelection:
    interp = raster.colorinterp
    if all(c in interp for c in ("red", "green", "blue")):
        return BandSelection(tuple(interp.index(c) + 1 for c in ("red", "green", "blue")))
    data_bands = [i + 1 for i, c in enumerate(interp) if c != "alpha"]
    if interp[0] == "palette":
        return BandSelection((1,), palette=True)
    if len(data_bands) >= 3:
        return BandSelection(tuple(data_bands[:3]))
    return BandSelection((data_bands[0] if data_bands else 1,))
