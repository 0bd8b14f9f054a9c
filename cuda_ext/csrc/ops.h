// Declarations of the ray-marching ops (see op_signatures.inc): the checked entry points bound in ext.cpp and the
// CPU / CUDA implementations they dispatch to, which have the same names in namespaces relight3d::cpu and
// relight3d::cuda.
//
// Conventions: float tensors are float32, integer tensors int64, bitfields uint8; every tensor is contiguous and on
// one device (the entry points check this; the Python wrapper makes tensors contiguous and integer tensors int64).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace relight3d {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

#include "op_signatures.inc"

namespace cpu {
#include "op_signatures.inc"
}  // namespace cpu

#ifdef WITH_CUDA
namespace cuda {
#include "op_signatures.inc"
}  // namespace cuda
#endif

}  // namespace relight3d
