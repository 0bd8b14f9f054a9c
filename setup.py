"""Install relight3d: the package, its nerfstudio entry points and (when possible) the compiled ray-marching kernels.

Build modes for the ``relight3d._C`` extension from ``cuda_ext/``:

* a CUDA torch and ``nvcc`` present (``CUDA_HOME`` set, or found by torch): CUDA + C++ CPU kernels in one extension.
  Without a GPU to detect, set ``TORCH_CUDA_ARCH_LIST`` (e.g. ``"8.0;9.0"``).
* otherwise: the C++ CPU kernels alone.
* ``BUILD_NO_EXT=1``: nothing is compiled; the pure-torch implementation is used.

Install with ``pip install --no-build-isolation -e .`` so that the build sees the torch already installed (an isolated
build would download another one).
"""

import glob
import os
import sys

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _extensions():
    """The list of extension modules to build, and the build_ext command class."""
    if os.environ.get("BUILD_NO_EXT", "0") == "1":
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        print("relight3d: torch is not importable at build time; skipping the compiled kernels")
        return [], {}
    csrc = os.path.join("cuda_ext", "csrc")
    cpp_sources = sorted(glob.glob(os.path.join(csrc, "*.cpp")))
    cu_sources = sorted(glob.glob(os.path.join(csrc, "*.cu")))
    if not cpp_sources:
        return [], {}
    # No -std flag: torch's BuildExtension adds the standard its headers need (C++17 for older torch, C++20 now).
    cxx_flags = ["-O3"]
    link_flags = []
    if torch._C.has_openmp and sys.platform.startswith("linux"):
        # at::parallel_for is an inline OpenMP loop: without -fopenmp the CPU kernels would run on one thread.
        cxx_flags.append("-fopenmp")
        link_flags.append("-fopenmp")
    with_cuda = torch.version.cuda is not None and CUDA_HOME is not None and bool(cu_sources)
    if os.environ.get("BUILD_CPU_ONLY", "0") == "1":
        with_cuda = False
    if with_cuda:
        ext = CUDAExtension(
            name="relight3d._C",
            sources=cpp_sources + cu_sources,
            define_macros=[("WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "--use_fast_math"]},
            extra_link_args=link_flags,
        )
    else:
        ext = CppExtension(
            name="relight3d._C",
            sources=cpp_sources,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=link_flags,
        )
    print(f"relight3d: building relight3d._C with {'CUDA + CPU' if with_cuda else 'CPU'} kernels")
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()

setup(
    name="relight3d",
    version="0.1.0",
    description="Relighting radiance fields with 2D diffusion priors: a nerfstudio plugin",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read()
    if os.path.exists(os.path.join(HERE, "README.md"))
    else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # relight3d_bench: the Cycles benchmark generator (`relight3d bench ...`), outside the runtime package.
    packages=find_packages(include=["relight3d", "relight3d.*", "relight3d_bench", "relight3d_bench.*"]),
    include_package_data=True,
    # The demo's CC0 HDR maps (relight3d/assets is data, not a package: find_packages does not list it).
    package_data={"relight3d": ["assets/envmaps/*.exr", "assets/envmaps/LICENSE.txt"]},
    install_requires=[
        # Any torch: installing relight3d must not replace the user's torch (pin it with constraints.txt).
        "torch>=2.1",
        "nerfstudio==1.1.5",
        "diffusers>=0.27",
        "accelerate>=0.30",  # relight3d train-prior (one process, or several with accelerate launch / torchrun)
        "transformers>=4.38",
        "safetensors",
        "trimesh>=4",
        "open3d>=0.18",
        "imageio[ffmpeg]>=2.31",
        "numpy",
        "PyMCubes>=0.1.4",
        "xatlas>=0.0.9",  # UV unwrapping for textured mesh export (relight3d.export.texture)
        "jaxtyping",
        "tyro",
        # Environment maps (relight3d.lighting): .exr via the OpenEXR project's bindings, .hdr via OpenCV.
        "OpenEXR>=3.3",
        "opencv-python-headless",
    ],
    extras_require={
        "gpu": ["tinycudann", "nvdiffrast"],
        "bench": ["bpy==5.0.1"],
        "test": ["pytest>=7", "ruff"],
    },
    entry_points={
        "nerfstudio.method_configs": [
            "relight3d-tensorf = relight3d.method_configs:tensorf_method",
            "relight3d-ngp = relight3d.method_configs:ngp_method",
            "relight3d-gaffer = relight3d.method_configs:gaffer_method",
            "relight3d-sds = relight3d.method_configs:sds_method",
            "relight3d-sds-tensorf = relight3d.method_configs:sds_tensorf_method",
        ],
        "nerfstudio.dataparser_configs": [
            "relight3d-objaverse = relight3d.data.dataparser_configs:objaverse_dataparser",
            "relight3d-single-image = relight3d.data.dataparser_configs:single_image_dataparser",
        ],
        "console_scripts": ["relight3d = relight3d.cli:main"],
    },
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
