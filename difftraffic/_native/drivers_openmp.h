/* The CPU drivers of fused_step.h: worlds spread over OpenMP threads, one scratch block per
 * thread. Included once per precision by fused_step.c. */

void FN(difftraffic_step)(const FN(Step) * s, int threads) {
#pragma omp parallel num_threads(threads) if (threads > 1 && s->B > 1)
    {
        char *block = (char *)malloc(FN(world_scratch_bytes)(s->N, s->L, s->mobil.on));
#pragma omp for schedule(static)
        for (int64_t b = 0; b < s->B; b++)
            FN(step_world)(s, b, FN(step_reals)(block, s->N, s->L, s->mobil.on),
                           FN(step_ints)(block));
        free(block);
    }
}

void FN(difftraffic_step_backward)(const FN(Step) * s, const FN(Grads) * g, int threads) {
#pragma omp parallel num_threads(threads) if (threads > 1 && s->B > 1)
    {
        char *block = (char *)malloc(FN(world_scratch_bytes)(s->N, s->L, 0));
#pragma omp for schedule(static)
        for (int64_t b = 0; b < s->B; b++) FN(step_world_backward)(s, g, b, (REAL *)block);
        free(block);
    }
}

void FN(difftraffic_leaders)(const FN(Leaders) * q, int threads) {
#pragma omp parallel num_threads(threads) if (threads > 1 && q->B > 1)
    {
        char *block = (char *)malloc(FN(world_scratch_bytes)(q->N, q->L, 0));
#pragma omp for schedule(static)
        for (int64_t b = 0; b < q->B; b++) FN(leaders_world)(q, b, (int64_t *)block);
        free(block);
    }
}
