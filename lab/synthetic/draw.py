"""Drawing helpers for the synthetic scene layouts: shapes, textures, roads, water, structures.

Every painter registers its ground-truth object with :meth:`SceneBuilder.add` and paints it
with that object id, so the id map records what is visible. Buildings and tanks are only
*planned* by :func:`building` / :func:`tank` and drawn together by :func:`draw_structures`:
all shadows first (north-west, sun in the south-east), then roofs, so no shadow falls on a
roof.
"""

from __future__ import annotations

import numpy as np

from lab.synthetic.canvas import circle, convex_hull, rectangle
from lab.synthetic.scene import (
    FIELD_TYPES,
    ROOF_COLOURS,
    TANK_COLOURS,
    VEHICLE_COLOURS,
    SceneBuilder,
)

__all__ = [
    "blob",
    "building",
    "draw_additions",
    "draw_field",
    "draw_forest",
    "draw_road",
    "draw_structures",
    "draw_trees",
    "draw_vehicle",
    "draw_water",
    "paint_ground",
    "pick",
    "place_lake",
    "river",
    "road_polygon",
    "tank",
    "texture",
    "vehicles_on_road",
    "weighted",
]

SHADOW_DIR = np.array([-0.6, -0.8])  # unit vector in pixels (x right, y down): north-west
SHADOW_PER_M = 0.55  # shadow length per metre of height (sun about 60 degrees high)
WATER = (40, 74, 92)
ASPHALT = (80, 81, 84)
DIRT_ROAD = (160, 138, 104)
LAWN = (98, 142, 70)
FOREST = (40, 76, 40)
TREE = (46, 88, 44)
CLEARED = (138, 116, 84)  # cleared forest: bare soil with stumps and brush
FILLED = (158, 140, 110)  # a filled pond: levelled fill


def pick(rng: np.random.Generator, options: dict) -> str:
    names = list(options)
    return names[int(rng.integers(len(names)))]


def weighted(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names, p = list(weights), np.array(list(weights.values()), dtype=np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


# ------------------------------------------------------------------ shapes


def blob(rng: np.random.Generator, cx: float, cy: float, radius: float, n: int = 48) -> np.ndarray:
    """Smooth star-shaped polygon (lakes, ponds, woods) around (cx, cy)."""
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = np.ones(n)
    for k in (2, 3, 4):
        r += rng.uniform(0.04, 0.13) * np.cos(k * a + rng.uniform(0, 2 * np.pi))
    return np.stack([cx + radius * r * np.cos(a), cy + radius * r * np.sin(a)], axis=1)


def river(b: SceneBuilder, width_px: float) -> np.ndarray:
    """A meandering band across the scene (west-east or north-south)."""
    rng, size = b.rng, b.size
    t = np.linspace(-0.1 * size, 1.1 * size, 60)
    base = rng.uniform(0.25, 0.75) * size
    off = base + rng.uniform(0.05, 0.12) * size * np.sin(
        2 * np.pi * t / rng.uniform(0.8, 1.6) / size + rng.uniform(0, 6.3)
    )
    centre = np.stack([t, off], axis=1)
    if rng.random() < 0.5:
        centre = centre[:, ::-1]
    tangent = np.gradient(centre, axis=0)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    return np.concatenate([centre + normal * width_px / 2, (centre - normal * width_px / 2)[::-1]])


def road_polygon(
    b: SceneBuilder, cx: float, cy: float, angle_deg: float, width_px: float
) -> np.ndarray:
    return rectangle(cx, cy, 3 * b.size, width_px, angle_deg)


# ------------------------------------------------------------------ painters


def texture(
    b: SceneBuilder, fine: float, medium: float = 0.0, coarse: float = 0.0, clip: float = 0.6
) -> np.ndarray:
    """Relative brightness field mixing the builder's noise scales, clipped to +-``clip``."""
    key = (fine, medium, coarse, clip)
    if key not in b.textures:
        b.textures[key] = np.clip(
            fine * b.fine + medium * b.medium + coarse * b.coarse, -clip, clip
        )
    return b.textures[key]


def paint_ground(b: SceneBuilder, fine: float, coarse: float) -> None:
    b.canvas.rgb *= (1 + texture(b, fine, 0.0, coarse))[..., None]


def draw_field(b: SceneBuilder, poly: np.ndarray, colour: str, angle_deg: float) -> None:
    colour = dict(b.edits.recolour).get(b.next_id(), colour)  # re-sown (SceneEdits)
    oid = b.add("field", poly, colour=colour)
    period = b.px(b.rng.uniform(2.5, 4.5))
    t = np.radians(angle_deg)

    def rows(rr, cc):
        return 1 + 0.1 * np.sin(2 * np.pi * (cc * np.cos(t) + rr * np.sin(t)) / period)

    b.canvas.paint(poly, FIELD_TYPES[colour], texture(b, 0.03, 0.04, 0.05), oid, shade=rows)


def draw_forest(b: SceneBuilder, poly: np.ndarray) -> None:
    oid = b.add("forest", poly)
    if oid is not None and oid in b.edits.omit:
        _paint_bare(b, poly, CLEARED, None)
        return
    b.canvas.paint(poly, FOREST, texture(b, 0.05, 0.38, 0.06, clip=0.7), oid)
    rect = dict(b.edits.clear).get(oid) if oid is not None else None
    if rect is not None:
        x0, y0, x1, y1 = rect
        _paint_bare(b, np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]), CLEARED, only_id=oid)


def draw_water(b: SceneBuilder, poly: np.ndarray, subtype: str) -> None:
    oid = b.add("water", poly, subtype=subtype)
    if oid is not None and oid in b.edits.omit:
        _paint_bare(b, poly, FILLED, None)
        return
    b.canvas.paint(poly, WATER, texture(b, 0.015, 0.0, 0.05), oid)


def _paint_bare(b: SceneBuilder, poly: np.ndarray, colour, only_id: int | None) -> None:
    """Bare ground (cleared / filled) over a polygon, no object id; with ``only_id`` only over
    that object's pixels (which then stop being that object)."""
    found = b.canvas.mask(poly)
    if found is None:
        return
    rows, cols, m = found
    ids = b.canvas.ids[rows, cols]
    if only_id is not None:
        m = m & (ids == only_id)
    factor = 1 + texture(b, 0.06, 0.2, 0.08)[rows, cols]
    window = b.canvas.rgb[rows, cols]
    window[m] = np.asarray(colour, dtype=np.float32)[None, :] * factor[m][:, None]
    ids[m] = 0


def draw_road(b: SceneBuilder, poly: np.ndarray, subtype: str, marks: bool) -> int | None:
    oid = b.add("road", poly, subtype=subtype)
    colour = ASPHALT if subtype == "street" else DIRT_ROAD
    b.canvas.paint(poly, colour, texture(b, 0.05, 0.0, 0.05), oid)
    if marks and oid is not None:
        c = poly.mean(axis=0)
        u = (poly[1] - poly[0]) / np.linalg.norm(poly[1] - poly[0])
        angle = np.degrees(np.arctan2(-u[1], u[0]))
        for s in np.arange(-1.5 * b.size, 1.5 * b.size, b.px(10.0)):
            p = c + s * u
            if not (-b.px(3) <= p[0] <= b.size + b.px(3) and -b.px(3) <= p[1] <= b.size + b.px(3)):
                continue
            b.canvas.paint(
                rectangle(p[0], p[1], b.px(3.0), max(1.0, b.px(0.4)), angle),
                (225, 225, 215),
                None,
                oid,
            )
    return oid


def draw_trees(b: SceneBuilder, x0: float, y0: float, x1: float, y1: float, n: int) -> None:
    """Single tree crowns (not ground-truth objects) inside a rectangle."""
    for _ in range(n):
        cx, cy = b.rng.uniform(x0, x1), b.rng.uniform(y0, y1)
        poly = circle(cx, cy, b.px(b.rng.uniform(2.0, 3.5)), 16)
        if b.is_free(poly):
            b.canvas.paint(poly, TREE, texture(b, 0.08, 0.25), None)


# ------------------------------------------------------------------ structures


def building(
    b: SceneBuilder,
    poly: np.ndarray,
    colour: str,
    height_m: float,
    subtype: str,
    roof: str,
    margin_m: float = 2.0,
) -> bool:
    """Plan a building if its footprint (plus margin) is free; drawn by :func:`draw_structures`."""
    if not b.is_free(poly, b.px(margin_m)):
        return False
    b.reserve(poly, b.px(margin_m))
    b.structures.append(
        {
            "kind": "building",
            "poly": poly,
            "colour": colour,
            "height_m": height_m,
            "subtype": subtype,
            "roof": roof,
        }
    )
    return True


def tank(
    b: SceneBuilder, cx: float, cy: float, radius: float, colour: str, height_m: float
) -> bool:
    poly = circle(cx, cy, radius)
    if not b.is_free(poly, b.px(1.5)):
        return False
    b.reserve(poly, b.px(1.5))
    b.structures.append(
        {
            "kind": "storage_tank",
            "poly": poly,
            "colour": colour,
            "height_m": height_m,
            "centre": (cx, cy),
            "radius": radius,
        }
    )
    return True


def _roof_shade(poly: np.ndarray, roof: str, ps: float):
    centre = poly.mean(axis=0)
    edge = poly[1] - poly[0]
    other = poly[2] - poly[1]
    long_axis = edge if np.linalg.norm(edge) >= np.linalg.norm(other) else other
    u = long_axis / np.linalg.norm(long_axis)
    v = np.array([-u[1], u[0]])
    if roof == "gable":  # two roof planes meeting at a ridge along the long axis
        return lambda rr, cc: np.where(
            (cc - centre[0]) * v[0] + (rr - centre[1]) * v[1] < 0, 1.0, 0.82
        )
    period = 6.0 / ps  # flat industrial roof with skylight bands across the long axis
    return lambda rr, cc: 1 + 0.07 * (np.sin(2 * np.pi * ((cc * u[0] + rr * u[1]) / period)) > 0.6)


def _tank_shade(centre, radius: float):
    def shade(rr, cc):
        d = np.hypot(cc - centre[0], rr - centre[1]) / radius
        ring = np.abs(d - 0.78) < 0.05
        return (1 - 0.16 * d**2) * np.where(ring, 0.86, 1.0)

    return shade


def draw_structures(b: SceneBuilder) -> None:
    """All shadows first (so no shadow darkens a roof), then roofs and tanks. Structures whose
    id is in ``b.edits.omit`` are registered but not drawn (no shadow, no roof)."""
    for s in b.structures:
        if s["kind"] == "building":
            s["oid"] = b.add(
                "building",
                s["poly"],
                colour=s["colour"],
                subtype=s["subtype"],
                height_m=s["height_m"],
            )
        else:
            s["oid"] = b.add(
                "storage_tank",
                s["poly"],
                colour=s["colour"],
                subtype="storage tank",
                height_m=s["height_m"],
            )
    drawn = [s for s in b.structures if s["oid"] is None or s["oid"] not in b.edits.omit]
    for s in drawn:
        offset = SHADOW_DIR * b.px(s["height_m"] * SHADOW_PER_M)
        b.canvas.darken(convex_hull(np.concatenate([s["poly"], s["poly"] + offset])), 0.55)
    for s in drawn:
        oid = s["oid"]
        if s["kind"] == "building":
            shade = _roof_shade(s["poly"], s["roof"], b.ps) if s["roof"] != "plain" else None
            b.canvas.paint(
                s["poly"], ROOF_COLOURS[s["colour"]], texture(b, 0.035), oid, shade=shade
            )
        else:
            b.canvas.paint(
                s["poly"],
                TANK_COLOURS[s["colour"]],
                texture(b, 0.02),
                oid,
                shade=_tank_shade(s["centre"], s["radius"]),
            )
    b.structures.clear()


def draw_additions(b: SceneBuilder) -> None:
    """Draw ``b.edits.add`` (:class:`~lab.synthetic.scene.AddedObject`) over the finished layout:
    forests and ponds first, then buildings and tanks with their shadows."""
    for obj in b.edits.add:
        poly = np.asarray(obj.poly_px, dtype=np.float64)
        if obj.kind == "forest":
            draw_forest(b, poly)
        elif obj.kind == "water":
            draw_water(b, poly, obj.subtype or "pond")
    for obj in b.edits.add:
        poly = np.asarray(obj.poly_px, dtype=np.float64)
        if obj.kind == "building":
            b.structures.append(
                {
                    "kind": "building",
                    "poly": poly,
                    "colour": obj.colour or "red",
                    "height_m": obj.height_m or 7.0,
                    "subtype": obj.subtype or "house",
                    "roof": "gable"
                    if (obj.subtype or "house") in ("house", "farm building")
                    else "plain",
                }
            )
        elif obj.kind == "storage_tank":
            centre = poly.mean(axis=0)
            radius = float(np.linalg.norm(poly - centre, axis=1).max())
            b.structures.append(
                {
                    "kind": "storage_tank",
                    "poly": poly,
                    "colour": obj.colour or "white",
                    "height_m": obj.height_m or 12.0,
                    "centre": tuple(centre),
                    "radius": radius,
                }
            )
    if b.structures:
        draw_structures(b)


def vehicles_on_road(b: SceneBuilder, road_poly: np.ndarray, n: int, trucks: float = 0.0) -> None:
    """Cars (and trucks) in the lanes of a straight road polygon."""
    c = road_poly.mean(axis=0)
    u = (road_poly[1] - road_poly[0]) / np.linalg.norm(road_poly[1] - road_poly[0])
    v = np.array([-u[1], u[0]])
    lane = np.linalg.norm(road_poly[2] - road_poly[1]) / 4
    angle = np.degrees(np.arctan2(-u[1], u[0]))
    placed: list[np.ndarray] = []
    for _ in range(4 * n):
        if len(placed) >= n:
            break
        p = (
            c
            + b.rng.uniform(-0.75, 0.75) * b.size * u
            + (lane if b.rng.random() < 0.5 else -lane) * v
        )
        truck = b.rng.random() < trucks
        length, width = (b.px(10.0), b.px(2.5)) if truck else (b.px(4.6), b.px(1.9))
        poly = rectangle(p[0], p[1], length, width, angle)
        if not np.all((poly >= 0) & (poly <= b.size)) or any(
            np.linalg.norm(p - q) < b.px(12) for q in placed
        ):
            continue
        draw_vehicle(b, poly, "truck" if truck else "car")
        placed.append(p)


def draw_vehicle(b: SceneBuilder, poly: np.ndarray, subtype: str) -> None:
    """A car or truck of a random colour."""
    colour = pick(b.rng, VEHICLE_COLOURS)
    oid = b.add("vehicle", poly, colour=colour, subtype=subtype)
    b.canvas.paint(poly, VEHICLE_COLOURS[colour], texture(b, 0.03), oid)


def place_lake(
    b: SceneBuilder, r_min_m: float, r_max_m: float, subtype: str = "lake"
) -> np.ndarray | None:
    for _ in range(40):
        r = b.px(b.rng.uniform(r_min_m, r_max_m))
        cx, cy = b.rng.uniform(1.2 * r, b.size - 1.2 * r, 2)
        poly = blob(b.rng, cx, cy, r)
        if b.is_free(poly, b.px(4.0)):
            b.reserve(poly, b.px(4.0))
            return poly
    return None
