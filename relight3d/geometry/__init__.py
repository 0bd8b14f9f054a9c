"""Cameras and rays, written once: every part of relight3d that builds a camera or casts a ray uses these.

Conventions (the same everywhere in relight3d):

* **World**: right-handed, **+Z up** (Blender's world). Azimuth 0 looks at the object from **-Y** (Blender's front
  view) and grows counter-clockwise seen from above; elevation is measured up from the XY plane.
* **Camera-to-world** matrices are ``[3, 4]`` (or ``[4, 4]``) in the **OpenGL/Blender/nerfstudio camera** convention:
  x right, y up, the camera looks down **-z**. :func:`opengl_to_opencv` flips y and z for OpenCV's convention
  (x right, y down, looking down +z), which Objaverse's ``*_RT.npy`` world-to-camera files use.

Layer: lowest (``ops`` / ``geometry`` / ``errors``); imports nothing from relight3d but :mod:`relight3d.errors`.
"""

from relight3d.geometry.cameras import (
    camera_rays,
    look_at,
    opengl_to_opencv,
    orbit_positions,
    pinhole_rays,
    to_homogeneous,
    world_to_camera,
)

__all__ = [
    "camera_rays",
    "look_at",
    "opengl_to_opencv",
    "orbit_positions",
    "pinhole_rays",
    "to_homogeneous",
    "world_to_camera",
]
