"""Scene layouts for the synthetic generator: rural, urban and industrial.

Each layout plans geometry in metres (converted to pixels), reserves space so structures do not
overlap roads, water or each other, and paints in z-order: ground cover, water, roads, shadows,
roofs and tanks, vehicles. The classes are kept visually distinct on purpose (the demo model
must learn them from small crops): rural = textured crop parcels, forest and a few farm
buildings on meadow; urban = a dense street grid on grey pavement with many small coloured
roofs; industrial = beige concrete, large flat-roofed warehouses and round storage tanks.

:func:`generate_scene` picks the layout of a scene class (:data:`LAYOUTS`) and returns the
finished :class:`~lab.synthetic.scene.SyntheticScene`.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import numpy as np

from lab.synthetic.canvas import rectangle
from lab.synthetic.draw import (
    blob,
    building,
    draw_additions,
    draw_field,
    draw_forest,
    draw_road,
    draw_structures,
    draw_trees,
    draw_vehicle,
    draw_water,
    paint_ground,
    place_lake,
    river,
    road_polygon,
    tank,
    texture,
    vehicles_on_road,
    weighted,
)
from lab.synthetic.scene import (
    FIELD_TYPES,
    SCENE_CLASSES,
    SceneBuilder,
    SceneEdits,
    SyntheticScene,
)

__all__ = ["LAYOUTS", "generate_scene", "industrial", "rural", "urban"]

URBAN_LAWN = (112, 136, 86)
HOUSE_ROOFS = {"red": 3.0, "orange": 2.0, "grey": 2.0, "white": 1.0, "blue": 1.0}
FLAT_ROOFS = {"white": 3.0, "grey": 3.0, "blue": 2.0, "red": 1.0}


def _grid_lines(b: SceneBuilder, spacing_m: tuple[float, float]) -> list[float]:
    """Positions (pixels) of parallel streets covering the scene with a random offset."""
    spacing = b.px(b.rng.uniform(*spacing_m))
    start = b.rng.uniform(-spacing, 0.0)
    return list(np.arange(start, b.size + spacing, spacing))


def _blocks(xs: list[float], ys: list[float], inset: float):
    """Rectangles between consecutive street centre lines, shrunk by ``inset`` on every side."""
    for x0, x1 in pairwise(xs):
        for y0, y1 in pairwise(ys):
            if x1 - x0 > 2 * inset + 4 and y1 - y0 > 2 * inset + 4:
                yield x0 + inset, y0 + inset, x1 - inset, y1 - inset


# ------------------------------------------------------------------ rural


def _parcels(b: SceneBuilder, rect, out: list) -> None:
    """Guillotine split of the scene into crop parcels of 50-170 m."""
    x0, y0, x1, y1 = rect
    limit = b.px(b.rng.uniform(50, 170))
    if max(x1 - x0, y1 - y0) <= limit:
        out.append(rect)
        return
    f = b.rng.uniform(0.35, 0.65)
    if x1 - x0 >= y1 - y0:
        xm = x0 + f * (x1 - x0)
        _parcels(b, (x0, y0, xm, y1), out), _parcels(b, (xm, y0, x1, y1), out)
    else:
        ym = y0 + f * (y1 - y0)
        _parcels(b, (x0, y0, x1, ym), out), _parcels(b, (x0, ym, x1, y1), out)


def _farm(b: SceneBuilder, road) -> None:
    """A cluster of 1-4 farm buildings beside a road, aligned with it."""
    cx, cy, angle, width = road
    u = np.array([np.cos(np.radians(angle)), -np.sin(np.radians(angle))])
    v = np.array([-u[1], u[0]]) * (1 if b.rng.random() < 0.5 else -1)
    p = (
        np.array([cx, cy])
        + b.rng.uniform(-0.4, 0.4) * b.size * u
        + v * (width / 2 + b.px(b.rng.uniform(10, 20)))
    )
    for _ in range(int(b.rng.integers(1, 5))):
        w, d = b.px(b.rng.uniform(14, 32)), b.px(b.rng.uniform(9, 15))
        q = p + u * b.rng.uniform(-1.5, 1.5) * w + v * b.rng.uniform(0, 2.0) * d
        poly = rectangle(q[0], q[1], w, d, angle + b.rng.uniform(-3, 3))
        building(
            b,
            poly,
            weighted(b.rng, HOUSE_ROOFS),
            b.rng.uniform(6, 10),
            "farm building",
            "gable",
            3.0,
        )


def _rural_roads(b: SceneBuilder) -> list[tuple[float, float, float, float]]:
    """One road west-east and, half the time, one north-south: (cx, cy, angle, width) pixels."""
    rng, size = b.rng, b.size
    roads = [
        (
            rng.uniform(0.2, 0.8) * size,
            rng.uniform(0.2, 0.8) * size,
            rng.uniform(-12, 12),
            b.px(rng.uniform(5, 7)),
        )
    ]
    if rng.random() < 0.5:
        roads.append(
            (
                rng.uniform(0.2, 0.8) * size,
                size / 2,
                90 + rng.uniform(-12, 12),
                b.px(rng.uniform(4, 6)),
            )
        )
    for cx, cy, angle, width in roads:
        b.reserve(road_polygon(b, cx, cy, angle, width), b.px(2))
    return roads


def _rural_water(b: SceneBuilder) -> tuple[str, np.ndarray | None] | None:
    """A lake, a river or nothing; space reserved so buildings keep off the water."""
    rng, water = b.rng, None
    if rng.random() < 0.65:
        water = (
            ("lake", place_lake(b, 18, 40))
            if rng.random() < 0.6
            else ("river", river(b, b.px(rng.uniform(12, 22))))
        )
        if water[0] == "river":
            b.reserve(water[1], b.px(3))
    return water


def _rural_cover(b: SceneBuilder) -> None:
    """Crop parcels (some forest or meadow) over the whole scene and maybe a wood."""
    rng, size = b.rng, b.size
    parcels: list = []
    _parcels(b, (0.0, 0.0, float(size), float(size)), parcels)
    gap = b.px(1.5)
    for x0, y0, x1, y1 in parcels:
        poly = np.array(
            [[x0 + gap, y0 + gap], [x1 - gap, y0 + gap], [x1 - gap, y1 - gap], [x0 + gap, y1 - gap]]
        )
        kind = weighted(rng, {"field": 0.8, "forest": 0.12, "meadow": 0.08})
        if kind == "field":
            draw_field(
                b,
                poly,
                weighted(rng, {c: 1.0 for c in FIELD_TYPES}),
                float(rng.choice([0.0, 90.0])) + rng.uniform(-3, 3),
            )
        elif kind == "forest":
            draw_forest(b, poly)
    if rng.random() < 0.4:
        r = b.px(rng.uniform(20, 45))
        draw_forest(b, blob(rng, *rng.uniform(r, size - r, 2), r))


def rural(
    rng: np.random.Generator, size: int, ps: float, edits: SceneEdits | None = None
) -> SceneBuilder:
    b = SceneBuilder(rng, size, ps, background=(124, 150, 80), edits=edits)
    paint_ground(b, 0.03, 0.06)
    roads = _rural_roads(b)
    water = _rural_water(b)
    _rural_cover(b)
    if water is not None and water[1] is not None:
        draw_water(b, water[1], water[0])
    for cx, cy, angle, width in roads:
        subtype = "country road" if width < b.px(5.5) else "street"
        draw_road(b, road_polygon(b, cx, cy, angle, width), subtype, marks=False)
    for road in roads:
        if rng.random() < 0.8:
            _farm(b, road)
    draw_structures(b)
    for cx, cy, angle, width in roads:
        vehicles_on_road(b, road_polygon(b, cx, cy, angle, width), int(rng.integers(0, 3)))
    return b


# ------------------------------------------------------------------ urban


def _houses(b: SceneBuilder, x0: float, y0: float, x1: float, y1: float) -> None:
    """Two rows of detached houses along the block's north and south edges."""
    for top in (True, False):
        x = x0 + b.px(b.rng.uniform(1, 4))
        while True:
            w, d = b.px(b.rng.uniform(10, 17)), b.px(b.rng.uniform(9, 13))
            if x + w > x1:
                break
            setback = b.px(b.rng.uniform(1.5, 4))
            cy = y0 + setback + d / 2 if top else y1 - setback - d / 2
            poly = rectangle(x + w / 2, cy, w, d, 0.0)
            building(
                b, poly, weighted(b.rng, HOUSE_ROOFS), b.rng.uniform(6, 9), "house", "gable", 1.5
            )
            x += w + b.px(b.rng.uniform(3, 8))


def _apartments(b: SceneBuilder, x0: float, y0: float, x1: float, y1: float) -> None:
    for _ in range(int(b.rng.integers(1, 3))):
        w = min(x1 - x0 - b.px(4), b.px(b.rng.uniform(25, 50)))
        d = min(y1 - y0 - b.px(4), b.px(b.rng.uniform(12, 17)))
        if w < b.px(12) or d < b.px(8):
            return
        cx, cy = b.rng.uniform(x0 + w / 2, x1 - w / 2), b.rng.uniform(y0 + d / 2, y1 - d / 2)
        building(
            b,
            rectangle(cx, cy, w, d, 0.0),
            weighted(b.rng, FLAT_ROOFS),
            b.rng.uniform(12, 20),
            "apartment block",
            "plain",
            4.0,
        )


def urban(
    rng: np.random.Generator, size: int, ps: float, edits: SceneEdits | None = None
) -> SceneBuilder:
    b = SceneBuilder(rng, size, ps, background=(172, 170, 164), edits=edits)
    paint_ground(b, 0.03, 0.05)
    xs, ys = _grid_lines(b, (70, 100)), _grid_lines(b, (70, 100))
    width = b.px(rng.uniform(9, 12))
    streets = [(x, size / 2, 90.0) for x in xs] + [(size / 2, y, 0.0) for y in ys]
    for cx, cy, angle in streets:
        b.reserve(road_polygon(b, cx, cy, angle, width), b.px(1.5))
    water = river(b, b.px(rng.uniform(14, 24))) if rng.random() < 0.2 else None
    if water is not None:
        b.reserve(water, b.px(3))
    ponds = []
    for x0, y0, x1, y1 in _blocks(xs, ys, width / 2 + b.px(3)):
        kind = weighted(rng, {"houses": 0.6, "apartments": 0.25, "park": 0.15})
        b.canvas.paint(
            np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]),
            URBAN_LAWN,
            texture(b, 0.04, 0.05, 0.05),
            None,
        )
        if kind == "houses":
            _houses(b, x0, y0, x1, y1)
        elif kind == "apartments":
            _apartments(b, x0, y0, x1, y1)
        elif rng.random() < 0.6:
            r = b.px(rng.uniform(8, 16))
            if x1 - x0 > 3 * r and y1 - y0 > 3 * r:
                ponds.append(blob(rng, (x0 + x1) / 2, (y0 + y1) / 2, r))
                b.reserve(ponds[-1], b.px(2))
        draw_trees(b, x0, y0, x1, y1, int(rng.integers(2, 10 if kind != "park" else 30)))
    for pond in ponds:
        draw_water(b, pond, "pond")
    if water is not None:
        draw_water(b, water, "river")
    for cx, cy, angle in streets:
        draw_road(b, road_polygon(b, cx, cy, angle, width), "street", marks=True)
    draw_structures(b)
    for cx, cy, angle in streets:
        vehicles_on_road(b, road_polygon(b, cx, cy, angle, width), int(rng.integers(1, 5)))
    return b


# ------------------------------------------------------------------ industrial


def _warehouses(b: SceneBuilder, x0: float, y0: float, x1: float, y1: float, most: int = 3) -> None:
    placed = 0
    for _ in range(10):
        w = min(x1 - x0 - b.px(6), b.px(b.rng.uniform(30, 75)))
        d = min(y1 - y0 - b.px(6), b.px(b.rng.uniform(20, 40)))
        if w < b.px(15) or d < b.px(12) or placed >= most:
            return
        if b.rng.random() < 0.5:
            w, d = d, w  # long side north-south
        cx, cy = b.rng.uniform(x0 + w / 2, x1 - w / 2), b.rng.uniform(y0 + d / 2, y1 - d / 2)
        placed += building(
            b,
            rectangle(cx, cy, w, d, 0.0),
            weighted(b.rng, FLAT_ROOFS),
            b.rng.uniform(8, 14),
            "warehouse",
            "stripes",
            6.0,
        )


def _truck_park(b: SceneBuilder, x0: float, y0: float, x1: float, y1: float) -> None:
    """An asphalt lot with rows of parked trucks (vehicles, not driving)."""
    w, h = min(x1 - x0, b.px(b.rng.uniform(35, 60))), min(y1 - y0, b.px(b.rng.uniform(25, 40)))
    cx, cy = b.rng.uniform(x0 + w / 2, x1 - w / 2), b.rng.uniform(y0 + h / 2, y1 - h / 2)
    lot = rectangle(cx, cy, w, h, 0.0)
    if not b.is_free(lot, b.px(2)):
        return
    b.reserve(lot, b.px(2))
    b.canvas.paint(lot, (96, 96, 98), texture(b, 0.04, 0.0, 0.04), None)
    for x in np.arange(cx - w / 2 + b.px(3), cx + w / 2 - b.px(3), b.px(4.5)):
        if b.rng.random() < 0.6:
            draw_vehicle(
                b, rectangle(x, cy - h / 2 + b.px(6.5), b.px(2.5), b.px(10.0), 0.0), "truck"
            )


def _tank_farm(b: SceneBuilder, x0: float, y0: float, x1: float, y1: float) -> None:
    radius = b.px(b.rng.uniform(7, 13))
    step = 2 * radius + b.px(b.rng.uniform(5, 10))
    colour = weighted(b.rng, {"white": 0.7, "grey": 0.3})
    bund = (168, 150, 120)
    b.canvas.paint(
        np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]), bund, texture(b, 0.04, 0.0, 0.05), None
    )
    for cy in np.arange(y0 + step / 2, y1 - radius, step):
        for cx in np.arange(x0 + step / 2, x1 - radius, step):
            if b.rng.random() < 0.85:
                tone = (
                    colour if b.rng.random() < 0.8 else ("grey" if colour == "white" else "white")
                )
                tank(
                    b,
                    cx + b.rng.uniform(-1, 1),
                    cy + b.rng.uniform(-1, 1),
                    radius * b.rng.uniform(0.8, 1.0),
                    tone,
                    b.rng.uniform(10, 16),
                )


def industrial(
    rng: np.random.Generator, size: int, ps: float, edits: SceneEdits | None = None
) -> SceneBuilder:
    b = SceneBuilder(rng, size, ps, background=(184, 176, 160), edits=edits)
    paint_ground(b, 0.03, 0.08)
    xs, ys = _grid_lines(b, (110, 160)), _grid_lines(b, (110, 160))
    width = b.px(rng.uniform(10, 14))
    streets = [(x, size / 2, 90.0) for x in xs] + [(size / 2, y, 0.0) for y in ys]
    for cx, cy, angle in streets:
        b.reserve(road_polygon(b, cx, cy, angle, width), b.px(2))
    ponds = []
    for x0, y0, x1, y1 in _blocks(xs, ys, width / 2 + b.px(4)):
        kind = weighted(rng, {"warehouses": 0.45, "tanks": 0.35, "yard": 0.2})
        if kind == "warehouses":
            _warehouses(b, x0, y0, x1, y1)
        elif kind == "tanks":
            _tank_farm(b, x0, y0, x1, y1)
        else:
            if rng.random() < 0.5 and min(x1 - x0, y1 - y0) > b.px(40):
                w, h = b.px(rng.uniform(20, 35)), b.px(rng.uniform(15, 25))
                ponds.append(rectangle((x0 + x1) / 2, (y0 + y1) / 2, w, h, 0.0))
                b.reserve(ponds[-1], b.px(3))
            _truck_park(b, x0, y0, x1, y1)
            if rng.random() < 0.5:
                _warehouses(b, x0, y0, x1, y1, most=1)
    for pond in ponds:
        draw_water(b, pond, "pond")
    for cx, cy, angle in streets:
        draw_road(b, road_polygon(b, cx, cy, angle, width), "street", marks=True)
    draw_structures(b)
    for cx, cy, angle in streets:
        vehicles_on_road(
            b, road_polygon(b, cx, cy, angle, width), int(rng.integers(0, 3)), trucks=0.6
        )
    return b


LAYOUTS: dict[str, Callable[..., SceneBuilder]] = {
    "rural": rural,
    "urban": urban,
    "industrial": industrial,
}


def generate_scene(
    seed: int,
    size_px: int = 512,
    scene_class: str | None = None,
    pixel_size_m: float = 0.5,
    crs: str = "EPSG:32633",
    edits: SceneEdits | None = None,
) -> SyntheticScene:
    """A square scene of ``size_px`` pixels at ``pixel_size_m`` metres per pixel.

    ``edits`` (:class:`~lab.synthetic.scene.SceneEdits`) draws the same scene with objects
    omitted, fields re-sown, forest cleared or objects added (change pairs,
    :mod:`lab.synthetic.change`); everything else stays pixel-identical.

    The scene class is drawn from the seed unless given; the map origin (top-left corner) is a
    seed-dependent point of UTM zone 33N (easting 300-700 km, northing 4.6-5.6 Mm), rounded to
    whole metres. The same arguments always give the same scene.
    """
    if scene_class is not None and scene_class not in SCENE_CLASSES:
        raise ValueError(f"unknown scene class {scene_class!r}; choose one of {SCENE_CLASSES}")
    if not (64 <= size_px <= 8192) or not (0.1 <= pixel_size_m <= 5.0):
        raise ValueError(
            f"size_px must be in [64, 8192] and pixel_size_m in [0.1, 5], "
            f"got {size_px}, {pixel_size_m}"
        )
    rng = np.random.default_rng(seed)
    scene_class = scene_class or SCENE_CLASSES[int(rng.integers(len(SCENE_CLASSES)))]
    origin = (float(rng.integers(300_000, 700_000)), float(rng.integers(4_600_000, 5_600_000)))
    builder = LAYOUTS[scene_class](rng, size_px, pixel_size_m, edits)
    if builder.edits.add:
        draw_additions(builder)
    return builder.scene(seed, scene_class, crs, origin)
