// Bit-identity check of the BatchNorm+LeakyReLU CPU kernels for bfloat16 and float16: prints a running hash
// after each dtype (the second covers both) of every output (y, the statistics, dx, grad_weight, grad_bias;
// forward in eval and training mode, backward from the input and from the output) over shapes that take
// every schedule (spans, runs, two-pass, channels-last rows, (N, C)), both layouts, pointer offsets of 0
// and 1 unit (bfloat16 read as pairs or not), slopes 0 / 0.2 / 1 / 1.5, and data with and without NaN,
// infinities, float32 subnormals, half overflow and tiny gradients. Two builds whose loops must agree print
// the same hashes;
// CI (.ci/run, AVX2 hosts) compares the AVX2 codec loops with the portable ones:
//   g++ -O3 -march=native -std=c++20 -fopenmp -fno-math-errno -fno-trapping-math [-DGENCORE_NO_AVX2_CODECS]
//     -Icsrc benchmarks/native/bn_half_bits.cpp csrc/cpu/batch_norm_leaky_relu.cpp csrc/cpu/stream_store.cpp
// NaN results are hashed without their sign (the sign of a NaN follows the operand order the compiler
// picked; GENCORE_BITS_NAN_SIGN=1 keeps it). GENCORE_BITS_VERBOSE=1 prints a hash per output and case.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "cpu/kernels.h"

using namespace gencore::cpu;

namespace {

uint64_t total = 1469598103934665603ull;  // FNV-1a over every output
std::string tag;

void mix(const char* what, const void* p, size_t n) {
  uint64_t one = 1469598103934665603ull;
  const auto* b = static_cast<const unsigned char*>(p);
  for (size_t i = 0; i < n; ++i) {
    total = (total ^ b[i]) * 1099511628211ull;
    one = (one ^ b[i]) * 1099511628211ull;
  }
  if (std::getenv("GENCORE_BITS_VERBOSE")) std::printf("%s %s %016llx\n", tag.c_str(), what, (unsigned long long)one);
}

bool keep_nan_sign() { return std::getenv("GENCORE_BITS_NAN_SIGN") != nullptr; }

template <typename S>
void mix_half(const char* what, S* p, int64_t m) {
  const uint16_t inf = std::is_same_v<S, float16> ? 0x7c00 : 0x7f80;
  if (!keep_nan_sign()) {
    for (int64_t i = 0; i < m; ++i) {
      if ((p[i].bits & 0x7fff) > inf) p[i].bits &= 0x7fff;
    }
  }
  mix(what, p, static_cast<size_t>(m) * sizeof(S));
}

void mix_float(const char* what, std::vector<float>& v) {
  if (!keep_nan_sign()) {
    for (float& f : v) {
      if (f != f) f = __builtin_nanf("");
    }
  }
  mix(what, v.data(), v.size() * sizeof(float));
}

template <typename S>
void one_case(int64_t n, int64_t c, int64_t s, bool cl, int64_t off, double slope, int seed, bool special) {
  const int64_t m = n * c * s;
  std::vector<S> xb(m + 2), yb(m + 2), dyb(m + 2), dxb(m + 2);
  S *x = xb.data() + off, *y = yb.data() + off, *dy = dyb.data() + off, *dx = dxb.data() + off;
  std::mt19937 g(seed);
  std::normal_distribution<float> nd;
  std::uniform_int_distribution<int> u(0, 60);
  const float odd_values[] = {__builtin_nanf(""), __builtin_inff(), -__builtin_inff(), 3e38f, -3e38f, 1e-40f,
                              -1e-40f, 65504.f, 70000.f, 6e-8f, -0.f};
  for (int64_t i = 0; i < m; ++i) {
    float v = nd(g) * 2.f + 0.3f;
    if (special && u(g) == 0) v = odd_values[u(g) % 11];
    x[i] = store<S>(v);
    float d = nd(g);
    if (special && u(g) == 0) d = odd_values[u(g) % 11];
    if (special && u(g) == 1) d *= 1e-30f;  // tiny gradients: subnormal dx
    dy[i] = store<S>(d);
  }
  std::vector<float> w(c), b(c), mean(c), var(c), gw(c), gb(c);
  for (int64_t ch = 0; ch < c; ++ch) {
    w[ch] = nd(g);
    b[ch] = nd(g) * 0.5f;
  }
  for (int training = 0; training < 2; ++training) {
    if (!training) {
      for (int64_t ch = 0; ch < c; ++ch) {
        mean[ch] = nd(g) * 0.1f;
        var[ch] = 1.f + std::abs(nd(g));
      }
    }
    tag = std::to_string(n) + "x" + std::to_string(c) + "x" + std::to_string(s) + (cl ? " NSC" : " NCS") +
          " off" + std::to_string(off) + " slope " + std::to_string(slope) + (special ? " special" : "") +
          (training ? " train" : " eval");
    batch_norm_leaky_relu_forward<S>(x, y, w.data(), b.data(), mean.data(), var.data(), n, c, s, cl, training, 1e-5,
                                     slope);
    mix_half("y", y, m);
    mix_float("mean", mean);
    mix_float("var", var);
    for (int from_output = 0; from_output < (slope > 0 ? 2 : 1); ++from_output) {
      batch_norm_leaky_relu_backward<S>(dy, from_output ? y : x, from_output, w.data(), b.data(), mean.data(),
                                        var.data(), dx, gw.data(), gb.data(), n, c, s, cl, training, 1e-5, slope);
      mix_half(from_output ? "dx(from y)" : "dx", dx, m);
      mix_float("grad_weight", gw);
      mix_float("grad_bias", gb);
    }
  }
}

}  // namespace

int main() {
  const int64_t shapes[][3] = {{2, 3, 1},    {5, 4, 7},   {16, 32, 64}, {16, 64, 16}, {4, 8, 256},   {3, 5, 1025},
                               {20, 40, 64}, {8, 2, 4096}, {33, 17, 9}, {64, 128, 1}, {2, 1, 3000}, {17, 64, 36}};
  const double slopes[] = {0.0, 0.2, 1.0, 1.5};
  for (int dtype = 0; dtype < 2; ++dtype) {
    int seed = 0;
    for (const auto& sh : shapes) {
      for (int cl = 0; cl < 2; ++cl) {
        for (int64_t off = 0; off < 2; ++off) {
          for (double sl : slopes) {
            for (int sp = 0; sp < 2; ++sp) {
              if (dtype == 0) {
                one_case<bfloat16>(sh[0], sh[1], sh[2], cl, off, sl, ++seed, sp);
              } else {
                one_case<float16>(sh[0], sh[1], sh[2], cl, off, sl, ++seed, sp);
              }
            }
          }
        }
      }
    }
    std::printf("%s %016llx\n", dtype == 0 ? "bfloat16" : "float16", (unsigned long long)total);
  }
  return 0;
}
