// Shared by the CUDA sources: checked calls that turn failures into a dsv4_status naming
// the op, and small device helpers. C-style CUDA: extern "C" launchers, templates only for
// tile sizes.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#include "base/status.h"
#include "cuda/device.h"

// Runs a CUDA runtime call; on failure returns from the enclosing function with the status.
#define DSV4_CUDA_TRY(call, op) DSV4_TRY(dsv4_cuda_check((call), (op)))
// After a kernel launch: reports launch-configuration errors (not asynchronous faults).
#define DSV4_CUDA_LAUNCHED(op) DSV4_TRY(dsv4_cuda_check(cudaGetLastError(), (op)))
