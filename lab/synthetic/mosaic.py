"""Mosaics of synthetic scenes: one large georeferenced raster with several scene classes.

The demo raster should show rural, urban and industrial areas side by side, so that drawing a
region in different places gives different answers. :func:`generate_mosaic` generates one
scene per cell of a layout (each with its own seed), pastes them into one image, renumbers the
objects and recomputes their map footprints with the mosaic's transform. The result is a
:class:`SyntheticScene` with ``scene_class="mixed"`` whose ``class_windows`` say which class
each part is; :func:`lab.synthetic.tasks.make_samples` skips crops across a seam.
"""

from __future__ import annotations

import numpy as np

from lab.synthetic.layouts import generate_scene
from lab.synthetic.scene import SceneEdits, SceneObject, SyntheticScene

__all__ = ["DEFAULT_LAYOUT", "generate_mosaic"]

DEFAULT_LAYOUT = (("rural", "urban"), ("industrial", "rural"))


def _shift(obj: SceneObject, new_id: int, dx: float, dy: float, transform) -> SceneObject:
    a, b, c, d, e, f = transform
    px = np.asarray(obj.footprint_px) + (dx, dy)
    x, y = a * px[:, 0] + b * px[:, 1] + c, d * px[:, 0] + e * px[:, 1] + f
    return SceneObject(
        id=new_id,
        kind=obj.kind,
        footprint_px=tuple(map(tuple, px.tolist())),
        footprint_crs=tuple(zip(x.tolist(), y.tolist())),
        colour=obj.colour,
        subtype=obj.subtype,
        height_m=obj.height_m,
    )


def generate_mosaic(
    seed: int,
    layout: tuple[tuple[str, ...], ...] = DEFAULT_LAYOUT,
    tile_px: int = 1024,
    pixel_size_m: float = 0.5,
    crs: str = "EPSG:32633",
    edits: dict[tuple[int, int], SceneEdits] | None = None,
) -> SyntheticScene:
    """A ``rows x cols`` mosaic of ``tile_px`` scenes (classes from ``layout``), north-up.

    Cell ``(r, c)`` is ``generate_scene(seed * 100 + r * cols + c, tile_px, layout[r][c])``;
    the mosaic's top-left corner is the first cell's map origin. ``edits`` draws cells with
    :class:`~lab.synthetic.scene.SceneEdits` (the demo raster's "before" twin,
    :func:`lab.synthetic.change.demo_twin_edits`).
    """
    edits = edits or {}
    rows, cols = len(layout), len(layout[0])
    if rows == 0 or any(len(row) != cols for row in layout):
        raise ValueError(f"layout must be a non-empty rectangle of class names, got {layout}")
    tiles = [
        [
            generate_scene(
                seed * 100 + r * cols + c,
                tile_px,
                layout[r][c],
                pixel_size_m,
                crs,
                edits=edits.get((r, c)),
            )
            for c in range(cols)
        ]
        for r in range(rows)
    ]
    transform = tiles[0][0].transform
    image = np.concatenate([np.concatenate([t.image for t in row], axis=1) for row in tiles])
    ids = np.zeros((rows * tile_px, cols * tile_px), dtype=np.int32)
    objects: list[SceneObject] = []
    windows = []
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            offset = len(objects)
            window = (slice(r * tile_px, (r + 1) * tile_px), slice(c * tile_px, (c + 1) * tile_px))
            ids[window] = np.where(tile.object_ids_px > 0, tile.object_ids_px + offset, 0)
            objects.extend(
                _shift(o, o.id + offset, c * tile_px, r * tile_px, transform) for o in tile.objects
            )
            windows.append((layout[r][c], c * tile_px, r * tile_px, tile_px, tile_px))
    return SyntheticScene(
        seed,
        "mixed",
        np.ascontiguousarray(image),
        ids,
        tuple(objects),
        crs,
        transform,
        pixel_size_m,
        tuple(windows),
    )
