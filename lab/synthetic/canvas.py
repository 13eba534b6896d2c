"""Pixel drawing for the synthetic scene generator: polygon rasterisation, noise, shadows.

Polygons are float (N, 2) arrays of ``(x, y)`` in scene pixels (pixel edges, origin top-left);
a pixel belongs to a polygon when its *centre* ``(col + 0.5, row + 0.5)`` is inside (even-odd
rule), so ground-truth footprints and drawn pixels agree exactly. :class:`Canvas` keeps the RGB
image (float32, 0-255) and an object-id map (int32, 0 = no object) that records which object
is visible in every pixel after occlusion.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "Canvas",
    "circle",
    "clip_polygon",
    "convex_hull",
    "gaussian_blur",
    "polygon_mask",
    "rectangle",
    "smooth_noise",
]


def polygon_mask(
    poly_px: np.ndarray, height: int, width: int
) -> tuple[slice, slice, np.ndarray] | None:
    """Mask of pixels whose centres lie inside ``poly_px``, over the polygon's bounding window.

    Returns ``(rows, cols, mask)`` with ``mask`` bool of the window shape, or ``None`` when the
    polygon covers no pixel centre of the image. Scanline crossing parity, vectorised.
    """
    poly = np.asarray(poly_px, dtype=np.float64)
    if _is_axis_rectangle(poly):
        return _rectangle_mask(poly, height, width)
    r0 = max(0, int(np.floor(poly[:, 1].min() - 0.5)))
    r1 = min(height, int(np.ceil(poly[:, 1].max() + 0.5)))
    c0 = max(0, int(np.floor(poly[:, 0].min() - 0.5)))
    c1 = min(width, int(np.ceil(poly[:, 0].max() + 0.5)))
    if r0 >= r1 or c0 >= c1:
        return None
    y = np.arange(r0, r1, dtype=np.float64)[:, None] + 0.5  # (R, 1) row centres
    (x1, y1), (x2, y2) = poly.T, np.concatenate([poly[1:], poly[:1]]).T
    crosses = (y1 > y) != (y2 > y)  # (R, E) edge spans this row centre
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = x1 + (y - y1) * (x2 - x1) / (y2 - y1)  # (R, E) crossing abscissa
    # A pixel centre c + 0.5 is inside when an odd number of crossings lie at or left of it:
    # toggle at column ceil(x - 0.5) and take the running parity along the row.
    x_at = np.where(crosses, x_at, 0.0)
    cols = np.clip(np.ceil(x_at - 0.5) - c0, 0, c1 - c0).astype(np.int64)
    toggles = np.zeros((r1 - r0, c1 - c0 + 1), dtype=np.int32)
    rows_idx = np.broadcast_to(np.arange(r1 - r0)[:, None], crosses.shape)
    np.add.at(toggles, (rows_idx[crosses], cols[crosses]), 1)
    mask = (np.cumsum(toggles, axis=1)[:, :-1] % 2).astype(bool)
    if not mask.any():
        return None
    return slice(r0, r1), slice(c0, c1), mask


def _is_axis_rectangle(poly: np.ndarray) -> bool:
    if len(poly) != 4:
        return False
    d = np.concatenate([poly[1:], poly[:1]]) - poly
    horizontal, vertical = d[:, 1] == 0, d[:, 0] == 0
    return bool(
        (horizontal[0::2].all() and vertical[1::2].all())
        or (vertical[0::2].all() and horizontal[1::2].all())
    )


def _rectangle_mask(poly: np.ndarray, height: int, width: int):
    """Same centre rule, no scanlines: rows ceil(y0 - .5) <= r < ceil(y1 - .5), likewise cols."""
    (x0, y0), (x1, y1) = poly.min(axis=0), poly.max(axis=0)
    r0, r1 = max(0, int(np.ceil(y0 - 0.5))), min(height, int(np.ceil(y1 - 0.5)))
    c0, c1 = max(0, int(np.ceil(x0 - 0.5))), min(width, int(np.ceil(x1 - 0.5)))
    if r0 >= r1 or c0 >= c1:
        return None
    return slice(r0, r1), slice(c0, c1), np.ones((r1 - r0, c1 - c0), dtype=bool)


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Convex hull (monotone chain) of (N, 2) points, counter-clockwise in (x, y)."""
    pts = sorted(set(map(tuple, np.asarray(points, dtype=np.float64).round(6))))
    if len(pts) < 3:
        return np.array(pts)

    def half(seq):
        out: list = []
        for p in seq:
            while (
                len(out) >= 2
                and (
                    (out[-1][0] - out[-2][0]) * (p[1] - out[-2][1])
                    - (out[-1][1] - out[-2][1]) * (p[0] - out[-2][0])
                )
                <= 0
            ):
                out.pop()
            out.append(p)
        return out

    lower, upper = half(pts), half(reversed(pts))
    return np.array(lower[:-1] + upper[:-1])


def clip_polygon(poly_px: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Sutherland-Hodgman clip of a polygon to the rectangle [x0, x1] x [y0, y1]; may be empty."""
    out = [tuple(p) for p in np.asarray(poly_px, dtype=np.float64)]
    for axis, bound, keep_below in ((0, x0, False), (0, x1, True), (1, y0, False), (1, y1, True)):
        src, out = out, []
        for i, cur in enumerate(src):
            prev = src[i - 1]
            cur_in, prev_in = (
                _inside(cur, axis, bound, keep_below),
                _inside(prev, axis, bound, keep_below),
            )
            if cur_in != prev_in:
                out.append(_cut(prev, cur, axis, bound))
            if cur_in:
                out.append(cur)
    return np.array(out, dtype=np.float64).reshape(-1, 2)


def _inside(p, axis: int, bound: float, keep_below: bool) -> bool:
    return p[axis] <= bound if keep_below else p[axis] >= bound


def _cut(p, q, axis: int, bound: float) -> tuple[float, float]:
    t = (bound - p[axis]) / (q[axis] - p[axis])
    point = [p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])]
    point[axis] = bound
    return tuple(point)


def rectangle(
    cx: float, cy: float, width: float, height: float, angle_deg: float = 0.0
) -> np.ndarray:
    """Corners (4, 2) of a rectangle centred at (cx, cy), rotated counter-clockwise on screen."""
    t = np.radians(angle_deg)
    u, v = np.array([np.cos(t), -np.sin(t)]), np.array([np.sin(t), np.cos(t)])
    signs = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)
    return np.array([cx, cy]) + signs[:, :1] * (width / 2) * u + signs[:, 1:] * (height / 2) * v


def circle(cx: float, cy: float, radius: float, n: int = 40) -> np.ndarray:
    """Regular n-gon (n, 2) approximating a circle."""
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + radius * np.cos(a), cy + radius * np.sin(a)], axis=1)


def gaussian_blur(img: np.ndarray, sigma_px: float, axis: int) -> np.ndarray:
    """Gaussian filter (truncated at 3 sigma, mirrored edges) along axis 0 or 1; a new array."""
    radius = max(1, int(3 * sigma_px + 0.5))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma_px) ** 2)
    taps = (taps / taps.sum()).astype(img.dtype)
    src = img if axis == 0 else img.swapaxes(0, 1)
    padded = np.pad(src, [(radius, radius)] + [(0, 0)] * (src.ndim - 1), mode="symmetric")
    out = np.zeros_like(src)
    for i, w in enumerate(taps):
        out += w * padded[i : i + src.shape[0]]
    return out if axis == 0 else out.swapaxes(0, 1)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Gaussian-smoothed white noise, float32 (H, W), zero mean and unit standard deviation."""
    if sigma_px > 4:  # smooth at a lower resolution and upsample bilinearly: same look, far cheaper
        from PIL import Image

        step = int(sigma_px // 2)
        small = smooth_noise(rng, (shape[0] // step + 2, shape[1] // step + 2), sigma_px / step)
        size = (small.shape[1] * step, small.shape[0] * step)
        big = np.asarray(Image.fromarray(small, mode="F").resize(size, Image.Resampling.BILINEAR))
        big = big[: shape[0], : shape[1]]
        return ((big - big.mean()) / (big.std() + 1e-6)).astype(np.float32)
    field = gaussian_blur(
        gaussian_blur(rng.standard_normal(shape, dtype=np.float32), sigma_px, 0), sigma_px, 1
    )
    return (field - field.mean()) / (field.std() + 1e-6)


class Canvas:
    """RGB float image (H, W, 3) plus the visible-object id map (H, W) of a scene being drawn."""

    def __init__(self, height: int, width: int, background: tuple[float, float, float]):
        self.height, self.width = height, width
        self.rgb = np.empty((height, width, 3), dtype=np.float32)
        self.rgb[:] = background
        self.ids = np.zeros((height, width), dtype=np.int32)

    def mask(self, poly_px: np.ndarray):
        return polygon_mask(poly_px, self.height, self.width)

    def paint(
        self,
        poly_px: np.ndarray,
        colour,
        texture: np.ndarray | None = None,
        obj_id: int | None = None,
        shade=None,
    ) -> bool:
        """Fill a polygon with ``colour`` x (1 + ``texture`` window) [x ``shade(rows, cols)``].

        ``texture`` is a full-scene (H, W) float field of relative brightness offsets; ``shade``
        is a function of the window's row/column centre grids returning a multiplier. When
        ``obj_id`` is given the pixels are recorded as that object. Returns False if nothing
        was drawn.
        """
        found = self.mask(poly_px)
        if found is None:
            return False
        rows, cols, m = found
        factor = np.ones(m.shape, dtype=np.float32)
        if texture is not None:
            factor = factor + texture[rows, cols]
        if shade is not None:
            rr, cc = np.mgrid[rows, cols].astype(np.float32) + 0.5
            factor = factor * shade(rr, cc)
        window = self.rgb[rows, cols]
        window[m] = np.asarray(colour, dtype=np.float32)[None, :] * factor[m][:, None]
        if obj_id is not None:
            self.ids[rows, cols][m] = obj_id
        return True

    def darken(
        self, poly_px: np.ndarray, factor: float, skip_ids: np.ndarray | None = None
    ) -> None:
        """Multiply pixels inside the polygon by ``factor`` (shadows), except on ``skip_ids``."""
        found = self.mask(poly_px)
        if found is None:
            return
        rows, cols, m = found
        if skip_ids is not None:
            m = m & ~np.isin(self.ids[rows, cols], skip_ids)
        self.rgb[rows, cols][m] *= factor

    def free(self, poly_px: np.ndarray, occupied: np.ndarray) -> bool:
        """True when the polygon covers pixels and none of them is set in ``occupied``."""
        found = self.mask(poly_px)
        if found is None:
            return False
        rows, cols, m = found
        return not bool((occupied[rows, cols] & m).any())

    def finish(
        self, rng: np.random.Generator, blur: bool = True, noise_level: float = 2.0
    ) -> np.ndarray:
        """uint8 (H, W, 3) image: slight optical blur ([1, 2, 1] / 4 per axis) plus sensor noise."""
        img = _blur121(_blur121(self.rgb, 0), 1) if blur else self.rgb
        img += noise_level * rng.standard_normal(img.shape, dtype=np.float32)
        return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _blur121(img: np.ndarray, axis: int) -> np.ndarray:
    """Binomial [1, 2, 1] / 4 filter along ``axis`` (0 or 1) with edge replication (a new array)."""
    src = img if axis == 0 else img.swapaxes(0, 1)
    out = 0.5 * src
    out[1:] += 0.25 * src[:-1]
    out[:-1] += 0.25 * src[1:]
    out[0] += 0.25 * src[0]
    out[-1] += 0.25 * src[-1]
    return out if axis == 0 else out.swapaxes(0, 1)
