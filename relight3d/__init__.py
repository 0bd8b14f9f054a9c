"""relight3d: relighting radiance fields with 2D priors, as a nerfstudio plugin.

Importing this package is cheap on purpose: nothing heavy (nerfstudio, diffusers, tinycudann) is imported here.
"""

__version__ = "0.1.0"
