// Micro-benchmark behind two design choices in docs/reparameterize.md (single thread, float32):
//   1. element -> Philox counter mapping: one Philox call per element (tl.randn) vs one per four
//      elements (tl.randn4x);
//   2. backward: regenerate eps from (seed, offset) vs recover it from the saved output (z - mu);
//   3. the auto-vectorized per-counter loop vs the explicit-SIMD block generator (philox::randn4x_block).
// Build and run (from the repository root):
//   g++ -O3 -std=c++20 -fopenmp -fno-math-errno -fno-trapping-math -march=native -Icsrc benchmarks/native/philox_mapping.cpp \
//       -o /tmp/philox_mapping && OMP_NUM_THREADS=1 /tmp/philox_mapping
#include <chrono>
#include <cstdio>
#include <vector>

#include "common/philox.h"

using namespace gencore;

namespace {
constexpr int64_t kN = 1 << 22;
constexpr int64_t kBlock = 1024;

template <typename F>
double best_ns_per_element(F&& f) {
  double best = 1e30;
  for (int rep = 0; rep < 7; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    auto t1 = std::chrono::steady_clock::now();
    best = std::min(best, std::chrono::duration<double, std::nano>(t1 - t0).count() / kN);
  }
  return best;
}

void normals_per_element(uint64_t seed, float* out) {
#pragma omp simd
  for (int64_t i = 0; i < kN; ++i) {
    uint32_t r0, r1, r2, r3;
    philox::randint4x(seed, static_cast<uint64_t>(i), r0, r1, r2, r3);
    float n1, n2;
    philox::pair_uniform_to_normal(philox::uint_to_uniform_float(r0), philox::uint_to_uniform_float(r1), n1, n2);
    out[i] = n1;
  }
}

void normals_per_four(uint64_t seed, float* out) {
#pragma omp simd
  for (int64_t g = 0; g < kN / 4; ++g) {
    philox::randn4x(seed, static_cast<uint64_t>(g), out[4 * g], out[4 * g + 1], out[4 * g + 2], out[4 * g + 3]);
  }
}

void normals_block(uint64_t seed, float* out) { philox::randn4x_block(seed, 0, kN / 4, out); }

void backward_regenerate(uint64_t seed, const float* dz, const float* lv, float* dlv) {
  alignas(64) float eps[kBlock];
  for (int64_t i0 = 0; i0 < kN; i0 += kBlock) {
    philox::randn4x_block(seed, static_cast<uint64_t>(i0 / 4), kBlock / 4, eps);
#pragma omp simd
    for (int64_t k = 0; k < kBlock; ++k) {
      dlv[i0 + k] = 0.5f * dz[i0 + k] * eps[k] * exp_f32(0.5f * lv[i0 + k]);
    }
  }
}

void backward_recover(const float* dz, const float* z, const float* mu, float* dlv) {
#pragma omp simd
  for (int64_t i = 0; i < kN; ++i) dlv[i] = 0.5f * dz[i] * (z[i] - mu[i]);
}
}  // namespace

int main() {
  std::vector<float> a(kN), b(kN, 0.5f), c(kN, 0.25f), d(kN, 0.1f), e(kN);
  const double per_element = best_ns_per_element([&] { normals_per_element(42, a.data()); });
  const double per_four = best_ns_per_element([&] { normals_per_four(42, a.data()); });
  std::printf("normals, one Philox call per element: %.3f ns/element\n", per_element);
  std::printf("normals, one Philox call per 4 elements: %.3f ns/element (%.2fx faster)\n", per_four,
              per_element / per_four);
  const double block = best_ns_per_element([&] { normals_block(42, a.data()); });
  std::printf("normals, block generator (explicit SIMD Philox + Box-Muller loop): %.3f ns/element (%.2fx faster "
              "than the per-four loop)\n", block, per_four / block);
  const double regen = best_ns_per_element([&] { backward_regenerate(42, b.data(), c.data(), e.data()); });
  const double recover = best_ns_per_element([&] { backward_recover(b.data(), c.data(), d.data(), e.data()); });
  std::printf("dlogvar, regenerate eps (reads dz, logvar): %.3f ns/element\n", regen);
  std::printf("dlogvar, recover eps from z - mu (reads dz, z, mu): %.3f ns/element\n", recover);
  return 0;
}
