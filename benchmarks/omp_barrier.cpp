// What one synchronization of two threads costs on this machine: libgomp's `#pragma omp barrier`,
// a barrier spinning on two atomics (the scheme of recurrent.cpp's SpinBarrier), and a fork and
// join of a parallel region per step (what the per-step loops did before experiment 14,
// docs/performance.md). Not part of the package; build and run by hand:
//
//     g++ -O2 -fopenmp benchmarks/omp_barrier.cpp -o /tmp/omp_barrier && /tmp/omp_barrier
#include <omp.h>

#include <atomic>
#include <chrono>
#include <cstdio>

static double ns_since(std::chrono::steady_clock::time_point t0, int n) {
  return std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() /
         n;
}

int main() {
  const int crossings = 200000, forks = 20000;
  auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(2)
  for (int i = 0; i < crossings; ++i) {
#pragma omp barrier
  }
  std::printf("omp barrier:  %.1f ns a crossing (%d crossings)\n", ns_since(t0, crossings),
              crossings);

  alignas(64) std::atomic<int> arrived{0};
  alignas(64) std::atomic<int> generation{0};
  t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(2)
  for (int i = 0; i < crossings; ++i) {
    const int g = generation.load(std::memory_order_relaxed);
    if (arrived.fetch_add(1, std::memory_order_acq_rel) == 1) {
      arrived.store(0, std::memory_order_relaxed);
      generation.store(g + 1, std::memory_order_release);
    } else {
      while (generation.load(std::memory_order_acquire) == g) __builtin_ia32_pause();
    }
  }
  std::printf("spin barrier: %.1f ns a crossing (%d crossings)\n", ns_since(t0, crossings),
              crossings);

  t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < forks; ++i) {
#pragma omp parallel num_threads(2)
    { asm volatile(""); }
  }
  std::printf("fork + join:  %.1f ns a region (%d regions)\n", ns_since(t0, forks), forks);
}
