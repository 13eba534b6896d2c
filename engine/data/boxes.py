"""Box geometry for datasets: pixel boxes, oriented boxes and the 0-1000 integer grid.

The canonical box of a :class:`~engine.data.instructions.Sample` is an
:class:`engine.types.BoxPx` in *image pixels* (floats, x right, y down, origin at the top-left
pixel edge) together with the image size. An oriented box is a ``BoxPx`` whose ``angle_deg`` is
set: the rectangle ``(x1-x0) x (y1-y0)`` centred on the box centre, rotated counter-clockwise
*as seen on screen* (from +x towards -y), exactly as ``engine.types`` defines it.

The trained adapter reads and writes boxes as integers on a 0-1000 grid relative to the image
width and height (:class:`GridBox`). Converting an *oriented* box to the grid scales its centre
and side lengths per axis and keeps the angle, which is exact for square images only (the usual
case for model crops).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine.types import BoxPx

__all__ = [
    "GRID_SIZE",
    "GridBox",
    "aabb_px",
    "box_corners_px",
    "box_to_grid",
    "grid_to_box",
    "min_area_box_px",
    "oriented_box_px",
]

GRID_SIZE = 1000  # boxes on the adapter's grid are integers in [0, GRID_SIZE]


@dataclass(frozen=True)
class GridBox:
    """A box on the 0-1000 grid (integers), optionally oriented (``angle_deg``, integer degrees)."""

    x0: int
    y0: int
    x1: int
    y1: int
    angle_deg: int | None = None

    def __post_init__(self) -> None:
        coords = (self.x0, self.y0, self.x1, self.y1)
        if not all(isinstance(c, int) and 0 <= c <= GRID_SIZE for c in coords):
            raise ValueError(
                f"GridBox coordinates must be integers in [0, {GRID_SIZE}], got {coords}"
            )
        if not (self.x0 <= self.x1 and self.y0 <= self.y1):
            raise ValueError(f"GridBox needs x0 <= x1 and y0 <= y1, got {coords}")

    def text(self) -> str:
        """``"[x0, y0, x1, y1]"`` or ``"[x0, y0, x1, y1, angle]"`` (the dataset answer form)."""
        values = [self.x0, self.y0, self.x1, self.y1]
        if self.angle_deg is not None:
            values.append(self.angle_deg)
        return "[" + ", ".join(str(v) for v in values) + "]"


def _check_size(image_size_px: tuple[int, int]) -> tuple[int, int]:
    width, height = image_size_px
    if not (width > 0 and height > 0):
        raise ValueError(f"image size must be positive (width, height), got {image_size_px}")
    return int(width), int(height)


def _to_grid(value: float, extent: int) -> int:
    return int(min(GRID_SIZE, max(0, round(value / extent * GRID_SIZE))))


def box_to_grid(box_px: BoxPx, image_size_px: tuple[int, int]) -> GridBox:
    """Pixel box -> 0-1000 grid (clamped); the angle is rounded to whole degrees."""
    width, height = _check_size(image_size_px)
    angle = None if box_px.angle_deg is None else round(box_px.angle_deg)
    return GridBox(
        _to_grid(box_px.x0, width),
        _to_grid(box_px.y0, height),
        _to_grid(box_px.x1, width),
        _to_grid(box_px.y1, height),
        angle,
    )


def grid_to_box(grid: GridBox, image_size_px: tuple[int, int], label: str | None = None) -> BoxPx:
    """0-1000 grid -> pixel box. Degenerate grid boxes (x0 == x1) get a width of one grid step."""
    width, height = _check_size(image_size_px)
    x0, x1 = _widen(grid.x0, grid.x1)
    y0, y1 = _widen(grid.y0, grid.y1)
    angle = None if grid.angle_deg is None else float(grid.angle_deg)
    return BoxPx(
        x0 * width / GRID_SIZE,
        y0 * height / GRID_SIZE,
        x1 * width / GRID_SIZE,
        y1 * height / GRID_SIZE,
        label=label,
        angle_deg=angle,
    )


def _widen(lo: int, hi: int) -> tuple[int, int]:
    """A zero-width grid interval becomes one grid step wide, staying inside [0, GRID_SIZE]."""
    if lo < hi:
        return lo, hi
    return (lo, lo + 1) if lo < GRID_SIZE else (lo - 1, lo)


def box_corners_px(box_px: BoxPx) -> np.ndarray:
    """Corners of a (possibly oriented) box, float64 (4, 2) as (x, y), in drawing order."""
    cx, cy = (box_px.x0 + box_px.x1) / 2, (box_px.y0 + box_px.y1) / 2
    half_w, half_h = (box_px.x1 - box_px.x0) / 2, (box_px.y1 - box_px.y0) / 2
    theta = math.radians(box_px.angle_deg or 0.0)
    # Counter-clockwise on screen with y down: +x turns towards -y.
    u = np.array([math.cos(theta), -math.sin(theta)])  # the box's own +x axis
    v = np.array([math.sin(theta), math.cos(theta)])  # the box's own +y axis (down)
    signs = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)
    return np.array([cx, cy]) + signs[:, :1] * half_w * u + signs[:, 1:] * half_h * v


def aabb_px(box_px: BoxPx) -> BoxPx:
    """Axis-aligned bounding box of a (possibly oriented) box; label and score are kept."""
    if not box_px.angle_deg:
        return BoxPx(*box_px.xyxy, label=box_px.label, score=box_px.score)
    corners = box_corners_px(box_px)
    (x0, y0), (x1, y1) = corners.min(axis=0), corners.max(axis=0)
    return BoxPx(float(x0), float(y0), float(x1), float(y1), label=box_px.label, score=box_px.score)


def oriented_box_px(
    cx: float, cy: float, width: float, height: float, angle_deg: float, label: str | None = None
) -> BoxPx:
    """An oriented ``BoxPx`` from centre, side lengths (pixels) and on-screen CCW angle."""
    return BoxPx(
        cx - width / 2,
        cy - height / 2,
        cx + width / 2,
        cy + height / 2,
        label=label,
        angle_deg=angle_deg,
    )


def min_area_box_px(points_px: np.ndarray, label: str | None = None) -> BoxPx:
    """Minimum-area rectangle around points (N, 2) as an oriented ``BoxPx``.

    The angle is normalised to [-45, 45) degrees (the side nearest to +x is the width), so an
    axis-aligned rectangle gets angle 0 and its natural width and height.
    """
    pts = np.asarray(points_px, dtype=np.float64).reshape(-1, 2)
    if len(pts) < 3 or not np.all(np.isfinite(pts)):
        raise ValueError(f"need at least 3 finite points for a rectangle, got {pts.tolist()}")
    best = None
    # Every hull edge direction is among the pairwise directions; try them all (N is tiny).
    for i in range(len(pts)):
        for j in range(i + 1, len(pts)):
            dx, dy = pts[j] - pts[i]
            if dx == 0 and dy == 0:
                continue
            angle = math.degrees(math.atan2(-dy, dx))  # on-screen CCW angle of this direction
            angle = (angle + 45.0) % 90.0 - 45.0  # a rectangle repeats every 90 degrees
            rect = _rect_at_angle(pts, angle)
            if best is None or rect[2] * rect[3] < best[2] * best[3] - 1e-9:
                best = rect
    if best is None:
        raise ValueError(f"points are all identical: {pts.tolist()}")
    cx, cy, width, height, angle = best
    return oriented_box_px(cx, cy, width, height, angle, label=label)


def _rect_at_angle(pts: np.ndarray, angle_deg: float) -> tuple[float, float, float, float, float]:
    """Bounding rectangle of ``pts`` in a frame rotated by ``angle_deg``: (cx, cy, w, h, angle)."""
    theta = math.radians(angle_deg)
    u = np.array([math.cos(theta), -math.sin(theta)])
    v = np.array([math.sin(theta), math.cos(theta)])
    pu, pv = pts @ u, pts @ v
    (u0, u1), (v0, v1) = (pu.min(), pu.max()), (pv.min(), pv.max())
    centre = u * (u0 + u1) / 2 + v * (v0 + v1) / 2
    return float(centre[0]), float(centre[1]), float(u1 - u0), float(v1 - v0), float(angle_deg)
