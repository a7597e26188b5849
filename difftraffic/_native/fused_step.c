/* The fused step for the CPU: built by difftraffic.fused with the system C compiler. */
#define DRIVERS "drivers_openmp.h"
#include "both_precisions.h"
