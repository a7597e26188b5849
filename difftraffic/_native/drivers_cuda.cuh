/* The CUDA drivers of fused_step.h: one thread per world, each with its block of a scratch
 * buffer that the caller allocates (difftraffic_scratch_bytes), launched on the caller's
 * stream. Each returns cudaGetLastError() of its launch. Included once per precision by
 * fused_step.cu. */

__global__ void FN(step_kernel)(FN(Step) s, char *scratch, int64_t per_world) {
    int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (b >= s.B) return;
    char *block = scratch + b * per_world;
    FN(step_world)(&s, b, FN(step_reals)(block, s.N, s.L, s.mobil.on), FN(step_ints)(block));
}

__global__ void FN(step_backward_kernel)(FN(Step) s, FN(Grads) g, char *scratch,
                                         int64_t per_world) {
    int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (b >= s.B) return;
    FN(step_world_backward)(&s, &g, b, (REAL *)(scratch + b * per_world));
}

__global__ void FN(leaders_kernel)(FN(Leaders) q, char *scratch, int64_t per_world) {
    int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (b >= q.B) return;
    FN(leaders_world)(&q, b, (int64_t *)(scratch + b * per_world));
}

extern "C" int64_t FN(difftraffic_scratch_bytes)(int64_t B, int64_t N, int64_t L, int mobil) {
    return B * FN(world_scratch_bytes)(N, L, mobil);
}

extern "C" int FN(difftraffic_step)(const FN(Step) * s, void *scratch, void *stream) {
    FN(step_kernel)<<<blocks(s->B), THREADS, 0, (cudaStream_t)stream>>>(
        *s, (char *)scratch, FN(world_scratch_bytes)(s->N, s->L, s->mobil.on));
    return (int)cudaGetLastError();
}

extern "C" int FN(difftraffic_step_backward)(const FN(Step) * s, const FN(Grads) * g,
                                             void *scratch, void *stream) {
    FN(step_backward_kernel)<<<blocks(s->B), THREADS, 0, (cudaStream_t)stream>>>(
        *s, *g, (char *)scratch, FN(world_scratch_bytes)(s->N, s->L, 0));
    return (int)cudaGetLastError();
}

extern "C" int FN(difftraffic_leaders)(const FN(Leaders) * q, void *scratch, void *stream) {
    FN(leaders_kernel)<<<blocks(q->B), THREADS, 0, (cudaStream_t)stream>>>(
        *q, (char *)scratch, FN(world_scratch_bytes)(q->N, q->L, 0));
    return (int)cudaGetLastError();
}
