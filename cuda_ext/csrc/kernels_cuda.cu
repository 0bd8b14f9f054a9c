// The CUDA loops of parallel.h, instantiated for every functor of kernels.h (the entry points in <op>.cpp, compiled
// by the host compiler, call these instantiations).
#include "kernels.h"
#include "parallel_cuda.cuh"

namespace relight3d {

// one thread per element, ray, sample or row
R3D_CUDA_ITEMS(RayAabb)
R3D_CUDA_ITEMS(Morton3d)
R3D_CUDA_ITEMS(Morton3dInvert)
R3D_CUDA_ITEMS(CellPositions)
R3D_CUDA_ITEMS(PackBitfield)
R3D_CUDA_ITEMS(UnpackBitfield)
R3D_CUDA_ITEMS(OccupancyLookup)
R3D_CUDA_ITEMS(MarchTrainCount)
R3D_CUDA_ITEMS(MarchTrainFill)
R3D_CUDA_ITEMS(MarchInference)
R3D_CUDA_ITEMS(Accumulate)
R3D_CUDA_ITEMS(AccumulateBackward)
R3D_CUDA_ITEMS(CompositeInference)

// one thread per ray, over its run of packed samples
R3D_CUDA_SEGMENTS(RenderWeights)
R3D_CUDA_SEGMENTS(RenderWeightsBackward)
R3D_CUDA_SEGMENTS(Composite)
R3D_CUDA_SEGMENTS(CompositeBackward)

}  // namespace relight3d
