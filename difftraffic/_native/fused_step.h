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

#ifndef MAX_LANE_CHANGE_ANGLE
#define MAX_LANE_CHANGE_ANGLE 0.5 /* lane_change.MAX_LANE_CHANGE_ANGLE (rad) */
#define CENTRE_TOLERANCE 1e-4     /* lane_change.CENTRE_TOLERANCE (lane widths) */
#endif

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

/* MOBIL lane changes of the human drivers (difftraffic.lane_change). */
typedef struct {
    int on;
    FN(Param) politeness, threshold, b_safe, keep_right, duration;
    const uint8_t *enabled; /* [B, N] by its strides: drivers that change lanes */
    int64_t enabled_stride_b, enabled_stride_n;
    int8_t *started;  /* [B, N] the change started in the step: 1 left, -1 right, 0 none */
    uint8_t *arrived; /* [B, N] changes that reached their target lane's centre in the step */
} FN(Mobil);

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
    FN(Mobil) mobil; /* started and arrived: outputs of the step, inputs of its backward */
} FN(Step);

/* What the IDM (idm.idm_acceleration) needs of a follower whatever its leader: the parameters
 * of vehicle k of world b at speed v. */
typedef struct {
    REAL v, a, T, s0, two_root_ab, free_road;
} FN(Follower);

static inline DT_DEVICE FN(Follower) FN(follower)(const FN(Step) * s, int64_t b, int64_t k, REAL v) {
    FN(Follower) f;
    REAL v0 = FN(param_at)(&s->v0, b, k), delta = FN(param_at)(&s->delta, b, k);
    f.v = v;
    f.a = FN(param_at)(&s->a, b, k);
    f.T = FN(param_at)(&s->T, b, k);
    f.s0 = FN(param_at)(&s->s0, b, k);
    f.two_root_ab = (REAL)2.0 * SQRT(f.a * FN(param_at)(&s->b, b, k));
    f.free_road = (REAL)1.0 - FN(power)(v / v0, delta);
    return f;
}

/* The follower's IDM acceleration behind a leader driving v_lead along the road at `gap` (m, at
 * least min_gap); free road where !has_leader. */
static inline DT_DEVICE REAL FN(idm)(const FN(Follower) * f, REAL v_lead, REAL gap, int has_leader,
                                     REAL min_gap) {
    REAL interaction = 0;
    if (has_leader) {
        REAL approach = f->v * f->T + f->v * (f->v - v_lead) / f->two_root_ab;
        REAL desired = f->s0 + (approach > 0 ? approach : 0);
        REAL ratio = desired / (gap > min_gap ? gap : min_gap);
        interaction = ratio * ratio;
    }
    return f->a * (f->free_road - interaction);
}

/* ---- MOBIL lane changes (difftraffic.lane_change), formula by formula ---- */

static inline DT_DEVICE int64_t FN(clamp_lane)(REAL lane, int64_t L) {
    return lane < 0 ? 0 : (lane > (REAL)(L - 1) ? L - 1 : (int64_t)lane);
}

/* Road.nearest_lane */
static inline DT_DEVICE int64_t FN(nearest_lane)(REAL y, int64_t L, REAL w) {
    return FN(clamp_lane)(FLOOR(y / w), L);
}

/* The lane whose centre is next beyond y on `side` (1 left, -1 right), within the road, y within
 * CENTRE_TOLERANCE lane widths of a centre counting as on it (lane_change._target_centre); its
 * centre is (lane + 0.5) w. */
static inline DT_DEVICE int64_t FN(target_lane)(REAL y, REAL side, int64_t L, REAL w) {
    REAL position = y / w - (REAL)0.5;
    REAL tolerance = (REAL)CENTRE_TOLERANCE;
    return FN(clamp_lane)(side > 0 ? FLOOR(position + tolerance) + 1 : CEIL(position - tolerance) - 1,
                          L);
}

/* Whether vehicle i of world b is a human driver with lane changes enabled (an active one). */
static inline DT_DEVICE int FN(lane_changer)(const FN(Step) * s, int64_t b, int64_t i) {
    const FN(Mobil) *m = &s->mobil;
    int64_t k = b * s->N + i;
    return s->active[k] && !s->is_av[k] &&
           m->enabled[b * m->enabled_stride_b + i * m->enabled_stride_n];
}

/* Lanes [*first, *last] and lane t, which is next to them: a vehicle changing to lane t is a
 * member there too (lane_change.with_target_lanes). */
static inline DT_DEVICE void FN(with_lane)(int64_t t, int64_t *first, int64_t *last) {
    if (*first < 0 || t < *first) *first = t;
    if (*last < 0 || t > *last) *last = t;
}

/* The heading (rad, > 0) of a lane change started at speed v (start_lane_changes): asin(w /
 * (duration v)), at most the steepest turn the body allows (steepest_turn). */
static inline DT_DEVICE REAL FN(lane_change_angle)(const FN(Step) * s, int64_t b, int64_t i, REAL v,
                                                   REAL len, REAL wid) {
    /* scalar / tensor in torch is reciprocal(tensor) * scalar: the same roundings here */
    REAL sine = (REAL)1 / (FN(param_at)(&s->mobil.duration, b, i) * v) * s->lane_width;
    REAL theta = ASIN(sine < 1 ? sine : 1);
    REAL half_width = wid / 2;
    REAL reach = SQRT(len * len + half_width * half_width);
    REAL fits = (REAL)1 / reach * (s->lane_width / 2);
    REAL widest = ASIN(fits < 1 ? fits : 1) - ATAN2(half_width, len);
    widest = widest < (REAL)0.05 ? (REAL)0.05
                                 : (widest > (REAL)MAX_LANE_CHANGE_ANGLE ? (REAL)MAX_LANE_CHANGE_ANGLE
                                                                         : widest);
    return theta < widest ? theta : widest;
}

/* One world's rows of what MOBIL's hypothetical leader-follower pairs need. */
typedef struct {
    const REAL *x, *key, *rear, *front, *v, *cos_h; /* key: x wrapped on a ring */
    const FN(Follower) * drivers;                    /* every vehicle's IDM as a follower */
} FN(Geometry);

/* Gap from follower f's front to leader l's rear (lane_change._gap). */
static inline DT_DEVICE REAL FN(pair_gap)(const FN(Step) * s, const FN(Geometry) * g, int64_t f,
                                          int64_t l) {
    REAL distance = g->key[l] - g->key[f];
    if (s->ring) distance = FN(remainder)(distance, s->ring_length);
    return distance + (g->rear[l] - g->x[l]) - (g->front[f] - g->x[f]);
}

/* Acceleration of vehicle f behind leader l at `gap` (free road where !has)
 * (lane_change._acceleration on a road without lane ends). */
static inline DT_DEVICE REAL FN(acc_at)(const FN(Step) * s, const FN(Geometry) * g, int64_t f,
                                        int64_t l, int has, REAL gap) {
    REAL v_lead = has ? g->v[l] * g->cos_h[l] : 0;
    return FN(idm)(&g->drivers[f], v_lead, gap, has, s->min_gap);
}

static inline DT_DEVICE REAL FN(pair_acc)(const FN(Step) * s, const FN(Geometry) * g, int64_t f,
                                          int64_t l, int has) {
    return FN(acc_at)(s, g, f, l, has, has ? FN(pair_gap)(s, g, f, l) : 0);
}

/* What a move of vehicle i either way shares: its acceleration in its own lane and the gain of
 * its old follower there (lane_change._judge's own_before and old_gain). */
typedef struct {
    int known;
    REAL own_before, old_gain;
} FN(OwnLane);

/* The nearest members ahead of (behind) every vehicle i in lanes lane[i] - 1, lane[i] and
 * lane[i] + 1 (lane_change.lane_neighbors): ahead[3 i + 1 + d] for lane lane[i] + d, -1 for none
 * or a lane off the road. Members of lane l: the vehicles with first <= l <= last; (x, index)
 * order (order), cyclic on a ring, never i itself. ahead or behind NULL: not wanted.
 * seen: L int64. */
static DT_DEVICE void FN(window_neighbors)(int64_t N, int64_t L, const int64_t *order,
                                           const int64_t *lane, const int64_t *first,
                                           const int64_t *last, int ring, int64_t *ahead,
                                           int64_t *behind, int64_t *seen) {
    for (int pass = 0; pass < 2; pass++) {
        int64_t *out = pass ? ahead : behind;
        if (!out) continue;
        for (int64_t l = 0; l < L; l++) seen[l] = -1;
        for (int64_t q = 0; q < N; q++) {
            int64_t i = order[pass ? N - 1 - q : q];
            for (int64_t d = 0; d < 3; d++) {
                int64_t l = lane[i] + d - 1;
                out[3 * i + d] = l >= 0 && l < L ? seen[l] : -1;
            }
            for (int64_t l = first[i]; l >= 0 && l <= last[i]; l++) seen[l] = i;
        }
        if (!ring) continue;
        /* seen holds each lane's last (first) member: who is behind (ahead of) the first
         * (last) ones round the ring */
        for (int64_t i = 0; i < N; i++) {
            for (int64_t d = 0; d < 3; d++) {
                int64_t l = lane[i] + d - 1;
                if (l >= 0 && l < L && out[3 * i + d] < 0 && seen[l] != i) out[3 * i + d] = seen[l];
            }
        }
    }
}

/* MOBIL's verdict on vehicle i moving d (1 left, -1 right) to lane lane[i] + d with the lane
 * neighbours ahead and behind (lane_change._judge): whether the target lane exists, the move
 * is safe and its incentive, in *gain where it is safe, is positive. */
static DT_DEVICE int FN(mobil_move)(const FN(Step) * s, const FN(Geometry) * g, int64_t b, int64_t i,
                                    int64_t d, const int64_t *lane, const int64_t *ahead,
                                    const int64_t *behind, FN(OwnLane) * own, REAL *gain) {
    int64_t t = lane[i] + d;
    if (t < 0 || t >= s->L) return 0;
    int64_t new_leader = ahead[3 * i + 1 + d], new_follower = behind[3 * i + 1 + d];
    int has_new_leader = new_leader >= 0, has_new = new_follower >= 0;
    REAL gap_ahead = has_new_leader ? FN(pair_gap)(s, g, i, new_leader) : 0;
    REAL gap_behind = has_new ? FN(pair_gap)(s, g, new_follower, i) : 0;
    if ((has_new_leader && !(gap_ahead > 0)) || (has_new && !(gap_behind > 0))) return 0;
    REAL new_gain = 0;
    if (has_new) {
        REAL new_after = FN(acc_at)(s, g, new_follower, i, 1, gap_behind);
        if (!(new_after >= -FN(param_at)(&s->mobil.b_safe, b, i))) return 0;
        new_gain = new_after - FN(pair_acc)(s, g, new_follower, new_leader, has_new_leader);
    }
    if (!own->known) {
        int64_t leader = ahead[3 * i + 1], old_follower = behind[3 * i + 1];
        own->known = 1;
        own->own_before = FN(pair_acc)(s, g, i, leader, leader >= 0);
        own->old_gain = 0;
        if (old_follower >= 0)
            own->old_gain = FN(pair_acc)(s, g, old_follower, leader, leader >= 0) -
                            FN(pair_acc)(s, g, old_follower, i, 1);
    }
    REAL own_gain = FN(acc_at)(s, g, i, new_leader, has_new_leader, gap_ahead) - own->own_before;
    REAL old_gain = own->old_gain;
    REAL politeness = FN(param_at)(&s->mobil.politeness, b, i);
    REAL threshold = FN(param_at)(&s->mobil.threshold, b, i);
    REAL bias = (REAL)d * FN(param_at)(&s->mobil.keep_right, b, i);
    *gain = own_gain + politeness * (new_gain + old_gain) - threshold - bias;
    return *gain > 0;
}

/* Lanes [*first, *last] of vehicle k's body at the step's start (-1: none, for an inactive one),
 * k the vehicle's offset in the [B, N] arrays. */
static inline DT_DEVICE void FN(start_lanes)(const FN(Step) * s, int64_t k, int64_t *first,
                                             int64_t *last) {
    *first = *last = -1;
    if (!s->active[k]) return;
    REAL c, sn, low, high;
    FN(cos_sin)(s->heading[k], &c, &sn);
    FN(extent_y)(s->y[k], s->length[k], s->width[k], c, sn, &low, &high);
    FN(member_lanes)(low, high, s->L, s->lane_width, s->center, first, last);
}

/* The lane change every human driver with MOBIL starts in the step (lane_change.mobil_directions)
 * into s->mobil.started of world b: judged in parallel on the lanes at the step's start (drivers
 * changing lane members of their target lanes too), then again as if decided one after another,
 * moves to the left before moves to the right and front to back, each with the moves decided
 * before it in place; a move that no longer passes is dropped. order: (x, index) ranks of the
 * start; is: 11 N + L int64. */
static DT_DEVICE void FN(mobil_world)(const FN(Step) * s, const FN(Geometry) * g, int64_t b,
                                      const int64_t *order, int64_t *is) {
    const int64_t N = s->N, L = s->L, o = b * N;
    const REAL w = s->lane_width;
    int8_t *started = s->mobil.started + o;
    uint8_t *kept = s->mobil.arrived + o; /* borrowed until the motion writes it */
    int64_t *ahead = is, *behind = is + 3 * N, *lane = is + 6 * N, *first = is + 7 * N;
    int64_t *last = is + 8 * N, *intent_first = is + 9 * N, *intent_last = is + 10 * N;
    int64_t *seen = is + 11 * N;
    for (int64_t i = 0; i < N; i++) {
        REAL y = s->y[o + i], h = s->heading[o + i];
        started[i] = 0;
        lane[i] = FN(nearest_lane)(y, L, w);
        FN(start_lanes)(s, o + i, &intent_first[i], &intent_last[i]);
        if (h != 0 && FN(lane_changer)(s, b, i))
            FN(with_lane)(FN(target_lane)(y, h > 0 ? 1 : -1, L, w), &intent_first[i],
                          &intent_last[i]);
    }
    FN(window_neighbors)(N, L, order, lane, intent_first, intent_last, s->ring, ahead, behind, seen);
    int any = 0;
    for (int64_t i = 0; i < N; i++) {
        if (s->heading[o + i] != 0 || !FN(lane_changer)(s, b, i)) continue;
        REAL left_gain = 0, right_gain = 0;
        FN(OwnLane) own = {0};
        int left = FN(mobil_move)(s, g, b, i, 1, lane, ahead, behind, &own, &left_gain);
        int right = FN(mobil_move)(s, g, b, i, -1, lane, ahead, behind, &own, &right_gain);
        left = left && (!right || left_gain >= right_gain);
        right = right && !left;
        started[i] = (int8_t)(left - right);
        any |= left | right;
    }
    if (!any) return; /* nobody moves: most steps */
    REAL gain;
    FN(OwnLane) own;
    /* moves to the left: those ahead with the moves to the left in place, behind without */
    for (int64_t i = 0; i < N; i++) {
        first[i] = intent_first[i];
        last[i] = intent_last[i];
        if (started[i] == 1) FN(with_lane)(lane[i] + 1, &first[i], &last[i]);
    }
    FN(window_neighbors)(N, L, order, lane, first, last, s->ring, ahead, NULL, seen);
    for (int64_t i = 0; i < N; i++)
        if (started[i] == 1) {
            own.known = 0;
            kept[i] = (uint8_t)FN(mobil_move)(s, g, b, i, 1, lane, ahead, behind, &own, &gain);
        }
    /* moves to the right: those ahead with every move in place, behind with those to the left */
    FN(window_neighbors)(N, L, order, lane, first, last, s->ring, NULL, behind, seen);
    for (int64_t i = 0; i < N; i++)
        if (started[i] == -1) FN(with_lane)(lane[i] - 1, &first[i], &last[i]);
    FN(window_neighbors)(N, L, order, lane, first, last, s->ring, ahead, NULL, seen);
    for (int64_t i = 0; i < N; i++)
        if (started[i] == -1) {
            own.known = 0;
            kept[i] = (uint8_t)FN(mobil_move)(s, g, b, i, -1, lane, ahead, behind, &own, &gain);
        }
    for (int64_t i = 0; i < N; i++)
        if (started[i] && !kept[i]) started[i] = 0;
}

/* The start lanes of the `count` vehicles of ranks order[0 .. count) of world offset o, then
 * crossed_fronts among them, in the lanes they shared at the step's start and at its end. */
static DT_DEVICE void FN(crossed_in_ranks)(const FN(Step) * s, int64_t o, const int64_t *order,
                                 int64_t count, const REAL *end, int64_t *first_start,
                                 int64_t *last_start, const int64_t *lane_first,
                                 const int64_t *lane_last, uint8_t *hit, REAL *scratch) {
    for (int64_t r = 0; r < count; r++) {
        int64_t i = order[r];
        FN(start_lanes)(s, o + i, &first_start[i], &last_start[i]);
    }
    FN(crossed_fronts)(count, s->L, order, end, first_start, last_start, s->ring, s->ring_length,
                       hit, scratch);
    FN(crossed_fronts)(count, s->L, order, end, lane_first, lane_last, s->ring, s->ring_length,
                       hit, scratch);
}

/* Scratch per world: rear, front, rear_next, front_next, key, gap, moved, key_start, end
 * (9 N REAL) and 2 L REAL; lane_first, lane_last, their values at the start (4 N int64) and
 * 2 L int64; with MOBIL 11 N + L int64 and N Followers more (step_int_count). */
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
    int64_t *lead_n = s->leader_next + o, *order = s->order + o;
    uint8_t *has_n = s->has_leader_next + o, *hit = s->collided + o;
    for (int64_t i = 0; i < N; i++) {
        hit[i] = 0;
        order[i] = s->order_start[o + i];
    }
    FN(sort_order)(N, key_start, order);
    const int mobil = s->mobil.on;
    const int8_t *started = mobil ? s->mobil.started + o : NULL;
    uint8_t *arrived = mobil ? s->mobil.arrived + o : NULL;
    FN(Follower) *drivers = NULL;
    if (mobil) {
        int64_t *mobil_ints = is + 4 * N + 2 * s->L;
        drivers = (FN(Follower) *)(mobil_ints + 11 * N + s->L);
        for (int64_t i = 0; i < N; i++) drivers[i] = FN(follower)(s, b, i, v[i]);
        FN(Geometry) geometry = {x, key_start, rear, front, v, cos_h, drivers};
        FN(mobil_world)(s, &geometry, b, order, mobil_ints);
    }
    REAL *x_n = s->x_next + o, *y_n = s->y_next + o, *v_n = s->v_next + o;
    REAL *h_n = s->heading_next + o, *acc = s->acceleration + o;
    /* v_lead needs every cos(h) first; x_next is written in a second loop. */
    for (int64_t i = 0; i < N; i++) {
        int64_t j = lead[i];
        REAL g = FN(gap)(i, j, x, rear, front, s->ring_length, s->ring);
        gap[i] = g;
        FN(Follower) follower = drivers ? drivers[i] : FN(follower)(s, b, i, v[i]);
        REAL human = FN(idm)(&follower, has_lead[i] ? v[j] * cos_h[j] : 0, g, has_lead[i],
                             s->min_gap);
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
        } else if (mobil && started[i]) {
            hn = (REAL)started[i] * FN(lane_change_angle)(s, b, i, v[i], len[i], wid[i]);
        }
        REAL c, sn;
        FN(cos_sin)(hn, &c, &sn);
        REAL m = vn * c * s->dt;
        REAL xn = x[i] + m;
        if (s->ring) xn = FN(remainder)(xn, s->ring_length);
        REAL yn = y[i] + vn * sn * s->dt;
        int changing = mobil && hn != 0 && FN(lane_changer)(s, b, i);
        if (mobil) arrived[i] = 0;
        if (changing) { /* on the target lane's centre: the change ends (finish_lane_changes) */
            REAL side = hn > 0 ? 1 : -1;
            REAL centre = ((REAL)FN(target_lane)(y[i], side, s->L, s->lane_width) + (REAL)0.5) *
                          s->lane_width;
            if (side * (yn - centre) >= 0) {
                yn = centre;
                hn = 0;
                c = 1;
                sn = 0;
                changing = 0;
                arrived[i] = 1;
            }
        }
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
        if (changing)
            FN(with_lane)(FN(target_lane)(y_n[i], hn > 0 ? 1 : -1, s->L, s->lane_width),
                          &lane_first[i], &lane_last[i]);
        key[i] = x_n[i];
    }
    /* crossings within the step, in lanes shared at its start or its end (swept_collisions) */
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
    const int8_t *started = s->mobil.on ? s->mobil.started + o : NULL;
    const uint8_t *arrived = s->mobil.on ? s->mobil.arrived + o : NULL;
    for (int64_t i = 0; i < N; i++) {
        /* a lane change that ended put y on the lane centre and the heading to 0: constants */
        const int ended = arrived && arrived[i];
        const REAL gxn = g->x_next[o + i], gyn = ended ? 0 : g->y_next[o + i];
        const REAL gvn = g->v_next[o + i], ghn = ended ? 0 : g->heading_next[o + i];
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
        /* a lane change's start heading is computed on detached values: a constant */
        const int turned = started && started[i];
        if (turned) hn = (REAL)started[i] * FN(lane_change_angle)(s, b, i, v[i], len[i], wid[i]);
        REAL cn, sn;
        FN(cos_sin)(hn, &cn, &sn);
        /* x' = wrap(x + vn cos(hn) dt), y' = y + vn sin(hn) dt */
        gx[i] += gxn;
        gy[i] += gyn;
        REAL g_vn = gvn + gxn * cn * dt + gyn * sn * dt;
        REAL g_hn = ghn - gxn * vn * sn * dt + gyn * vn * cn * dt;
        if (!turned) gh[i] += g_hn;
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

/* int64 scratch of the step: 4 N + 2 L; with MOBIL 11 N + L more, then room for N Followers. */
static inline DT_HOST_DEVICE int64_t FN(step_int_count)(int64_t N, int64_t L, int mobil) {
    int64_t followers = (N * (int64_t)sizeof(FN(Follower)) + 7) / 8;
    return 4 * N + 2 * L + (mobil ? 11 * N + L + followers : 0);
}

/* Bytes of scratch one world needs for any of the three passes: int64 first, then REAL. */
static int64_t FN(world_scratch_bytes)(int64_t N, int64_t L, int mobil) {
    int64_t step = FN(step_int_count)(N, L, mobil) * 8 + (9 * N + 2 * L) * (int64_t)sizeof(REAL);
    int64_t backward = 5 * N * (int64_t)sizeof(REAL), leaders = (2 * N + 2 * L) * 8;
    int64_t most = step > backward ? step : backward;
    most = most > leaders ? most : leaders;
    return (most + 7) / 8 * 8;
}

/* The int64 and REAL scratch of the step in one world's scratch block. */
static inline DT_DEVICE int64_t *FN(step_ints)(char *block) { return (int64_t *)block; }
static inline DT_DEVICE REAL *FN(step_reals)(char *block, int64_t N, int64_t L, int mobil) {
    return (REAL *)(block + FN(step_int_count)(N, L, mobil) * 8);
}
