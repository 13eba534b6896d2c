"""The "before" twin of a mosaic: the same raster at an earlier date, with its change truth.

The demo raster (:func:`lab.synthetic.mosaic.generate_mosaic`) is the *after* image and stays as
it is; :func:`demo_twin_edits` plans, per cell, the :class:`~lab.synthetic.scene.SceneEdits`
that draw the earlier date:

- buildings and storage tanks of the after image left out (they are ``new``), a few clustered
  so that the change reads as "4 new buildings in the north-east";
- buildings, a storage tank, a pond and a wood drawn into the before image on open ground
  (``removed`` in the after: demolished, taken down, filled, cleared);
- fields sown with another crop (``changed``: re-sown).

Everything else is pixel-identical (the edits leave the scene's random stream alone). The
changes come back as :class:`TwinChange` with their footprint in mosaic pixels;
:func:`twin_truth_geojson` writes them as lon/lat polygons. Deterministic per seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lab.synthetic.canvas import circle, polygon_mask, rectangle
from lab.synthetic.change import GROUND_PHRASES
from lab.synthetic.draw import blob
from lab.synthetic.layouts import generate_scene
from lab.synthetic.mosaic import DEFAULT_LAYOUT
from lab.synthetic.scene import FIELD_TYPES, AddedObject, SceneEdits, SyntheticScene

__all__ = ["TwinChange", "demo_twin_edits", "twin_truth_geojson"]


@dataclass(frozen=True)
class TwinChange:
    """One change between the twin (before) and the mosaic (after): footprint in mosaic pixels."""

    kind: str
    status: str
    poly_px: tuple[tuple[float, float], ...]
    cell: tuple[int, int]

    @property
    def label(self) -> str:
        return GROUND_PHRASES[self.kind, self.status]


# what each scene class gets: counts of (new buildings, new tanks, demolished buildings,
# removed tanks, filled ponds, cleared woods, re-sown fields)
PLAN = {
    "urban": {"new_building": 4, "demolished": 2, "pond": 1},
    "industrial": {"new_tank": 2, "new_building": 1, "removed_tank": 1},
    "rural": {"new_building": 1, "field": 2, "pond": 1, "forest": 1},
}


def _blocked(scene: SyntheticScene, grow_px: int) -> np.ndarray:
    """Pixels of anything but fields and forests, grown by ``grow_px`` (placement mask)."""
    ids = [o.id for o in scene.objects if o.kind not in ("field", "forest")]
    blocked = np.isin(scene.object_ids_px, ids)
    out = blocked.copy()
    step = max(1, grow_px // 3)
    for dy in range(-grow_px, grow_px + 1, step):
        for dx in range(-grow_px, grow_px + 1, step):
            out |= np.roll(blocked, (dy, dx), axis=(0, 1))
    return out


def _place(rng, blocked: np.ndarray, make, margin: float, tries: int = 200):
    """A polygon from ``make(cx, cy)`` whose pixels are all free; marks them taken."""
    size = blocked.shape[0]
    for _ in range(tries):
        cx, cy = rng.uniform(margin, size - margin, 2)
        poly = make(cx, cy)
        found = polygon_mask(poly, *blocked.shape)
        if found is None:
            continue
        rows, cols, m = found
        if not (blocked[rows, cols] & m).any():
            grown = polygon_mask(_grown(poly, 12.0), *blocked.shape)
            if grown is not None:
                r2, c2, m2 = grown
                blocked[r2, c2] |= m2
            return poly
    return None


def _grown(poly: np.ndarray, by: float) -> np.ndarray:
    centre = poly.mean(axis=0)
    vec = poly - centre
    return poly + vec / (np.linalg.norm(vec, axis=1, keepdims=True) + 1e-9) * by


def _cluster(scene: SyntheticScene, kind: str, n: int, rng, taken: set[int]) -> list:
    """``n`` whole objects of ``kind`` near each other (an anchor and its nearest neighbours)."""
    size = scene.size_px[0]
    cands = [
        o
        for o in scene.objects
        if o.kind == kind
        and o.id not in taken
        and o.box_px.x0 > 4
        and o.box_px.y0 > 4
        and o.box_px.x1 < size - 4
        and o.box_px.y1 < size - 4
    ]
    if not cands:
        return []
    anchor = cands[int(rng.integers(len(cands)))]
    centre = np.array(anchor.box_px.xyxy).reshape(2, 2).mean(axis=0)
    cands.sort(key=lambda o: np.linalg.norm(np.array(o.box_px.xyxy).reshape(2, 2).mean(0) - centre))
    return cands[:n]


def _cell_edits(
    scene: SyntheticScene, cell: tuple[int, int], offset: tuple[float, float], rng
) -> tuple[SceneEdits, list[TwinChange]]:
    plan = PLAN[scene.scene_class]
    ps = scene.pixel_size_m
    changes: list[TwinChange] = []
    omit: set[int] = set()
    recolour: list[tuple[int, str]] = []
    add: list[AddedObject] = []

    def record(kind: str, status: str, poly) -> None:
        pts = tuple((float(x) + offset[0], float(y) + offset[1]) for x, y in np.asarray(poly))
        changes.append(TwinChange(kind, status, pts, cell))

    for kind, key in (("building", "new_building"), ("storage_tank", "new_tank")):
        for obj in _cluster(scene, kind, plan.get(key, 0), rng, omit):
            omit.add(obj.id)
            record(kind, "new", obj.footprint_px)
    fields = [o for o in scene.objects if o.kind == "field" and o.area_m2 > 1500]
    for i in rng.permutation(len(fields))[: plan.get("field", 0)]:
        field = fields[int(i)]
        colour = str(rng.choice([c for c in FIELD_TYPES if c != field.colour]))
        recolour.append((field.id, colour))
        record("field", "changed", field.footprint_px)
    blocked = _blocked(scene, 8)
    for _ in range(plan.get("demolished", 0)):
        poly = _place(
            rng,
            blocked,
            lambda x, y: rectangle(x, y, rng.uniform(10, 16) / ps, rng.uniform(9, 12) / ps, 0.0),
            20 / ps,
        )
        if poly is not None:
            add.append(
                AddedObject(
                    "building",
                    tuple(map(tuple, poly)),
                    str(rng.choice(["red", "orange", "grey"])),
                    "house",
                    float(rng.uniform(6, 9)),
                )
            )
            record("building", "removed", poly)
    for _ in range(plan.get("removed_tank", 0)):
        poly = _place(rng, blocked, lambda x, y: circle(x, y, rng.uniform(8, 12) / ps), 20 / ps)
        if poly is not None:
            add.append(AddedObject("storage_tank", tuple(map(tuple, poly)), "white", None, 12.0))
            record("storage_tank", "removed", poly)
    for _ in range(plan.get("pond", 0)):
        poly = _place(rng, blocked, lambda x, y: blob(rng, x, y, rng.uniform(9, 14) / ps), 40 / ps)
        if poly is not None:
            add.append(AddedObject("water", tuple(map(tuple, poly)), subtype="pond"))
            record("water", "removed", poly)
    for _ in range(plan.get("forest", 0)):
        poly = _place(rng, blocked, lambda x, y: blob(rng, x, y, rng.uniform(25, 35) / ps), 80 / ps)
        if poly is not None:
            add.append(AddedObject("forest", tuple(map(tuple, poly))))
            record("forest", "removed", poly)
    return SceneEdits(omit=frozenset(omit), recolour=tuple(recolour), add=tuple(add)), changes


def demo_twin_edits(
    seed: int,
    layout: tuple[tuple[str, ...], ...] = DEFAULT_LAYOUT,
    tile_px: int = 1024,
    pixel_size_m: float = 0.5,
    crs: str = "EPSG:32633",
) -> tuple[dict[tuple[int, int], SceneEdits], list[TwinChange]]:
    """Per-cell edits that draw the before twin of ``generate_mosaic(seed, layout, ...)`` and
    the changes (before -> after) they make, footprints in mosaic pixels."""
    edits, changes = {}, []
    cols = len(layout[0])
    for r, row in enumerate(layout):
        for c, cls in enumerate(row):
            scene = generate_scene(seed * 100 + r * cols + c, tile_px, cls, pixel_size_m, crs)
            rng = np.random.default_rng([seed, r, c, 0xBEF0])
            cell_edits, cell_changes = _cell_edits(scene, (r, c), (c * tile_px, r * tile_px), rng)
            edits[(r, c)] = cell_edits
            changes.extend(cell_changes)
    return edits, changes


def twin_truth_geojson(
    changes: list[TwinChange], transform: tuple[float, ...], crs: str, before: str, after: str
) -> dict:
    """The changes as a lon/lat (EPSG:4326) FeatureCollection: ``kind``, ``status`` (new /
    removed / changed), ``label`` ("new building", ...), the cell, and both raster names."""
    from pyproj import Transformer

    to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    a, b, c, d, e, f = transform
    features = []
    for i, ch in enumerate(changes, start=1):
        pts = np.asarray(ch.poly_px, dtype=np.float64)
        x, y = a * pts[:, 0] + b * pts[:, 1] + c, d * pts[:, 0] + e * pts[:, 1] + f
        lon, lat = to_lonlat.transform(x, y)
        ring = [[round(float(p), 8), round(float(q), 8)] for p, q in zip(lon, lat)]
        ring.append(ring[0])
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {
                    "id": i,
                    "kind": ch.kind,
                    "status": ch.status,
                    "label": ch.label,
                    "cell": list(ch.cell),
                },
            }
        )
    return {
        "type": "FeatureCollection",
        "properties": {"before": before, "after": after},
        "features": features,
    }
