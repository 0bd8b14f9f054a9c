"""The software mesh preview: silhouette size against the pinhole projection, and depth ordering."""

from __future__ import annotations

import math

import trimesh

from relight3d.export.preview import render_mesh_preview


def test_sphere_silhouette_has_the_projected_size():
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=0.5)
    size, fov = 160, 30.0
    image = render_mesh_preview(sphere, size, size, vertical_fov=fov)
    covered = (image != 255).any(-1).sum()
    # The camera frames the bounding box's circumsphere (radius 0.5 * sqrt(3)) with 5 % to spare.
    half = math.radians(fov) / 2
    distance = 0.5 * math.sqrt(3) / math.sin(half) * 1.05
    focal = size / (2 * math.tan(half))
    radius_px = focal * 0.5 / math.sqrt(distance**2 - 0.25)
    assert abs(covered / (math.pi * radius_px**2) - 1.0) < 0.03


def test_nearer_surfaces_hide_farther_ones():
    near = trimesh.creation.icosphere(radius=0.3)
    near.apply_translation([0.0, -1.0, 0.0])  # towards the camera (azimuth 0 looks from -Y)
    far = trimesh.creation.icosphere(radius=0.6)
    near.visual.vertex_colors = [255, 0, 0, 255]
    far.visual.vertex_colors = [0, 0, 255, 255]
    both = trimesh.util.concatenate([far, near])  # the far sphere's faces come first
    image = render_mesh_preview(both, 96, 96, azimuth=0.0, elevation=0.0).astype(int)
    centre = image[44:52, 44:52].reshape(-1, 3)
    assert (centre[:, 0] > 50).all() and (centre[:, 2] == 0).all()  # red in front
    assert (image[..., 2] > 50).any()  # the blue sphere shows around it
