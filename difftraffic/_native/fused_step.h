/* One simulation step of difftraffic, fused: the per-world body of the step, its backward pass
 * and the leader search, included once per precision (both_precisions.h) by fused_step.c (worlds
 * spread over OpenMP threads, drivers_openmp.h) and fused_step.cu (one CUDA thread per world,
 * drivers_cuda.cuh). It mirrors difftraffic.dynamics.step operation by operation (same formulas,
 * same order, no contraction into fused multiply-adds), so it agrees with the eager step to the
 * rounding of the maths library's cos, sin, tan and pow.
 *
 * Arrays are [B, N] row-major unless said otherwise. Leader relations are found per world from
 * the vehicles sorted by (x, index), an order kept across steps and repaired by insertion sort
 * (vehicles rarely reorder), then one pass per world from the front: O(N L) instead of the
 * O(N^2) pairwise table. */

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define FN(name) CAT(name, SUFFIX)

typedef struct {
    const REAL *ptr; /* NULL: the scalar value for every vehicle */
    int64_t stride_b, stride_n;
    REAL value;
} FN(Param);

static inline DT_DEVICE REAL FN(param_at)(const FN(Param) * p, int64_t b, int64_t n) {
    return p->ptr ? p->ptr[b * p->stride_b + n * p->stride_n] : p->value;
}

/* r^delta: the IDM's usual delta = 4 (and its derivative's 3) by multiplication, the rest by the
 * maths library (its pow was a tenth of a forward step). */
static inline DT_DEVICE REAL FN(power)(REAL r, REAL delta) {
    if (delta == 4) {
        REAL r2 = r * r;
        return r2 * r2;
    }
    if (delta == 3) return r * r * r;
    return POW(r, delta);
}

/* torch.remainder for floating point: the result takes the divisor's sign. */
/* cos and sin of a heading; a road-aligned heading (every human's) skips the maths library. */
static inline DT_DEVICE void FN(cos_sin)(REAL h, REAL *c, REAL *s) {
    if (h == 0) {
        *c = 1;
        *s = 0;
    } else {
        *c = COS(h);
        *s = SIN(h);
    }
}

static inline DT_DEVICE REAL FN(remainder)(REAL a, REAL m) {
    REAL r = FMOD(a, m);
    if (r != 0 && ((m < 0) != (r < 0))) r += m;
    return r;
}

/* Lanes [*first, *last] that a body of lateral extent (low, high) belongs to; *first = -1 for
 * none. body: every lane k with low < k w + w and high > k w (as Road.occupied_lanes);
 * center: the lane of floor(mid / w), clamped to the road (as Road.nearest_lane). */
static inline DT_DEVICE void FN(member_lanes)(REAL low, REAL high, int64_t L, REAL w, int center,
                                    int64_t *first, int64_t *last) {
    if (center) {
        REAL mid = (REAL)0.5 * (low + high);
        REAL f = FLOOR(mid / w);
        int64_t k = f < 0 ? 0 : (f > (REAL)(L - 1) ? L - 1 : (int64_t)f);
        *first = *last = k;
        return;
    }
    int64_t lo = -1, hi = -1;
    for (int64_t k = 0; k < L; k++) {
        REAL lane_low = (REAL)k * w;
        REAL lane_high = lane_low + w;
        if (low < lane_high && high > lane_low) {
            if (lo < 0) lo = k;
            hi = k;
        }
    }
    *first = lo;
    *last = hi;
}

/* (rear_x, front_x) of a body: its extent along the road (state.longitudinal_extent). */
static inline DT_DEVICE void FN(extent_x)(REAL x, REAL len, REAL wid, REAL c, REAL s, REAL *rear,
                                REAL *front) {
    REAL center_x = x - (REAL)0.5 * len * c;
    REAL half_x = (REAL)0.5 * (len * FABS(c) + wid * FABS(s));
    *rear = center_x - half_x;
    *front = center_x + half_x;
}

static inline DT_DEVICE void FN(extent_y)(REAL y, REAL len, REAL wid, REAL c, REAL s, REAL *low,
                                REAL *high) {
    REAL center_y = y - (REAL)0.5 * len * s;
    REAL half_y = (REAL)0.5 * (len * FABS(s) + wid * FABS(c));
    *low = center_y - half_y;
    *high = center_y + half_y;
}

/* Sort one world's order by (key, index), starting from the order of the last step. */
static DT_DEVICE void FN(sort_order)(int64_t N, const REAL *key, int64_t *order) {
    for (int64_t r = 1; r < N; r++) {
        int64_t i = order[r];
        REAL k = key[i];
        int64_t q = r - 1;
        while (q >= 0 && (key[order[q]] > k || (key[order[q]] == k && order[q] > i))) {
            order[q + 1] = order[q];
            q--;
        }
        order[q + 1] = i;
    }
}

/* Whether any two fronts changed order within the step, whatever their lanes: the end
 * positions, in start order (followed on a ring by themselves a ring length on), decrease
 * somewhere. Most steps have none, and then no lane needs a look. */
static DT_DEVICE int FN(any_crossing)(int64_t N, const int64_t *order, const REAL *end, int ring,
                            REAL ring_length) {
    for (int64_t r = 1; r < N; r++)
        if (end[order[r]] < end[order[r - 1]]) return 1;
    return ring && N > 1 && end[order[0]] + ring_length < end[order[N - 1]];
}

/* Flags in hit[] the vehicles whose front changed order, within the step, with the front of
 * another vehicle of one of their lanes [first[i], last[i]] (neighbors._crossed_fronts).
 * order: by start position; end: unwrapped end positions; scratch: 2 L REAL. */
static DT_DEVICE void FN(crossed_fronts)(int64_t N, int64_t L, const int64_t *order, const REAL *end,
                               const int64_t *first, const int64_t *last, int ring,
                               REAL ring_length, uint8_t *hit, REAL *scratch) {
    REAL *behind = scratch, *ahead = scratch + L;
    int64_t rounds = ring ? 2 : 1;
    for (int64_t l = 0; l < L; l++) {
        behind[l] = -INFINITY;
        ahead[l] = INFINITY;
    }
    for (int64_t round = 0; round < rounds; round++) {
        for (int64_t r = 0; r < N; r++) {
            int64_t i = order[r];
            REAL e = round ? end[i] + ring_length : end[i];
            for (int64_t l = first[i]; l >= 0 && l <= last[i]; l++) {
                if (e < behind[l]) hit[i] = 1;
                if (e > behind[l]) behind[l] = e;
            }
        }
    }
    for (int64_t round = rounds - 1; round >= 0; round--) {
        for (int64_t r = N - 1; r >= 0; r--) {
            int64_t i = order[r];
            REAL e = round ? end[i] + ring_length : end[i];
            for (int64_t l = first[i]; l >= 0 && l <= last[i]; l++) {
                if (e > ahead[l]) hit[i] = 1;
                if (e < ahead[l]) ahead[l] = e;
            }
        }
    }
}

/* Leaders of one world (neighbors.find_leaders): the first vehicle after one's own rank that
 * shares a lane with it, cyclically on a ring. lane_first/lane_last per vehicle (-1: none);
 * scratch: 2 L int64. */
static DT_DEVICE void FN(find_leaders_world)(int64_t N, int64_t L, const REAL *key, const int64_t *lane_first,
                                   const int64_t *lane_last, int ring, int64_t *order,
                                   int64_t *leader, uint8_t *has_leader, int64_t *scratch) {
    int64_t *next_rank = scratch, *first_rank = scratch + L;
    FN(sort_order)(N, key, order);
    for (int64_t l = 0; l < L; l++) next_rank[l] = first_rank[l] = -1;
    if (ring) {
        for (int64_t r = N - 1; r >= 0; r--) {
            int64_t i = order[r];
            if (lane_first[i] < 0) continue;
            for (int64_t l = lane_first[i]; l <= lane_last[i]; l++) first_rank[l] = r;
        }
    }
    for (int64_t r = N - 1; r >= 0; r--) {
        int64_t i = order[r];
        leader[i] = i;
        has_leader[i] = 0;
        if (lane_first[i] < 0) continue;
        int64_t best = N; /* rank offset of the best candidate */
        for (int64_t l = lane_first[i]; l <= lane_last[i]; l++) {
            int64_t c = next_rank[l] >= 0 ? next_rank[l] : first_rank[l];
            if (c >= 0 && c != r) {
                int64_t offset = c > r ? c - r : c - r + N;
                if (offset < best) best = offset;
            }
            next_rank[l] = r;
        }
        if (best < N) {
            leader[i] = order[(r + best) % N];
            has_leader[i] = 1;
        }
    }
}

/* Gap from the front of vehicle i to the rear of its leader j, along the road
 * (neighbors.gap_to_leader). */
static inline DT_DEVICE REAL FN(gap)(int64_t i, int64_t j, const REAL *x, const REAL *rear, const REAL *front,
                           REAL ring_length, int ring) {
    REAL distance = x[j] - x[i];
    if (ring) {
        distance = FN(remainder)(distance, ring_length);
        if (distance == 0 && j < i) distance = distance + ring_length;
    }
    return distance + (rear[j] - x[j]) - (front[i] - x[i]);
}

typedef struct {
    int64_t B, N, L;
    REAL lane_width, ring_length, dt, wheelbase_ratio, min_gap;
    int ring, center;
    /* state at t */
    const REAL *x, *y, *v, *heading, *length, *width;
    const uint8_t *is_av, *active;
    const REAL *av_acceleration, *av_steering;
    FN(Param) v0, T, a, b, delta, s0;
    const int64_t *leader;
    const uint8_t *has_leader;
    const int64_t *order_start; /* the rank order of the last search */
    /* state at t + dt and what the step found */
    REAL *x_next, *y_next, *v_next, *heading_next, *acceleration;
    int64_t *leader_next, *order; /* order: order_start repaired for this step's positions */
    uint8_t *has_leader_next, *collided;
} FN(Step);

/* The start lanes of the `count` vehicles of ranks order[0 .. count) of world offset o, then
 * crossed_fronts among them, in the lanes they shared at the step's start and at its end. */
static DT_DEVICE void FN(crossed_in_ranks)(const FN(Step) * s, int64_t o, const int64_t *order,
                                 int64_t count, const REAL *end, int64_t *first_start,
                                 int64_t *last_start, const int64_t *lane_first,
                                 const int64_t *lane_last, uint8_t *hit, REAL *scratch) {
    for (int64_t r = 0; r < count; r++) {
        int64_t i = order[r];
        REAL c, sn, low, high;
        FN(cos_sin)(s->heading[o + i], &c, &sn);
        FN(extent_y)(s->y[o + i], s->length[o + i], s->width[o + i], c, sn, &low, &high);
        first_start[i] = last_start[i] = -1;
        if (s->active[o + i])
            FN(member_lanes)(low, high, s->L, s->lane_width, s->center, &first_start[i],
                             &last_start[i]);
    }
    FN(crossed_fronts)(count, s->L, order, end, first_start, last_start, s->ring, s->ring_length,
                       hit, scratch);
    FN(crossed_fronts)(count, s->L, order, end, lane_first, lane_last, s->ring, s->ring_length,
                       hit, scratch);
}

/* Scratch per world: rear, front, rear_next, front_next, key, gap, moved, key_start, end
 * (9 N REAL) and 2 L REAL; lane_first, lane_last, their values at the start (4 N int64) and
 * 2 L int64. */
static DT_DEVICE void FN(step_world)(const FN(Step) * s, int64_t b, REAL *rs, int64_t *is) {
    const int64_t N = s->N, o = b * N;
    const REAL *x = s->x + o, *y = s->y + o, *v = s->v + o, *h = s->heading + o;
    const REAL *len = s->length + o, *wid = s->width + o;
    const uint8_t *is_av = s->is_av + o, *active = s->active + o;
    const int64_t *lead = s->leader + o;
    const uint8_t *has_lead = s->has_leader + o;
    REAL *rear = rs, *front = rs + N, *rear_n = rs + 2 * N, *front_n = rs + 3 * N;
    REAL *key = rs + 4 * N, *gap = rs + 5 * N, *moved = rs + 6 * N;
    REAL *key_start = rs + 7 * N, *end = rs + 8 * N, *real_scratch = rs + 9 * N;
    int64_t *lane_first = is, *lane_last = is + N, *scratch = is + 4 * N;
    int64_t *first_start = is + 2 * N, *last_start = is + 3 * N;
    REAL *cos_h = s->x_next + o; /* borrowed until x_next is written */
    for (int64_t i = 0; i < N; i++) {
        REAL c, sn;
        FN(cos_sin)(h[i], &c, &sn);
        cos_h[i] = c;
        FN(extent_x)(x[i], len[i], wid[i], c, sn, &rear[i], &front[i]);
        key_start[i] = s->ring ? FN(remainder)(x[i], s->ring_length) : x[i];
    }
    REAL *x_n = s->x_next + o, *y_n = s->y_next + o, *v_n = s->v_next + o;
    REAL *h_n = s->heading_next + o, *acc = s->acceleration + o;
    /* v_lead needs every cos(h) first; x_next is written in a second loop. */
    for (int64_t i = 0; i < N; i++) {
        int64_t j = lead[i];
        REAL g = FN(gap)(i, j, x, rear, front, s->ring_length, s->ring);
        gap[i] = g;
        REAL human;
        {
            REAL v0 = FN(param_at)(&s->v0, b, i), T = FN(param_at)(&s->T, b, i);
            REAL a = FN(param_at)(&s->a, b, i), bb = FN(param_at)(&s->b, b, i);
            REAL delta = FN(param_at)(&s->delta, b, i), s0 = FN(param_at)(&s->s0, b, i);
            REAL free_road = (REAL)1.0 - FN(power)(v[i] / v0, delta);
            REAL interaction = 0;
            if (has_lead[i]) {
                REAL v_lead = v[j] * cos_h[j];
                REAL approach = v[i] * T + v[i] * (v[i] - v_lead) / ((REAL)2.0 * SQRT(a * bb));
                REAL desired = s0 + (approach > 0 ? approach : 0);
                REAL ratio = desired / (g > s->min_gap ? g : s->min_gap);
                interaction = ratio * ratio;
            }
            human = a * (free_road - interaction);
        }
        acc[i] = active[i] ? (is_av[i] ? s->av_acceleration[o + i] : human) : 0;
    }
    for (int64_t i = 0; i < N; i++) {
        REAL vn = v[i] + acc[i] * s->dt;
        vn = vn > 0 ? vn : 0;
        int steered = is_av[i] && active[i];
        REAL hn = h[i];
        if (steered) {
            REAL yaw = vn * TAN(s->av_steering[o + i]) / (s->wheelbase_ratio * len[i]);
            hn = h[i] + yaw * s->dt;
        }
        REAL c, sn;
        FN(cos_sin)(hn, &c, &sn);
        REAL m = vn * c * s->dt;
        REAL xn = x[i] + m;
        if (s->ring) xn = FN(remainder)(xn, s->ring_length);
        REAL yn = y[i] + vn * sn * s->dt;
        moved[i] = active[i] ? m : 0;
        end[i] = key_start[i] + moved[i];
        h_n[i] = hn;
        if (active[i]) {
            x_n[i] = xn;
            y_n[i] = yn;
            v_n[i] = vn;
        } else {
            x_n[i] = x[i];
            y_n[i] = y[i];
            v_n[i] = v[i];
        }
        REAL low, high;
        FN(extent_x)(x_n[i], len[i], wid[i], c, sn, &rear_n[i], &front_n[i]);
        FN(extent_y)(y_n[i], len[i], wid[i], c, sn, &low, &high);
        if (active[i]) {
            FN(member_lanes)(low, high, s->L, s->lane_width, s->center, &lane_first[i],
                             &lane_last[i]);
        } else {
            lane_first[i] = lane_last[i] = -1;
        }
        key[i] = x_n[i];
    }
    int64_t *lead_n = s->leader_next + o, *order = s->order + o;
    uint8_t *has_n = s->has_leader_next + o, *hit = s->collided + o;
    for (int64_t i = 0; i < N; i++) {
        hit[i] = 0;
        order[i] = s->order_start[o + i];
    }
    /* crossings within the step, in lanes shared at its start or its end (swept_collisions) */
    FN(sort_order)(N, key_start, order);
    if (FN(any_crossing)(N, order, end, s->ring, s->ring_length)) {
        if (s->ring) {
            FN(crossed_in_ranks)(s, o, order, N, end, first_start, last_start, lane_first,
                                 lane_last, hit, real_scratch);
        } else {
            /* On a straight road only the blocks of the start order whose ends are out of
             * order can hold a crossing: past a rank where every end so far is below every end
             * after it, nobody crossed anybody. key_start, no longer needed once the order is
             * sorted, holds the suffix minima of the ends; ties stay in one stretch. */
            REAL *suffix_min = key_start;
            suffix_min[N - 1] = end[order[N - 1]];
            for (int64_t r = N - 2; r >= 0; r--) {
                REAL e = end[order[r]];
                suffix_min[r] = e < suffix_min[r + 1] ? e : suffix_min[r + 1];
            }
            REAL prefix_max = -INFINITY;
            int64_t lo = 0;
            for (int64_t r = 0; r < N; r++) {
                REAL e = end[order[r]];
                prefix_max = e > prefix_max ? e : prefix_max;
                if (r + 1 < N && !(prefix_max < suffix_min[r + 1])) continue;
                if (r > lo)
                    FN(crossed_in_ranks)(s, o, order + lo, r - lo + 1, end, first_start,
                                         last_start, lane_first, lane_last, hit, real_scratch);
                lo = r + 1;
            }
        }
    }
    FN(find_leaders_world)(N, s->L, key, lane_first, lane_last, s->ring, order, lead_n, has_n,
                           scratch);
    for (int64_t i = 0; i < N; i++) {
        /* overlapping the new leader (box_collisions) */
        if (has_n[i]) {
            int64_t j = lead_n[i];
            if (FN(gap)(i, j, x_n, rear_n, front_n, s->ring_length, s->ring) < 0) hit[i] = hit[j] = 1;
        }
        /* reached the old leader within the step while still sharing a lane (swept_collisions) */
        if (has_lead[i]) {
            int64_t j = lead[i];
            int shared = lane_first[i] >= 0 && lane_first[j] >= 0 &&
                         lane_first[i] <= lane_last[j] && lane_first[j] <= lane_last[i];
            if (shared && gap[i] - (moved[i] - moved[j]) < 0) hit[i] = hit[j] = 1;
        }
    }
}


typedef struct {
    /* gradients of the step's outputs, [B, N] each */
    const REAL *x_next, *y_next, *v_next, *heading_next, *acceleration;
    /* gradients of its inputs, [B, N] each, zeroed by the caller; NULL where not wanted */
    REAL *x, *y, *v, *heading, *length, *width, *av_acceleration, *av_steering;
    REAL *v0, *T, *a, *b, *delta, *s0;
} FN(Grads);

static inline DT_DEVICE REAL FN(sign)(REAL value) { return (REAL)((value > 0) - (value < 0)); }

/* d(rear - x)/d(len, wid, heading) of a body, and d(front - x)/d(...): the overhangs that enter
 * the gap (state.longitudinal_extent). */
static inline DT_DEVICE void FN(overhang_grads)(REAL len, REAL wid, REAL c, REAL sn, REAL sign_front,
                                      REAL *d_len, REAL *d_wid, REAL *d_h) {
    /* rear - x = -len c / 2 - (len |c| + wid |s|) / 2; front - x = -len c / 2 + (...) / 2 */
    REAL half = (REAL)0.5 * sign_front;
    *d_len = (REAL)-0.5 * c + half * FABS(c);
    *d_wid = half * FABS(sn);
    REAL d_c = (REAL)-0.5 * len + half * len * FN(sign)(c);
    REAL d_s = half * wid * FN(sign)(sn);
    *d_h = d_c * -sn + d_s * c;
}

/* The vector-Jacobian product of one world's step (the discrete leader relations fixed), in
 * the reverse order of step_world; torch's conventions at kinks (relu, clamp_min, abs). */
static DT_DEVICE void FN(step_world_backward)(const FN(Step) * s, const FN(Grads) * g, int64_t b,
                                    REAL *rs) {
    const int64_t N = s->N, o = b * N;
    const REAL *x = s->x + o, *v = s->v + o, *h = s->heading + o;
    const REAL *len = s->length + o, *wid = s->width + o;
    const uint8_t *is_av = s->is_av + o, *active = s->active + o;
    const int64_t *lead = s->leader + o;
    const uint8_t *has_lead = s->has_leader + o;
    REAL *cos_h = rs, *sin_h = rs + N, *rear = rs + 2 * N, *front = rs + 3 * N;
    for (int64_t i = 0; i < N; i++) {
        FN(cos_sin)(h[i], &cos_h[i], &sin_h[i]);
        FN(extent_x)(x[i], len[i], wid[i], cos_h[i], sin_h[i], &rear[i], &front[i]);
    }
    /* Gradients nobody asked for go to a scratch row (4 N .. 5 N of rs) where unconditional
     * accumulation is cheaper than a branch; parameters and sizes are skipped instead. */
    REAL *sink = rs + 4 * N;
    REAL *gx = g->x ? g->x + o : sink, *gy = g->y ? g->y + o : sink;
    REAL *gv = g->v ? g->v + o : sink, *gh = g->heading ? g->heading + o : sink;
    REAL *glen = g->length ? g->length + o : NULL, *gwid = g->width ? g->width + o : NULL;
    const REAL dt = s->dt;
    for (int64_t i = 0; i < N; i++) {
        const REAL gxn = g->x_next[o + i], gyn = g->y_next[o + i];
        const REAL gvn = g->v_next[o + i], ghn = g->heading_next[o + i];
        if (!active[i]) {
            gx[i] += gxn;
            gy[i] += gyn;
            gv[i] += gvn;
            gh[i] += ghn;
            continue;
        }
        /* forward, again */
        int64_t j = lead[i];
        REAL gap = FN(gap)(i, j, x, rear, front, s->ring_length, s->ring);
        REAL v0 = FN(param_at)(&s->v0, b, i), T = FN(param_at)(&s->T, b, i);
        REAL a = FN(param_at)(&s->a, b, i), bb = FN(param_at)(&s->b, b, i);
        REAL delta = FN(param_at)(&s->delta, b, i), s0 = FN(param_at)(&s->s0, b, i);
        REAL ratio_v = v[i] / v0;
        REAL power = FN(power)(ratio_v, delta);
        REAL free_road = (REAL)1.0 - power;
        REAL v_lead = 0, root = 0, D = 0, approach = 0, desired = 0, clamped = 0, ratio = 0;
        REAL interaction = 0;
        if (has_lead[i]) {
            v_lead = v[j] * cos_h[j];
            root = SQRT(a * bb);
            D = (REAL)2.0 * root;
            approach = v[i] * T + v[i] * (v[i] - v_lead) / D;
            desired = s0 + (approach > 0 ? approach : 0);
            clamped = gap > s->min_gap ? gap : s->min_gap;
            ratio = desired / clamped;
            interaction = ratio * ratio;
        }
        REAL human = a * (free_road - interaction);
        REAL acc = is_av[i] ? s->av_acceleration[o + i] : human;
        REAL vn = v[i] + acc * dt;
        vn = vn > 0 ? vn : 0;
        REAL hn = h[i], tan_st = 0, yaw = 0, wheelbase = 0;
        if (is_av[i]) {
            tan_st = TAN(s->av_steering[o + i]);
            wheelbase = s->wheelbase_ratio * len[i];
            yaw = vn * tan_st / wheelbase;
            hn = h[i] + yaw * dt;
        }
        REAL cn, sn;
        FN(cos_sin)(hn, &cn, &sn);
        /* x' = wrap(x + vn cos(hn) dt), y' = y + vn sin(hn) dt */
        gx[i] += gxn;
        gy[i] += gyn;
        REAL g_vn = gvn + gxn * cn * dt + gyn * sn * dt;
        REAL g_hn = ghn - gxn * vn * sn * dt + gyn * vn * cn * dt;
        gh[i] += g_hn;
        if (is_av[i]) {
            g_vn += g_hn * dt * tan_st / wheelbase;
            if (g->av_steering)
                g->av_steering[o + i] +=
                    g_hn * dt * vn * ((REAL)1.0 + tan_st * tan_st) / wheelbase;
            if (glen) glen[i] += g_hn * dt * -yaw / len[i];
        }
        /* vn = relu(v + acc dt) */
        REAL g_pre = vn > 0 ? g_vn : 0;
        gv[i] += g_pre;
        REAL g_acc = g_pre * dt + g->acceleration[o + i];
        if (is_av[i]) {
            if (g->av_acceleration) g->av_acceleration[o + i] += g_acc;
            continue;
        }
        /* human = a (1 - (v / v0)^delta - interaction) */
        if (g->a) g->a[o + i] += g_acc * (free_road - interaction);
        REAL g_free = g_acc * a;
        REAL g_power = -g_free;
        REAL g_ratio_v = delta == 0 ? 0 : g_power * delta * FN(power)(ratio_v, delta - 1);
        gv[i] += g_ratio_v / v0;
        if (g->v0) g->v0[o + i] += -g_ratio_v * v[i] / (v0 * v0);
        if (g->delta && ratio_v > 0) g->delta[o + i] += g_power * power * LOG(ratio_v);
        if (!has_lead[i]) continue;
        /* interaction = (desired / max(gap, min_gap))^2 */
        REAL g_ratio = -g_free * (REAL)2.0 * ratio;
        REAL g_desired = g_ratio / clamped;
        REAL g_gap = gap >= s->min_gap ? -g_ratio * desired / (clamped * clamped) : 0;
        if (g->s0) g->s0[o + i] += g_desired;
        REAL g_approach = approach > 0 ? g_desired : 0;
        /* approach = v T + v (v - v_lead) / D, D = 2 sqrt(a b) */
        gv[i] += g_approach * (T + (v[i] - v_lead) / D + v[i] / D);
        if (g->T) g->T[o + i] += g_approach * v[i];
        REAL g_v_lead = -g_approach * v[i] / D;
        REAL g_D = -g_approach * v[i] * (v[i] - v_lead) / (D * D);
        if (g->a) g->a[o + i] += g_D * bb / root;
        if (g->b) g->b[o + i] += g_D * a / root;
        /* v_lead = v_j cos(h_j) */
        gv[j] += g_v_lead * cos_h[j];
        gh[j] += -g_v_lead * v[j] * sin_h[j];
        /* gap = (x_j - x_i) + (rear_j - x_j) - (front_i - x_i) */
        gx[j] += g_gap;
        gx[i] -= g_gap;
        REAL d_len, d_wid, d_h;
        FN(overhang_grads)(len[j], wid[j], cos_h[j], sin_h[j], -1, &d_len, &d_wid, &d_h);
        if (glen) glen[j] += g_gap * d_len;
        if (gwid) gwid[j] += g_gap * d_wid;
        gh[j] += g_gap * d_h;
        FN(overhang_grads)(len[i], wid[i], cos_h[i], sin_h[i], 1, &d_len, &d_wid, &d_h);
        if (glen) glen[i] -= g_gap * d_len;
        if (gwid) gwid[i] -= g_gap * d_wid;
        gh[i] -= g_gap * d_h;
    }
}

typedef struct {
    int64_t B, N, L;
    REAL lane_width;
    int center, ring;
    const REAL *x; /* front bumpers, already wrapped on a ring */
    const REAL *low_y, *high_y;
    const uint8_t *active;
    int64_t *order; /* in: a rank order to start from; out: repaired */
    int64_t *leader;
    uint8_t *has_leader;
} FN(Leaders);

/* Leaders of world b of a state (no step); scratch: 2 N + 2 L int64. */
static DT_DEVICE void FN(leaders_world)(const FN(Leaders) * q, int64_t b, int64_t *is) {
    const int64_t N = q->N, o = b * N;
    for (int64_t i = 0; i < N; i++) {
        if (q->active[o + i]) {
            FN(member_lanes)(q->low_y[o + i], q->high_y[o + i], q->L, q->lane_width, q->center,
                             &is[i], &is[N + i]);
        } else {
            is[i] = is[N + i] = -1;
        }
    }
    FN(find_leaders_world)(N, q->L, q->x + o, is, is + N, q->ring, q->order + o, q->leader + o,
                           q->has_leader + o, is + 2 * N);
}

/* Bytes of scratch one world needs for any of the three passes: int64 first, then REAL. */
static int64_t FN(world_scratch_bytes)(int64_t N, int64_t L) {
    int64_t step = (4 * N + 2 * L) * 8 + (9 * N + 2 * L) * (int64_t)sizeof(REAL);
    int64_t backward = 5 * N * (int64_t)sizeof(REAL), leaders = (2 * N + 2 * L) * 8;
    int64_t most = step > backward ? step : backward;
    most = most > leaders ? most : leaders;
    return (most + 7) / 8 * 8;
}

/* The int64 and REAL scratch of the step in one world's scratch block. */
static inline DT_DEVICE int64_t *FN(step_ints)(char *block) { return (int64_t *)block; }
static inline DT_DEVICE REAL *FN(step_reals)(char *block, int64_t N, int64_t L) {
    return (REAL *)(block + (4 * N + 2 * L) * 8);
}
