"""Shared geometry: the MediaPipe mesh topology, rotations, projection and a z-buffer rasteriser.

Conventions (the whole project uses these):

- Image coordinates are continuous pixels, x right, y down, origin at the top-left corner of the
  image: pixel (i, j) covers [j, j+1) x [i, i+1) and its centre is (j + 0.5, i + 0.5). This is
  MediaPipe's `x * width`, and `grid_sample(..., align_corners=False)`.
- Camera (OpenCV): x right, y down, z forward (away from the camera). Intrinsics
  K = [[f, 0, cx], [0, f, cy], [0, 0, 1]] with (cx, cy) the image centre.
- A pose T (4x4) maps object (head) coordinates to camera coordinates: X_cam = R X_obj + t.
"""

from __future__ import annotations

import ast
import functools
import inspect

import numpy as np

# Closed contours that MediaPipe's tessellation leaves open (eyes, mouth), in order.
LEFT_EYE_RING = [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466]
RIGHT_EYE_RING = [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246]
MOUTH_RING = [
    78,
    95,
    88,
    178,
    87,
    14,
    317,
    402,
    318,
    324,
    308,
    415,
    310,
    311,
    312,
    13,
    82,
    81,
    80,
    191,
]


@functools.cache
def face_triangles(closed: bool = True) -> np.ndarray:
    """Triangles of the MediaPipe face mesh, `(T, 3) int64` vertex indices.

    `FACEMESH_TESSELATION` is a frozenset (its order is lost), but the wheel's source lists the
    edges triangle by triangle; this reads that source. With `closed`, the eye and mouth holes
    are filled (a fan from each ring) so the mesh is a closed disk.
    """
    from mediapipe.python.solutions import face_mesh_connections as fmc

    tree = ast.parse(inspect.getsource(fmc))
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "FACEMESH_TESSELATION":
            edges = ast.literal_eval(node.value.args[0])
            break
    else:  # pragma: no cover - depends on the pinned mediapipe
        raise RuntimeError("FACEMESH_TESSELATION not found in mediapipe's source")
    tris = []
    for k in range(0, len(edges) - 2, 3):
        (a, b), (c, d), (e, g) = edges[k : k + 3]
        if b == c and d == e and g == a:
            tris.append((a, b, d))
    out = np.array(tris, dtype=np.int64)
    if closed:
        fill = []
        for ring in (LEFT_EYE_RING, RIGHT_EYE_RING, MOUTH_RING):
            fill += [(ring[0], ring[i], ring[i + 1]) for i in range(1, len(ring) - 1)]
        out = np.concatenate([out, np.array(fill, dtype=np.int64)])
    return out


def rodrigues(rotvec: np.ndarray) -> np.ndarray:
    """Axis-angle `(..., 3)` (radians) -> rotation matrices `(..., 3, 3)`."""
    rotvec = np.asarray(rotvec, dtype=np.float64)
    theta = np.linalg.norm(rotvec, axis=-1, keepdims=True)[..., None]
    k = rotvec / np.maximum(theta[..., 0], 1e-12)
    kx, ky, kz = k[..., 0], k[..., 1], k[..., 2]
    zero = np.zeros_like(kx)
    kmat = np.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], -1).reshape(*k.shape[:-1], 3, 3)
    eye = np.broadcast_to(np.eye(3), kmat.shape)
    return eye + np.sin(theta) * kmat + (1 - np.cos(theta)) * kmat @ kmat


def rotation_angle_deg(r: np.ndarray) -> np.ndarray:
    """Angle of rotation matrices `(..., 3, 3)` in degrees."""
    cos = (np.trace(r, axis1=-2, axis2=-1) - 1) / 2
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def intrinsics(focal: float, width: int, height: int) -> np.ndarray:
    """Pinhole K with the principal point at the image centre."""
    return np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1.0]])


def project(points_cam: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Camera points `(..., 3)` -> pixels `(..., 2)` (image convention above)."""
    uvw = points_cam @ k.T
    return uvw[..., :2] / uvw[..., 2:3]


def rasterize_depth(
    pixels: np.ndarray, depth: np.ndarray, triangles: np.ndarray, width: int, height: int
) -> np.ndarray:
    """Z-buffer of a triangle mesh: nearest depth at every pixel centre, 0 where empty.

    `pixels`: `(V, 2)` projected vertices; `depth`: `(V,)` camera z of each vertex (> 0);
    returns `(height, width) float32`. Depth is interpolated linearly in screen space over each
    triangle (exact for planes parallel to the image, and a close approximation for the small
    triangles of a face mesh). Vectorised over triangles: every triangle tests the pixel
    centres of its bounding box, padded to the largest box, and the nearest wins.
    """
    tri_px = pixels[triangles].astype(np.float32)  # (T, 3, 2)
    tri_z = depth[triangles].astype(np.float32)  # (T, 3)
    lo = np.floor(tri_px.min(axis=1) - 0.5).astype(np.int64)  # first candidate pixel index
    hi = np.ceil(tri_px.max(axis=1) - 0.5).astype(np.int64)
    lo = np.clip(lo, 0, [width - 1, height - 1])
    hi = np.clip(hi, 0, [width - 1, height - 1])
    keep = np.all(hi >= lo, axis=1) & np.all(tri_z > 0, axis=1)
    tri_px, tri_z, lo, hi = tri_px[keep], tri_z[keep], lo[keep], hi[keep]
    if len(tri_px) == 0:
        return np.zeros((height, width), np.float32)
    hits_idx, hits_z = [], []
    order = np.argsort(((hi - lo) + 1).prod(axis=1))  # similar box sizes share a chunk
    tri_px, tri_z, lo, hi = tri_px[order], tri_z[order], lo[order], hi[order]
    for start in range(0, len(tri_px), 48):
        sl = slice(start, start + 48)
        span = (hi[sl] - lo[sl]).max(axis=0) + 1  # (2,) the chunk's largest box
        ox, oy = np.meshgrid(np.arange(span[0]), np.arange(span[1]))
        px = lo[sl, 0, None] + ox.ravel()[None]  # (t, S)
        py = lo[sl, 1, None] + oy.ravel()[None]
        inside_box = (px <= hi[sl, 0, None]) & (py <= hi[sl, 1, None])
        cx, cy = px + 0.5, py + 0.5
        (x0, y0), (x1, y1), (x2, y2) = (tri_px[sl, i].T[..., None] for i in range(3))
        det = (y1 - y2) * (x0 - x2) + (x2 - x1) * (y0 - y2)
        ok = np.abs(det) > 1e-12
        det = np.where(ok, det, np.float32(1.0))
        w0 = ((y1 - y2) * (cx - x2) + (x2 - x1) * (cy - y2)) / det
        w1 = ((y2 - y0) * (cx - x2) + (x0 - x2) * (cy - y2)) / det
        w2 = 1 - w0 - w1
        eps = -1e-9
        hit = inside_box & ok & (w0 >= eps) & (w1 >= eps) & (w2 >= eps)
        z = w0 * tri_z[sl, 0, None] + w1 * tri_z[sl, 1, None] + w2 * tri_z[sl, 2, None]
        hits_idx.append((py * width + px)[hit])
        hits_z.append(z[hit])
    idx, z = np.concatenate(hits_idx), np.concatenate(hits_z)
    order = np.lexsort((z, idx))  # by pixel, nearest first
    idx, z = idx[order], z[order]
    first = np.ones(len(idx), bool)
    first[1:] = idx[1:] != idx[:-1]
    zbuf = np.zeros(width * height, np.float32)
    zbuf[idx[first]] = z[first]
    return zbuf.reshape(height, width)
