// A parallel region on either OpenMP's pool or on threads that live for this call only.
//
// Why both: after a parallel region, libgomp's workers spin for a few milliseconds waiting for the
// next one (GOMP_SPINCOUNT). That is what torch's own ops want, so kernels that run between torch
// ops use OpenMP. But when the next work belongs to another thread pool (ONNX Runtime running the
// Segmenter's convolutions), the spinning workers hold the cores it needs: on a 2-core machine an
// ONNX Runtime run started right after an OpenMP region took ~10 % longer. Threads of our own exit
// when the region ends, and cost one thread start (tens of microseconds) per call.
#pragma once
#include <omp.h>

#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace fastseg {

// Calls body(thread_index) once on each of `threads` threads (the caller is index 0) and returns
// when all have finished. An exception thrown by any thread is rethrown here, after the join.
template <typename Body>
void parallel_region(int threads, bool own_threads, Body&& body) {
  if (threads <= 1) {
    body(0);
    return;
  }
  // An exception must not leave a thread's body: out of an OpenMP region it ends the process
  // (std::terminate), out of a std::thread too. The first one is kept and rethrown after the join.
  std::exception_ptr error;
  std::mutex error_mutex;
  auto guarded = [&](int index) {
    try {
      body(index);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
    }
  };
  if (!own_threads) {
#pragma omp parallel num_threads(threads)
    guarded(omp_get_thread_num());
    if (error) std::rethrow_exception(error);
    return;
  }
  std::vector<std::thread> workers;
  workers.reserve(threads - 1);
  for (int i = 1; i < threads; ++i) workers.emplace_back(guarded, i);
  guarded(0);
  for (auto& w : workers) w.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace fastseg
