// Shared host/device qualifiers: kernel math written once, compiled by g++ (CPU build, tested here)
// and by nvcc (CUDA build).
#pragma once

#if defined(__CUDACC__)
#define FS_HOST_DEVICE __host__ __device__
#define FS_DEVICE __device__
#else
#define FS_HOST_DEVICE
#define FS_DEVICE
#endif
