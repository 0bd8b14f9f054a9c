// Sampling of a TensoRF vector-matrix (VM) decomposition: the interpolation arithmetic shared by the CPU and CUDA
// kernels (vm_cpu.cpp, vm_cuda.cu).
//
// The op evaluates, for every point i, each of the three plane/line pairs p and channel c,
//   out[i, p * C + c] = bilinear(planes[p, c], xyz[i, a_p], xyz[i, b_p]) * linear(lines[p, c, :, 0], xyz[i, l_p])
// with (a_p, b_p, l_p) = (0, 1, 2), (0, 2, 1), (1, 2, 0): the plane's width axis is a_p, its height axis b_p, the
// line runs along l_p. This is F.grid_sample(mode="bilinear", padding_mode="zeros", align_corners=True) of the planes
// at (x=xyz[a], y=xyz[b]) and of the [L, 1] line images at (x=0, y=xyz[l]), times each other.
//
// grid_sample's arithmetic, reproduced operation for operation: a normalised coordinate u maps to the pixel
// coordinate pix = (u + 1) * ((size - 1) / 2) (the same float as ((u + 1) / 2) * (size - 1): both halvings are
// exact); the two nodes around it are i0 = floor(pix) and i0 + 1, with weights w0 = (i0 + 1) - pix and
// w1 = pix - i0; a plane corner's weight is the product of its y and x weights; nodes outside [0, size) contribute
// nothing (zeros padding), so values fade to 0 within one cell outside [-1, 1]. For a line (an image of width 1 at
// x = 0) the x weight is exactly 1. The sums run in grid_sample's order, ((v00 w00 + v01 w01) + v10 w10) + v11 w11.
// A point with a non-finite coordinate gets NaN features (as from grid_sample) and contributes no gradient.
#pragma once

#include "common.h"

namespace relight3d {

// The two interpolation nodes i0 = floor(pix) and i0 + 1 around a coordinate along one axis of `size` nodes, their
// weights, and whether each lies in [0, size). Both are invalid for a coordinate outside (-1, size) in pixels, NaN
// included (i0 is then meaningless).
struct AxisNodes {
  int64_t i0;
  float w0, w1;
  bool valid0, valid1;
};

R3D_HD AxisNodes axis_nodes(float u, int64_t size) {
  AxisNodes t{-1, 0.0f, 0.0f, false, false};
  const float pix = (u + 1.0f) * (0.5f * static_cast<float>(size - 1));
  // Checked before the float -> int conversion, which is undefined for NaN and huge values.
  if (!(pix > -1.0f && pix < static_cast<float>(size))) return t;
  // floor without a libm call (floorf is one on x86-64 without SSE4.1): truncate, then step down below zero.
  int64_t i0 = static_cast<int64_t>(pix);
  if (static_cast<float>(i0) > pix) --i0;
  const float f = static_cast<float>(i0);
  t.i0 = i0;
  t.w0 = (f + 1.0f) - pix;
  t.w1 = pix - f;
  t.valid0 = i0 >= 0;
  t.valid1 = i0 + 1 < size;
  return t;
}

// Coordinate axes of pair p: the plane's width axis (x), its height axis (y) and the line's axis.
R3D_HD int vm_plane_x_axis(int p) { return p == 2 ? 1 : 0; }
R3D_HD int vm_plane_y_axis(int p) { return p == 0 ? 1 : 2; }
R3D_HD int vm_line_axis(int p) { return 2 - p; }

}  // namespace relight3d
