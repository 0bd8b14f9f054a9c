// Force-included (nvcc -include, through NVCC_APPEND_FLAGS) when the GPU check compiles nerfacc 0.5.2's kernels,
// which predate CUDA 13 and C++20:
// 1. nerfacc's scan.cu passes cub::Equality() to cub::DeviceScan::*ByKey; CCCL 3.0 (CUDA 13) removed that functor in
//    favour of cuda::std::equal_to<>, which compares the same way (a == b). Older CUDA keeps its own cub::Equality.
// 2. torch's extension builds pass -std=c++20, and in C++20 libstdc++'s <math.h> declares std::lerp in the global
//    namespace, where nerfacc's include/utils_math.cuh defines its own lerp(float, float, float): "conflicts with a
//    previous declaration" (pdf.cu, grid.cu). nerfacc never calls those helpers, so once the standard headers are in,
//    the name is mapped to another one for the rest of the file (torch's own lerp functions are inline: renamed the
//    same way in their declarations and uses, they link as before).
// Without these, nerfacc, and with it nerfstudio's instant-ngp, does not build with CUDA 13 and a C++20 torch.
#pragma once
#include <cub/version.cuh>
#if CUB_VERSION >= 300000
#include <cuda/std/functional>
namespace cub {
using Equality = ::cuda::std::equal_to<>;
}  // namespace cub
#endif
#if __cplusplus >= 202002L
#include <cmath>
#include <math.h>
#define lerp nerfacc_unused_lerp
#endif
