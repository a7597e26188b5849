/* fused_step.h and the drivers named by DRIVERS, once with REAL = float (names ending _f32) and
 * once with REAL = double (_f64). DT_DEVICE qualifies the per-world functions, DT_HOST_DEVICE
 * those the host calls too (both empty in C). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#ifndef DT_DEVICE
#define DT_DEVICE
#endif
#ifndef DT_HOST_DEVICE
#define DT_HOST_DEVICE
#endif

#define REAL float
#define SUFFIX _f32
#define FMOD fmodf
#define FLOOR floorf
#define CEIL ceilf
#define FABS fabsf
#define COS cosf
#define SIN sinf
#define TAN tanf
#define ASIN asinf
#define ATAN2 atan2f
#define POW powf
#define SQRT sqrtf
#define LOG logf
#include "fused_step.h"
#include DRIVERS
#undef REAL
#undef SUFFIX
#undef FMOD
#undef FLOOR
#undef CEIL
#undef FABS
#undef COS
#undef SIN
#undef TAN
#undef ASIN
#undef ATAN2
#undef POW
#undef SQRT
#undef LOG

#define REAL double
#define SUFFIX _f64
#define FMOD fmod
#define FLOOR floor
#define CEIL ceil
#define FABS fabs
#define COS cos
#define SIN sin
#define TAN tan
#define ASIN asin
#define ATAN2 atan2
#define POW pow
#define SQRT sqrt
#define LOG log
#include "fused_step.h"
#include DRIVERS
