// Device memory of the CUDA kernels, taken from the caller's allocator. fastseg._C links no torch
// (ARCHITECTURE.md, P3), so Python hands it two functions, allocate(bytes) -> address and
// release(address), backed by torch's caching allocator on the stream the work is queued on
// (fastseg/_device_memory.py): fastseg's memory is then pooled and counted with torch's, a block
// given back is reused in stream order (no host synchronisation before releasing it), and a CUDA
// graph capture sees no cudaMalloc / cudaFree. Plain C++ (no CUDA header), so g++ builds it too.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <utility>

namespace fastseg {

struct DeviceAllocator {
  std::function<std::uintptr_t(std::size_t)> allocate;  // bytes -> device address; throws when it cannot
  std::function<void(std::uintptr_t)> release;          // gives a block back
};

// n elements of T from a DeviceAllocator, given back when the buffer goes out of scope: on every
// path, an exception half-way through building a lattice included.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceAllocator& mem, int64_t n) : mem_(&mem) {
    const auto bytes = sizeof(T) * static_cast<std::size_t>(std::max<int64_t>(n, 1));
    p_ = reinterpret_cast<T*>(mem.allocate(bytes));
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : mem_(o.mem_), p_(std::exchange(o.p_, nullptr)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      mem_ = o.mem_;
      p_ = std::exchange(o.p_, nullptr);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { reset(); }

  T* get() const { return p_; }
  void reset() noexcept {
    if (!p_) return;
    try {
      mem_->release(reinterpret_cast<std::uintptr_t>(p_));
    } catch (...) {  // a destructor must not throw; the caller's allocator reclaims what it still holds
    }
    p_ = nullptr;
  }

 private:
  const DeviceAllocator* mem_ = nullptr;
  T* p_ = nullptr;
};

}  // namespace fastseg
