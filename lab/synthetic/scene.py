"""Synthetic georeferenced scenes with known footprints: the value types and the scene builder.

:func:`lab.synthetic.layouts.generate_scene` draws a north-up RGB raster in a UTM CRS for one
scene class (rural, urban, industrial) and returns it with its ground truth: every object
(building, water, road, field, forest, vehicle, storage tank) with attributes and its footprint
polygon in *map coordinates* (``footprint_crs``) and in *scene pixels* (``footprint_px``, pixel
edges), plus an object-id map telling which object is visible in every pixel after occlusion.

Georeferencing: ``transform`` is the 6-tuple ``(a, b, c, d, e, f)`` in affine/rasterio order,
``x = a*col + b*row + c`` and ``y = d*col + e*row + f`` for pixel-edge coordinates
(``col, row`` = 0, 0 is the top-left corner of the top-left pixel). Scenes are north-up:
``(pixel_size_m, 0, west, 0, -pixel_size_m, north)``; :meth:`SyntheticScene.pixel_to_map`
and :meth:`SyntheticScene.map_to_pixel` work for any invertible transform.

The layouts (:mod:`lab.synthetic.layouts`) fill a :class:`SceneBuilder`; instruction samples
built from scenes live in :mod:`lab.synthetic.tasks`, whole datasets on disk in
:mod:`lab.synthetic.dataset`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from engine.types import BoxPx
from lab.synthetic.canvas import Canvas, clip_polygon, smooth_noise

__all__ = [
    "FIELD_TYPES",
    "OBJECT_KINDS",
    "ROOF_COLOURS",
    "SCENE_CLASSES",
    "TANK_COLOURS",
    "VEHICLE_COLOURS",
    "AddedObject",
    "SceneBuilder",
    "SceneEdits",
    "SceneObject",
    "SyntheticScene",
]

SCENE_CLASSES = ("rural", "urban", "industrial")
OBJECT_KINDS = ("building", "water", "road", "field", "forest", "vehicle", "storage_tank")
ROOF_COLOURS = {
    "red": (172, 58, 48),
    "orange": (214, 132, 50),
    "white": (228, 228, 222),
    "grey": (118, 120, 126),
    "blue": (56, 92, 168),
}
TANK_COLOURS = {"white": (236, 236, 232), "grey": (150, 153, 158)}
FIELD_TYPES = {
    "yellow": (206, 184, 106),
    "green": (84, 136, 52),
    "brown": (136, 100, 70),
}  # colour -> rgb
VEHICLE_COLOURS = {
    "white": (235, 235, 235),
    "black": (30, 30, 34),
    "red": (190, 40, 40),
    "blue": (40, 70, 170),
    "silver": (170, 172, 178),
}


@dataclass(frozen=True)
class SceneObject:
    """One ground-truth object. ``colour``: roof / tank / vehicle / field colour name;
    ``subtype``: lake, river, pond (water), house, apartment block, warehouse, farm building
    (building), street, country road (road), car, truck (vehicle)."""

    id: int
    kind: str
    footprint_px: tuple[tuple[float, float], ...]  # scene pixels (x, y), clipped to the scene
    footprint_crs: tuple[tuple[float, float], ...]  # map coordinates (easting, northing), metres
    colour: str | None = None
    subtype: str | None = None
    height_m: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in OBJECT_KINDS:
            raise ValueError(f"unknown object kind {self.kind!r}; known: {OBJECT_KINDS}")
        if (
            self.id <= 0
            or len(self.footprint_px) < 3
            or len(self.footprint_px) != len(self.footprint_crs)
        ):
            raise ValueError(
                f"object {self.id}: needs id > 0 and matching footprints of >= 3 points"
            )

    @cached_property
    def box_px(self) -> BoxPx:
        """Axis-aligned bounds of the pixel footprint (scene pixels)."""
        pts = np.asarray(self.footprint_px)
        (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
        return BoxPx(float(x0), float(y0), float(x1), float(y1), label=self.kind)

    @cached_property
    def area_m2(self) -> float:
        """Footprint area in square metres (shoelace on the map polygon)."""
        return _area(np.asarray(self.footprint_crs))


@dataclass(frozen=True)
class SyntheticScene:
    """A generated raster with its georeferencing and ground truth."""

    seed: int
    scene_class: str
    image: np.ndarray = field(compare=False, repr=False)  # uint8 (H, W, 3)
    object_ids_px: np.ndarray = field(compare=False, repr=False)  # int32 (H, W), 0 = no object
    objects: tuple[SceneObject, ...]
    crs: str
    transform: tuple[float, float, float, float, float, float]  # (a, b, c, d, e, f)
    pixel_size_m: float
    # mosaics (scene_class "mixed"): (class, col_off, row_off, width, height) per part
    class_windows: tuple[tuple[str, int, int, int, int], ...] = ()

    def __post_init__(self) -> None:
        mixed = self.scene_class == "mixed" and self.class_windows
        if self.scene_class not in SCENE_CLASSES and not mixed:
            raise ValueError(f"unknown scene class {self.scene_class!r}; known: {SCENE_CLASSES}")
        if any(w[0] not in SCENE_CLASSES for w in self.class_windows):
            raise ValueError(f"class_windows name unknown classes: {self.class_windows}")
        if self.image.dtype != np.uint8 or self.image.ndim != 3 or self.image.shape[2] != 3:
            raise ValueError(
                f"image must be uint8 (H, W, 3), got {self.image.dtype} {self.image.shape}"
            )
        if self.object_ids_px.shape != self.image.shape[:2]:
            raise ValueError(
                f"object id map {self.object_ids_px.shape} != image {self.image.shape[:2]}"
            )

    @property
    def size_px(self) -> tuple[int, int]:
        """(width, height)."""
        return self.image.shape[1], self.image.shape[0]

    def class_of(self, col_off: int, row_off: int, width: int, height: int) -> str | None:
        """Scene class of a pixel window; None when it straddles two parts of a mosaic."""
        if not self.class_windows:
            return self.scene_class
        for name, c0, r0, w, h in self.class_windows:
            if (
                c0 <= col_off
                and r0 <= row_off
                and col_off + width <= c0 + w
                and row_off + height <= r0 + h
            ):
                return name
        return None

    def class_at(self, x_px: float, y_px: float) -> str:
        """Scene class at a pixel position (the part of a mosaic that contains it)."""
        for name, c0, r0, w, h in self.class_windows:
            if c0 <= x_px < c0 + w and r0 <= y_px < r0 + h:
                return name
        return self.scene_class

    def pixel_to_map(self, cols, rows):
        """Pixel-edge coordinates -> map coordinates (arrays or scalars)."""
        a, b, c, d, e, f = self.transform
        cols, rows = np.asarray(cols, dtype=np.float64), np.asarray(rows, dtype=np.float64)
        return a * cols + b * rows + c, d * cols + e * rows + f

    def map_to_pixel(self, x, y):
        """Map coordinates -> pixel-edge coordinates (inverse of :meth:`pixel_to_map`)."""
        a, b, c, d, e, f = self.transform
        det = a * e - b * d
        x, y = np.asarray(x, dtype=np.float64) - c, np.asarray(y, dtype=np.float64) - f
        return (e * x - b * y) / det, (-d * x + a * y) / det

    def object(self, object_id: int) -> SceneObject:
        return self.objects[object_id - 1]  # ids are 1..N in order

    def to_geojson(self) -> dict:
        """FeatureCollection of object footprints in the scene CRS (not lon/lat: see ``crs``)."""
        features = []
        for obj in self.objects:
            ring = [list(p) for p in obj.footprint_crs] + [list(obj.footprint_crs[0])]
            props = {
                "id": obj.id,
                "kind": obj.kind,
                "colour": obj.colour,
                "subtype": obj.subtype,
                "height_m": obj.height_m,
                "area_m2": round(obj.area_m2, 2),
            }
            features.append(
                {
                    "type": "Feature",
                    "geometry": {"type": "Polygon", "coordinates": [ring]},
                    "properties": props,
                }
            )
        return {"type": "FeatureCollection", "crs": self.crs, "features": features}


@dataclass(frozen=True)
class AddedObject:
    """An object drawn on top of a finished layout (:attr:`SceneEdits.add`): a ``building`` or
    ``storage_tank`` (roof + shadow), a ``water`` pond or a ``forest``; ``poly_px`` in scene
    pixels. Used for the "before" twin of a fixed raster (things that were there and are gone)."""

    kind: str
    poly_px: tuple[tuple[float, float], ...]
    colour: str | None = None
    subtype: str | None = None
    height_m: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("building", "storage_tank", "water", "forest"):
            raise ValueError(
                f"AddedObject kind must be building, storage_tank, water or forest, "
                f"got {self.kind!r}"
            )


@dataclass(frozen=True)
class SceneEdits:
    """Changes to a scene's drawing, keyed by object id (ids of the unedited scene stay the
    same: an edited object is still registered, only painted differently):

    - ``omit``: buildings / tanks not painted (no roof, no shadow: the ground under them
      shows), ponds and forests painted as bare filled / cleared ground;
    - ``recolour``: ``(field id, colour)``: a field sown with another crop;
    - ``clear``: ``(forest id, (x0, y0, x1, y1))``: that rectangle (scene pixels) of the forest
      painted as cleared ground (the pixels stop being forest in the id map);
    - ``add``: objects drawn after everything else, with new ids after the scene's.

    The scene's random stream is not touched by the edits, so everything else (layout, textures,
    sensor noise) is pixel-identical to the unedited scene."""

    omit: frozenset[int] = frozenset()
    recolour: tuple[tuple[int, str], ...] = ()
    clear: tuple[tuple[int, tuple[float, float, float, float]], ...] = ()
    add: tuple[AddedObject, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "omit", frozenset(self.omit))
        for _, colour in self.recolour:
            if colour not in FIELD_TYPES:
                raise ValueError(
                    f"recolour needs a field colour {tuple(FIELD_TYPES)}, got {colour!r}"
                )

    @property
    def empty(self) -> bool:
        return not (self.omit or self.recolour or self.clear or self.add)


class SceneBuilder:
    """Mutable state while a scene is drawn: canvas, noise fields, planned and drawn objects."""

    def __init__(
        self,
        rng: np.random.Generator,
        size_px: int,
        pixel_size_m: float,
        background,
        edits: SceneEdits | None = None,
    ):
        self.rng, self.size, self.ps = rng, size_px, pixel_size_m
        self.edits = edits or SceneEdits()
        self.canvas = Canvas(size_px, size_px, background)
        shape = (size_px, size_px)
        self.fine = smooth_noise(rng, shape, 0.8)  # grain, per-pixel texture
        self.medium = smooth_noise(rng, shape, 1.2 / pixel_size_m)  # ~2-3 m blobs (tree crowns)
        self.coarse = smooth_noise(rng, shape, 25.0 / pixel_size_m)  # ~25 m stains and patches
        self.textures: dict[
            tuple, np.ndarray
        ] = {}  # mixed noise fields, see synthetic_draw.texture
        self.occupied = np.zeros(shape, dtype=bool)  # planned roads/water/structures
        self.records: list[dict] = []  # objects as drawn: kind, poly_px, attributes
        self.structures: list[dict] = []  # buildings and tanks, drawn together (shadows first)

    def px(self, metres: float) -> float:
        return metres / self.ps

    def next_id(self) -> int:
        """The id the next successful :meth:`add` returns."""
        return len(self.records) + 1

    def add(self, kind: str, poly_px: np.ndarray, **attrs) -> int | None:
        """Register an object (footprint clipped to the scene); returns its id or None."""
        clipped = clip_polygon(poly_px, 0, 0, self.size, self.size)
        if len(clipped) < 3 or _area(clipped) < 1.0:
            return None
        self.records.append({"kind": kind, "poly": clipped, **attrs})
        return len(self.records)

    def reserve(self, poly_px: np.ndarray, margin_px: float = 0.0) -> None:
        """Mark a polygon's (dilated bounding) area as occupied for later placement checks."""
        found = self.canvas.mask(_grow(poly_px, margin_px))
        if found is not None:
            rows, cols, m = found
            self.occupied[rows, cols] |= m

    def is_free(self, poly_px: np.ndarray, margin_px: float = 0.0) -> bool:
        inside = np.all((poly_px >= 0) & (poly_px <= self.size))
        return bool(inside) and self.canvas.free(_grow(poly_px, margin_px), self.occupied)

    def scene(
        self, seed: int, scene_class: str, crs: str, origin_crs: tuple[float, float]
    ) -> SyntheticScene:
        west, north = origin_crs
        transform = (self.ps, 0.0, west, 0.0, -self.ps, north)
        objects = []
        for i, rec in enumerate(self.records, start=1):
            poly = rec["poly"]
            x, y = self.ps * poly[:, 0] + west, north - self.ps * poly[:, 1]
            objects.append(
                SceneObject(
                    id=i,
                    kind=rec["kind"],
                    footprint_px=tuple(map(tuple, poly.tolist())),
                    footprint_crs=tuple(zip(x.tolist(), y.tolist())),
                    colour=rec.get("colour"),
                    subtype=rec.get("subtype"),
                    height_m=rec.get("height_m"),
                )
            )
        image = self.canvas.finish(self.rng)
        return SyntheticScene(
            seed,
            scene_class,
            image,
            self.canvas.ids.copy(),
            tuple(objects),
            crs,
            transform,
            self.ps,
        )


def _area(poly: np.ndarray) -> float:
    """Shoelace area of an (N, 2) polygon, shifted to its first vertex (map values are large)."""
    x, y = poly[:, 0] - poly[0, 0], poly[:, 1] - poly[0, 1]
    return float(abs(x[:-1] @ y[1:] - y[:-1] @ x[1:] + x[-1] * y[0] - y[-1] * x[0]) / 2)


def _grow(poly_px: np.ndarray, margin_px: float) -> np.ndarray:
    """Polygon pushed outwards from its centroid by ``margin_px`` (fine for convex shapes)."""
    if margin_px <= 0:
        return poly_px
    centre = poly_px.mean(axis=0)
    vec = poly_px - centre
    norm = np.linalg.norm(vec, axis=1, keepdims=True) + 1e-9
    return poly_px + vec / norm * margin_px * np.sqrt(2)
