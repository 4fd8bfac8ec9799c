// A parallel region on either OpenMP's pool or on fastseg's own pool of sleeping workers.
//
// Why both: after a parallel region, libgomp's workers spin for a few milliseconds waiting for the
// next one (GOMP_SPINCOUNT). That is what torch's own ops want, so kernels that run between torch
// ops use OpenMP. But when the next work belongs to another thread pool (ONNX Runtime running the
// Segmenter's convolutions), the spinning workers hold the cores it needs: on a 2-core machine an
// ONNX Runtime run started right after an OpenMP region took ~10 % longer. fastseg's own workers
// block on a condition variable as soon as a region ends, so they take no core between regions,
// and they are started once (on first use, as many as a region has asked for), not per call: a
// video loop's steady state starts no thread (`threads_started()` counts them for the tests).
//
// A worker's share is claimed before it runs, by the worker when it wakes or by the caller once
// its own share is done: on a busy machine a woken worker may wait a scheduler time slice for a
// core, and then the caller runs that share itself (for a region whose threads take tasks from a
// shared counter, it finds none left) instead of waiting for the worker to arrive. So the caller
// waits only for shares that are running.
//
// One region runs on the pool at a time; a region that finds the pool busy (another Python thread
// inside a kernel with the GIL released) runs on threads that live for that call only. A child
// process after fork() has none of its parent's workers, so it starts its own.
#pragma once
#include <omp.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace fastseg {

// Threads started for parallel regions outside OpenMP, since the process began.
inline std::atomic<int64_t>& threads_started() {
  static std::atomic<int64_t> count{0};
  return count;
}

class SleepingPool {
 public:
  // The process's pool; never destroyed, so that no worker waits on a destroyed condition variable
  // at exit (the workers are detached and end with the process).
  static SleepingPool& instance() {
    static SleepingPool* pool = new SleepingPool();
    return *pool;
  }

  // Runs task(i) for i in 1..threads-1 on the workers and task(0) on the caller; false (nothing
  // run) when another region holds the pool.
  bool try_run(int threads, const std::function<void(int)>& task) {
    std::unique_lock<std::mutex> region(region_, std::try_to_lock);
    if (!region.owns_lock()) return false;
    std::unique_lock<std::mutex> lock(m_);
    if (owner_ != getpid()) {  // forked: the workers listed belong to the parent
      owner_ = getpid();
      state_ = std::make_shared<State>();
      started_ = 0;
    }
    auto state = state_;
    while (started_ < threads - 1) start_worker(state, ++started_);
    state->task = &task;
    state->active = threads - 1;
    state->remaining = threads - 1;
    state->claimed.assign(threads, false);
    ++state->generation;
    lock.unlock();
    state->wake.notify_all();
    task(0);
    // the shares no worker has claimed yet are the caller's
    std::vector<int> late;
    lock.lock();
    for (int i = 1; i < threads; ++i) {
      if (state->claimed[i]) continue;
      state->claimed[i] = true;
      --state->remaining;
      late.push_back(i);
    }
    lock.unlock();
    for (int i : late) task(i);
    lock.lock();
    state->done.wait(lock, [&] { return state->remaining == 0; });
    state->task = nullptr;
    return true;
  }

 private:
  struct State {
    std::condition_variable wake, done;
    const std::function<void(int)>* task = nullptr;
    uint64_t generation = 0;
    int active = 0, remaining = 0;  // shares claimed by workers and not yet finished, + unclaimed ones
    std::vector<bool> claimed;      // per share of the current region
  };

  void start_worker(std::shared_ptr<State> state, int index) {
    ++threads_started();
    std::thread([this, state, index] {
      uint64_t seen = 0;
      std::unique_lock<std::mutex> lock(m_);
      for (;;) {
        state->wake.wait(lock, [&] { return state->generation != seen; });
        seen = state->generation;
        if (index > state->active || state->claimed[index]) continue;  // not in it, or run by the caller
        state->claimed[index] = true;
        const auto* task = state->task;
        lock.unlock();
        (*task)(index);
        lock.lock();
        if (--state->remaining == 0) state->done.notify_one();
      }
    }).detach();
  }

  std::mutex region_, m_;
  std::shared_ptr<State> state_ = std::make_shared<State>();
  int started_ = 0;
  pid_t owner_ = getpid();
};

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
  const std::function<void(int)> task = guarded;
  if (!SleepingPool::instance().try_run(threads, task)) {
    std::vector<std::thread> workers;
    workers.reserve(threads - 1);
    for (int i = 1; i < threads; ++i) {
      ++threads_started();
      workers.emplace_back(guarded, i);
    }
    guarded(0);
    for (auto& w : workers) w.join();
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace fastseg
