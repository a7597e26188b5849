/* The fused step in float32 and float64; see fused_step.h. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define REAL float
#define SUFFIX _f32
#define FMOD fmodf
#define FLOOR floorf
#define FABS fabsf
#define COS cosf
#define SIN sinf
#define TAN tanf
#define POW powf
#define SQRT sqrtf
#define LOG logf
#include "fused_step.h"
#undef REAL
#undef SUFFIX
#undef FMOD
#undef FLOOR
#undef FABS
#undef COS
#undef SIN
#undef TAN
#undef POW
#undef SQRT
#undef LOG

#define REAL double
#define SUFFIX _f64
#define FMOD fmod
#define FLOOR floor
#define FABS fabs
#define COS cos
#define SIN sin
#define TAN tan
#define POW pow
#define SQRT sqrt
#define LOG log
#include "fused_step.h"
