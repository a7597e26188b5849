/* The fused step for CUDA: built by difftraffic.fused with nvcc (--fmad=false, as the C build's
 * -ffp-contract=off). */
#include <cuda_runtime.h>

#define DT_DEVICE __device__
#define DT_HOST_DEVICE __host__ __device__
#define THREADS 128
#define DRIVERS "drivers_cuda.cuh"

static int blocks(int64_t worlds) { return (int)((worlds + THREADS - 1) / THREADS); }

#include "both_precisions.h"

extern "C" const char *difftraffic_cuda_error(int code) {
    return cudaGetErrorString((cudaError_t)code);
}
