// BatchNorm + LeakyReLU on the CPU (DESIGN §3.1). Schedules (docs/batch_norm_leaky_relu.md):
//  - NCS layout, many channels: a task is a group of adjacent channels. When the group's slices fit in
//    half of L2 the statistics and the normalization (backward: both reductions and dx) run back to
//    back while the data is still cached, so memory sees one read and one write per element.
//  - NCS layout, few channels: each channel's N*S values are split into chunks so both cores work;
//    partial sums are combined per channel in chunk order, then a second parallel pass normalizes.
//  - NSC (channels-last) layout: row ranges are tasks; each task keeps per-channel partial sums and
//    the inner loop runs over channels (contiguous). Then one elementwise pass.
// Task counts depend only on the shape, never on the thread count, so results are deterministic.
// (bfloat16 results also depend on the data's 4-byte alignment: see with_storage_units.)
// Sums are taken in compute-type SIMD lanes over blocks of at most kBlock values, blocks are added in
// double; the variance uses sums shifted by one sample of the channel to avoid cancellation.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <new>
#include <type_traits>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/stream_store.h"

#if defined(__AVX512F__) || defined(__F16C__)
#include <immintrin.h>
#endif

// AVX2 builds (x86-64-v3: AVX2, FMA, F16C; no AVX-512) have codec loops of their own (avx2_vectors below).
// -DGENCORE_NO_AVX2_CODECS leaves them out: the reference build of the bit-identity check.
#if !defined(__AVX512F__) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__) && \
    !defined(GENCORE_NO_AVX2_CODECS)
#define GENCORE_AVX2_CODECS 1
#endif

namespace gencore::cpu {

namespace {

// Arrays the vector loops read next to the data (per-lane constants, lane accumulators, per-channel
// coefficients) start on a 64-byte line. With std::vector's 16-byte alignment three of four vector
// loads straddled two lines, which costs two loads: measured 2026-11-29 in L1, one thread, the span
// normalize loop took 0.18 ns per value with such arrays and 0.08 ns with aligned ones (dx: 0.40 -> 0.22).
template <typename T>
struct LineAllocator {
  using value_type = T;
  static constexpr std::align_val_t kLine{64};
  LineAllocator() = default;
  template <typename U>
  LineAllocator(const LineAllocator<U>&) noexcept {}
  T* allocate(size_t count) { return static_cast<T*>(::operator new(count * sizeof(T), kLine)); }
  void deallocate(T* p, size_t) noexcept { ::operator delete(p, kLine); }
  template <typename U>
  bool operator==(const LineAllocator<U>&) const noexcept { return true; }
};
template <typename T>
using LineVector = std::vector<T, LineAllocator<T>>;

constexpr int64_t kBlock = 2048;            // values per SIMD-lane partial sum
constexpr int64_t kRowBlock = 256;          // NSC rows per lane partial sum
constexpr int64_t kChunk = 16384;           // least values per task when a channel is split
constexpr int64_t kMaxTasks = 64;           // split small-C work into at most this many tasks
constexpr int64_t kChannelTasks = 32;       // at least this many channels: one task per channel
constexpr int64_t kL2Budget = 1 << 20;      // bytes of one channel's streams that stay cached (L2 2 MB)

constexpr int64_t kMinSpan = 1024;         // cached schedule: values per sample read contiguously
constexpr int64_t kMinGroups = 16;          // cached schedule: at least this many tasks when C allows

// Channels per task of the cached (L2-fused) NCS schedule, 0 when it does not apply. Adjacent channels
// are grouped so that each sample contributes one contiguous span of >= kMinSpan values: short runs
// (S = 8x8) at a stride of C*S defeat the prefetcher and the TLB. The group's slices must fit kL2Budget.
// s and m count storage units, so bfloat16 read as pairs gets spans of kMinSpan words (4 KiB, as float32)
// rather than values (2 KiB). Measured 2026-11-29 before pairs, bfloat16 64x128x32x32, two threads, two
// runs: 2-channel groups instead of 1 took the forward from 0.25-0.30 to 0.22-0.25 ns per value and the
// backward from 0.40-0.48 to 0.37-0.43 (other shapes within the noise).
int64_t channel_group(int64_t c, int64_t s, int64_t m, int64_t bytes_per_value) {
  const int64_t slice = m * bytes_per_value;
  if (c < kChannelTasks || slice > kL2Budget) return 0;
  int64_t k = std::max<int64_t>(1, (kMinSpan + s - 1) / s);
  k = std::min(k, kL2Budget / slice);
  k = std::min(k, std::max<int64_t>(1, c / kMinGroups));
  return std::max<int64_t>(k, 1);
}

int64_t chunks_per_channel(int64_t c, int64_t m) {
  if (c >= kChannelTasks) return 1;
  const int64_t by_size = (m + kChunk - 1) / kChunk;
  const int64_t by_tasks = (kMaxTasks + c - 1) / c;
  return std::max<int64_t>(1, std::min(by_size, by_tasks));
}

int64_t row_tasks(int64_t rows, int64_t c) {
  const int64_t by_size = (rows * c + kChunk - 1) / kChunk;
  return std::max<int64_t>(1, std::min({by_size, kMaxTasks, rows}));
}

// Calls f(offset, len) for each contiguous run of channel ch's values [j0, j1) (j = i * s + k) in NCS.
template <typename F>
inline void for_each_run(int64_t c, int64_t s, int64_t ch, int64_t j0, int64_t j1, F&& f) {
  int64_t j = j0;
  while (j < j1) {
    const int64_t i = j / s;
    const int64_t k = j - i * s;
    const int64_t len = std::min(s - k, j1 - j);
    f((i * c + ch) * s + k, len);
    j += len;
  }
}

// The per-run loops are separate functions: inlined into the OpenMP bodies, GCC 12 stops recognizing
// the 16-bit struct accesses of float16 as consecutive and leaves those loops scalar (measured 5x
// slower than bfloat16); a call per run (>= 64 values) costs nothing measurable for the other types.
// With AVX-512 they use 512-bit vectors: GCC's default for -march=sapphirerapids and similar is 256-bit,
// and the 16-bit conversions of bfloat16 / float16 take enough instructions per value that halving them
// pays (bfloat16 forward at 8x128x32x32 in L2: 1.17 -> 0.69 ns per value, measured 2026-11-28/29).
#if defined(__AVX512F__) && defined(__GNUC__) && !defined(__clang__)
#define GENCORE_RUN_LOOP __attribute__((noinline, target("prefer-vector-width=512")))
#else
#define GENCORE_RUN_LOOP __attribute__((noinline))
#endif

// Asks for the lines of [p, p + count) (at most its first 4 KiB) in the exclusive state (PREFETCHW), as
// a store would, but without waiting. The forward's normalize sweep calls it for the next sample's
// output span before writing the current one: each sample's span is a new page at a stride of C*S
// values, where the hardware prefetchers start cold, so every store of a line not yet cached waited for
// its read-for-ownership. Measured 2026-11-29 (one process, forward and backward alternating as in
// training, outputs below the streaming threshold, minimum of 40, spans of 4 KiB): forward 14-23 %
// faster on one thread at 8x256x32x32, 16x128x32x32, 32x64x32x32, 32x512x8x8, 64x256x8x8 and
// 64x512x8x8; on two threads 20-27 % at the 32x32 shapes and 64x512x8x8, even at the two smallest. The
// same for dx in the backward's sweep gained nothing (up to 10 % slower on two threads), so the
// backward does not do it. Streamed outputs must not: the line would be read.
template <typename S>
inline void prefetch_for_write(const S* p, int64_t count) {
  const char* b = reinterpret_cast<const char*>(p);
  // At most the first 4 KiB (the spans measured; a long span's later pages would arrive long before use).
  const int64_t bytes = std::min<int64_t>(count * static_cast<int64_t>(sizeof(S)), 4096);
  for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(b + o, 1, 3);
}

// The activation. slope == 0 is ReLU exactly: relu(-inf) = 0 and relu(NaN) = NaN (v * 0 would differ).
// Relu is a compile-time flag (with_relu picks the loop): as a run-time flag GCC kept both forms and
// merged their masks with the store's NaN test, about a dozen extra mask operations per vector.
template <bool Relu, typename C>
inline C activate(C v, C slope) {
  if constexpr (Relu) {
    return (v > C(0) || v != v) ? v : C(0);
  } else {
    return v > C(0) ? v : v * slope;  // NaN * slope is NaN
  }
}

// activate(x * a + b) as a function of (x, a, b), for units<S>::map.
template <bool Relu, typename C>
inline auto normalized(C slope) {
  return [slope](C x, C a, C b) { return activate<Relu>(x * a + b, slope); };
}

// Calls f(std::bool_constant<relu>{}).
template <typename F>
inline void with_relu(bool relu, F&& f) {
  if (relu) {
    f(std::true_type{});
  } else {
    f(std::false_type{});
  }
}

// The statistics sweeps read R rows at once (R runs of one channel from R samples, R spans, R
// channels-last rows), `stride` values apart: R streams of memory in flight instead of one, and for lane
// loops one load and store of the accumulators per R values. Measured 2026-11-29 against R = 1 (two
// threads, forward and backward alternating as in training, minimum of 30, two alternating runs of each
// build): spans (64x512x8x8, 64x256x16x16) forward 13-15 % and backward 4-13 % faster (one outlier run
// more), runs (64x128x32x32) forward 17-24 % and backward 11-19 %; 16x128x32x32 and 128x128x32x32
// within the noise. A float partial sum still covers at most kBlock values (each row kBlock / R).
constexpr int kStatRows = 4;

// Calls f(i, std::integral_constant<int, R>{}) for consecutive blocks of samples [i, i + R) covering
// [0, n), R in {kStatRows, 2, 1} as large as fits, no block crossing a multiple of `window` (the span
// schedule's flush points; window = n for none).
template <typename F>
inline void for_each_sample_block(int64_t n, int64_t window, F&& f) {
  for (int64_t i = 0, rows = 0; i < n; i += rows) {
    rows = std::min(n - i, window - i % window);
    if (rows >= kStatRows) {
      rows = kStatRows;
      f(i, std::integral_constant<int, kStatRows>{});
    } else if (rows >= 2) {
      rows = 2;
      f(i, std::integral_constant<int, 2>{});
    } else {
      f(i, std::integral_constant<int, 1>{});
    }
  }
}

// f(0) + f(1) + ... + f(N - 1) (f called with std::integral_constant indices) added as a balanced tree.
// The run loops' float accumulators are carried from one vector iteration to the next; adding their
// R * kValues terms one after another made a chain of that many dependent adds (and FMAs) per iteration,
// 4 cycles each, which bound the loop rather than its loads and arithmetic. Measured 2026-11-29 (standalone
// harness, two threads, forward and backward alternating, minimum of 60, two alternating runs): 4x64x32x32
// (in L2) forward 0.18-0.19 -> 0.16-0.17 ns per value for bfloat16 and 0.20 -> 0.18-0.19 for float32,
// float32 backward 0.25 -> 0.23; at 64x128x32x32, where memory bounds the sweeps, within the noise.
// The sums are those of the same values in another order, so the statistics can differ in the last bits.
template <int N, int First = 0, typename F>
inline auto tree_sum(F&& f) {
  if constexpr (N == 1) {
    return f(std::integral_constant<int, First>{});
  } else {
    return tree_sum<N / 2, First>(f) + tree_sum<N - N / 2, First + N / 2>(f);
  }
}

// ---- float16 loops through float32 tiles ----------------------------------------------------------------
// The loops below read float16 through load<float16> and write it through store<float16>, the portable
// conversions: about ten vector operations per 16 values each way, more than a statistics sweep's own
// work. Where the CPU has F16C (VCVTPH2PS / VCVTPS2PH: 8 halves per instruction, 16 with AVX-512) the
// float16 instantiations instead convert a tile of their input rows into float32 buffers in L1, run the
// float32 instantiation of the same loop on them and, for the normalize and dx loops, convert its float32
// results into the output: the same arithmetic in the same order. Both instructions are exact and equal
// load / store<float16> on every non-NaN value (checked 2026-11-29 on all 65536 halves and all 2^32 float32
// patterns); a NaN result would keep its payload, so 8 results with a NaN among them take store<float16>.
// - The statistics sweeps (sums; forward and backward) do this wherever F16C exists. A tile is one
//   partial-sum block of the run loops (kBlock / R values per row), so their float partial sums cover the
//   same values as before (in another lane order: the statistics can differ from the portable loops' in
//   the last bits). Measured 2026-11-29 (standalone harness, two threads, minimum of 100, two alternating
//   runs, AVX-512 build): 4x64x32x32 (in L2) forward 0.26 -> 0.18-0.20 ns per value, backward 0.43 ->
//   0.29-0.31; at the batch-64 DCGAN shapes, where memory bounds the sweeps, within the noise.
// - The normalize and dx loops do it only in builds with F16C but neither AVX-512 nor the AVX2 codecs
//   (F16Vectors, F16Vectors256 below: they convert in registers); the channels-last backward sums
//   (lane_bwd_sums, with eval mode's dx) wherever F16C exists. Outputs are bit-identical to the portable
//   loops'.
// Shorter loops keep the portable conversions: a call through the tiles costs a few dozen ns, which short
// rows (channels-last input with few channels: a call per row of C values) do not win back. Measured
// 2026-11-29, channels-last, one thread, minimum of 15-21, ns per value forward / backward, portable ->
// tiles: AVX2 build 64x3x32x32 7.9 / 11.4 -> 13.8 / 18.7, 64x16x16x16 3.1 / 6.8 -> 1.9 / 3.5, 64x256x16x16
// 2.7 / 6.5 -> 0.9 / 1.4; AVX-512 build (the portable loops vectorize 16 wide there) 64x32x16x16 0.88 /
// 1.55 -> 1.27 / 2.48, 64x128x16x16 0.78 / 1.23 -> 0.83 / 1.28, 64x256x16x16 0.67 / 0.98 -> 0.58 / 0.85.
// The lane sums and the outputs are bit-identical either way.
#if defined(__AVX512F__)
constexpr int64_t kMinTileLen = 256;
#else
constexpr int64_t kMinTileLen = 16;
#endif
template <typename S>
constexpr bool float16_sums_in_tiles() {
#if defined(__F16C__)
  return std::is_same_v<S, float16>;
#else
  return false;
#endif
}
template <typename S>
constexpr bool float16_outputs_in_tiles() {
#if defined(__F16C__) && !defined(__AVX512F__) && !defined(GENCORE_AVX2_CODECS)
  return std::is_same_v<S, float16>;
#else
  return false;
#endif
}

#if defined(__F16C__)
// K float32 vectors of 8 lanes.
template <int K>
struct M256s {
  __m256 v[K];
};

// float16, 8 units at a time: VCVTPH2PS / VCVTPS2PH (F16C), exact and equal to load / store<float16> on
// every non-NaN value (see F16Vectors); VCVTPS2PH would keep a NaN's payload, so a block with a NaN takes
// store<float16>. The float16 tiles below convert with it, and so do the AVX2 codec loops.
struct F16Vectors256 {
  using Unit = float16;
  static constexpr int kVectors = 1;
  static M256s<1> load(const float16* p) {
    return {_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))};
  }
  static void store(float16* q, const M256s<1>& v) {
    if (__builtin_expect(_mm256_movemask_ps(_mm256_cmp_ps(v.v[0], v.v[0], _CMP_UNORD_Q)) != 0, 0)) {
      alignas(32) float r[8];
      _mm256_store_ps(r, v.v[0]);
      for (int k = 0; k < 8; ++k) q[k] = cpu::store<float16>(r[k]);
      return;
    }
    const __m128i h = _mm256_cvtps_ph(v.v[0], _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q), h);
  }
};
#endif

// f(w, tile, j, count) for the tiles [j, j + count) of [0, len): w[q] holds R rows of stream q's values
// p[q] + r * stride + [j, j + count) as float32, row r at w[q] + r * tile.
template <int R, size_t Q, typename F>
void over_widened_tiles(const std::array<const float16*, Q>& p, int64_t stride, int64_t len, F&& f) {
  constexpr int64_t tile = kBlock / R;
  alignas(64) float buf[Q][R * tile];
  std::array<const float*, Q> w;
  for (size_t q = 0; q < Q; ++q) w[q] = buf[q];
  for (int64_t j = 0; j < len; j += tile) {
    const int64_t count = std::min(tile, len - j);
    for (size_t q = 0; q < Q; ++q) {
      for (int r = 0; r < R; ++r) {
        const float16* src = p[q] + r * stride + j;
        float* dst = buf[q] + r * tile;
        int64_t i = 0;
        // (The maskz form: plain _mm512_cvtph_ps starts from an "undefined" vector; see F16Vectors::load.)
#if defined(__AVX512F__)
        for (; i + 16 <= count; i += 16) {
          const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
          _mm512_store_ps(dst + i, _mm512_maskz_cvtph_ps(static_cast<__mmask16>(-1), h));
        }
#elif defined(__F16C__)
        for (; i + 8 <= count; i += 8) _mm256_store_ps(dst + i, F16Vectors256::load(src + i).v[0]);
#endif
        for (; i < count; ++i) dst[i] = load(src[i]);
      }
    }
    f(w, tile, j, count);
  }
}

// f(w, out, j, count) for the tiles of [0, len) as over_widened_tiles with one row; f writes count float32
// results to out, which go to q + [j, j + count) as float16.
template <size_t Q, typename F>
void over_float16_tiles(const std::array<const float16*, Q>& p, float16* q, int64_t len, F&& f) {
  alignas(64) float res[kBlock];
  over_widened_tiles<1>(p, 0, len, [&](const auto& w, int64_t, int64_t j, int64_t count) {
    f(w, res, j, count);
    float16* dst = q + j;
    int64_t i = 0;
#if defined(__F16C__)
    for (; i + 8 <= count; i += 8) F16Vectors256::store(dst + i, {_mm256_load_ps(res + i)});
#endif
    for (; i < count; ++i) dst[i] = store<float16>(res[i]);
  });
}

// Sums of (x - shift) over R runs p + r * stride, r < R, of len units each. (tree_sum expands the rows
// and values at compile time; the other loops over rows and values need `#pragma GCC unroll`: without it
// GCC 12 kept the nested loops of bfloat16_pair units and vectorized nothing.)
template <int R, typename S>
GENCORE_RUN_LOOP void shifted_sums(const S* p, int64_t stride, int64_t len, compute_t<S> shift, double& s1,
                                   double& s2) {
  if constexpr (float16_sums_in_tiles<S>()) {
    if (len >= kMinTileLen) {
      over_widened_tiles<R>(std::array{p}, stride, len, [&](const auto& w, int64_t tile, int64_t, int64_t count) {
        shifted_sums<R, float>(w[0], tile, count, shift, s1, s2);
      });
      return;
    }
  }
  using C = compute_t<S>;
  using U = units<S>;
  constexpr int64_t block = kBlock / (R * U::kValues);
  for (int64_t b0 = 0; b0 < len; b0 += block) {
    const int64_t e = std::min(len, b0 + block);
    C a1 = 0, a2 = 0;
#pragma omp simd reduction(+ : a1, a2)
    for (int64_t i = b0; i < e; ++i) {
      const auto d = [&](auto k) { return U::value(p[i + (k / U::kValues) * stride], k % U::kValues) - shift; };
      a1 += tree_sum<R * U::kValues>(d);
      a2 += tree_sum<R * U::kValues>([&](auto k) { const C v = d(k); return v * v; });
    }
    s1 += static_cast<double>(a1);
    s2 += static_cast<double>(a2);
  }
}

#if defined(__AVX512F__)
// ---- AVX-512 loops with exact hardware conversions (bfloat16 pairs, float16) ----------------------------
// The portable loops convert 16-bit values with integer and float operations, about half of their work.
// The loops below convert with one instruction instead, through a codec: load gives the float32 vectors
// of 16 storage units, store writes 16 units from them or returns false (nothing stored) for a block
// whose results that instruction would not encode as the portable store<S> does; the loop then stops
// and the caller's portable loop does the rest of the run exactly.

// K float32 vectors (a struct: std::array<__m512, K> drops the vector type's attributes, GCC warns).
template <int K>
struct M512s {
  __m512 v[K];
};

// float16: VCVTPH2PS / VCVTPS2PH (round to nearest even). Both match load / store<float16> bit for bit on
// every non-NaN value (checked 2026-11-29 on all 65536 halves and all 2^32 float32 patterns); NaN
// payloads differ, so a block with a NaN result goes to the portable loop.
struct F16Vectors {
  using Unit = float16;
  static constexpr int kVectors = 1;
  static M512s<1> load(const float16* p) {
    // The maskz forms with every lane set are the same instructions; the plain intrinsics of GCC 12 start
    // from an "undefined" vector and warn -Wmaybe-uninitialized wherever they are inlined.
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return {_mm512_maskz_cvtph_ps(static_cast<__mmask16>(-1), h)};
  }
  static bool store(float16* q, const M512s<1>& v) {
    // Any NaN (an unordered compare: AVX-512F alone, unlike VFPCLASSPS, which needs AVX512DQ).
    if (__builtin_expect(_mm512_cmp_ps_mask(v.v[0], v.v[0], _CMP_UNORD_Q) != 0, 0)) return false;
    const __m256i h =
        _mm512_maskz_cvtps_ph(static_cast<__mmask16>(-1), v.v[0], _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q), h);
    return true;
  }
};

#if defined(__AVX512BF16__) && defined(__AVX512BW__) && defined(__AVX512DQ__)
// bfloat16 pairs: a word's low value is word << 16, its high one word & 0xffff0000; VCVTNE2PS2BF16 rounds
// 32 results (nearest even, NaN kept quiet with its top payload bits, as store<bfloat16>) in one
// instruction where the portable rounding takes about seven per 16 values. It reads float32 subnormals
// as zero, so a block with a subnormal result goes to the portable loop.
struct Bf16PairVectors {
  using Unit = bfloat16_pair;
  static constexpr int kVectors = 2;
  static M512s<2> load(const bfloat16_pair* p) {
    const __m512i w = _mm512_loadu_si512(p);
    // (maskz form: see F16Vectors::load.)
    return {_mm512_castsi512_ps(_mm512_maskz_slli_epi32(static_cast<__mmask16>(-1), w, 16)),
            _mm512_castsi512_ps(_mm512_and_si512(w, _mm512_set1_epi32(static_cast<int>(0xffff0000u))))};
  }
  static bool store(bfloat16_pair* q, const M512s<2>& v) {
    // VCVTNE2PS2BF16(hi, lo) puts lo's 16 results in the low 256 bits, hi's above; pairs interleave them.
    const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23,
                                                7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    if (__builtin_expect((_mm512_fpclass_ps_mask(v.v[0], 0x20) | _mm512_fpclass_ps_mask(v.v[1], 0x20)) != 0, 0)) {
      return false;
    }
    _mm512_storeu_si512(q, _mm512_permutexvar_epi16(interleave, (__m512i)_mm512_cvtne2ps_pbh(v.v[1], v.v[0])));
    return true;
  }
};
#endif

// The codec of storage type S, void where there is none.
template <typename S> struct avx512_vectors { using type = void; };
template <> struct avx512_vectors<float16> { using type = F16Vectors; };
#if defined(__AVX512BF16__) && defined(__AVX512BW__) && defined(__AVX512DQ__)
template <> struct avx512_vectors<bfloat16_pair> { using type = Bf16PairVectors; };
#endif
template <typename S> using avx512_vectors_t = typename avx512_vectors<S>::type;

// The normalize loop: units [0, return value) of p into q, with per-lane (Lanes) or scalar constants a, b.
// Measured 2026-11-29 for bfloat16 pairs (standalone harness, two threads, forward ns per value, three
// alternating runs): 64x512x8x8 0.26/0.21/0.28 -> 0.20/0.21/0.20, 64x256x16x16 0.26/0.27/0.29 ->
// 0.22/0.20/0.25, 64x128x32x32 0.25/0.25/0.19 -> 0.17/0.24/0.31 (noisy host).
template <typename V, bool Relu, bool Lanes>
inline int64_t normalize_avx512(const typename V::Unit* p, typename V::Unit* q, int64_t len, const float* a,
                                const float* b, float slope) {
  const __m512 vslope = _mm512_set1_ps(slope), zero = _mm512_setzero_ps();
  const auto act = [&](__m512 v) {
    if constexpr (Relu) {  // v <= 0 -> 0; NaN stays (as activate<true>)
      return _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, zero, _CMP_LE_OQ), zero);
    } else {  // not v > 0 (NaN included) -> v * slope (as activate<false>)
      return _mm512_mask_mul_ps(v, _mm512_cmp_ps_mask(v, zero, _CMP_NGT_UQ), v, vslope);
    }
  };
  int64_t i = 0;
  for (; i + 16 <= len; i += 16) {
    M512s<V::kVectors> v = V::load(p + i);
    const __m512 va = Lanes ? _mm512_loadu_ps(a + i) : _mm512_set1_ps(*a);
    const __m512 vb = Lanes ? _mm512_loadu_ps(b + i) : _mm512_set1_ps(*b);
    for (__m512& e : v.v) e = act(_mm512_fmadd_ps(e, va, vb));
    if (!V::store(q + i, v)) break;
  }
  return i;
}
#endif

#if defined(GENCORE_AVX2_CODECS)
// ---- AVX2 loops with hardware conversions (bfloat16 pairs, float16) -------------------------------------
// The codec loops of AVX2 builds: load gives the float32 vectors of 8 storage units and store writes 8
// units from them. Unlike the AVX-512 loops these compute every unit of the run themselves: a block with
// a NaN result is stored value by value through store<S> (the canonical NaN) and the loop goes on, and a
// tail shorter than 8 units runs as one padded block (over_codec_blocks). So all the run's results come
// from the same arithmetic, that of the float32 loops (the float16 tiles before them; checked bit for bit
// by benchmarks/native/bn_half_bits.cpp): GCC contracts the portable float16 loop differently, which
// changed results that round to a signed zero. The portable loops, compiled for AVX2, convert with
// integer operations (bfloat16: a NaN test and a blend per vector on top of the rounding; float16: about
// ten operations per vector each way) and reload every per-lane constant once per value of a pair.
// Measured 2026-11-29 on an AVX2 machine (AMD EPYC, Zen 3; docs/batch_norm_leaky_relu.md, tenth session):
// in L1 (one thread) the bfloat16 normalize loop 0.24 -> 0.20 ns per value and the dx loop 0.31 -> 0.27;
// the kernels at the batch-64 DCGAN shapes (two threads, both builds in one process, minimum of 60)
// bfloat16 forward 0.243 / 0.297 / 0.324 -> 0.208 / 0.264 / 0.316 ns per value (8x8 / 16x16 / 32x32),
// backward 0.368 / 0.442 / 0.514 -> 0.343 / 0.426 / 0.487; float16 (which used float32 tiles there)
// forward 0.53-0.66 -> 0.30-0.45 and backward 1.02-1.11 -> 0.58-0.79.

// bfloat16 pairs: a word's low value is word << 16, its high one word & 0xffff0000 (as Bf16PairVectors).
// store rounds to nearest even as store<bfloat16> does, with the integer rounding alone: a NaN (whose
// rounding must keep it quiet) is the only value where store<bfloat16> does more.
struct Bf16PairVectors256 {
  using Unit = bfloat16_pair;
  static constexpr int kVectors = 2;
  static M256s<2> load(const bfloat16_pair* p) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return {_mm256_castsi256_ps(_mm256_slli_epi32(w, 16)),
            _mm256_castsi256_ps(_mm256_and_si256(w, _mm256_set1_epi32(static_cast<int>(0xffff0000u))))};
  }
  static void store(bfloat16_pair* q, const M256s<2>& v) {
    if (__builtin_expect(_mm256_movemask_ps(_mm256_cmp_ps(v.v[0], v.v[1], _CMP_UNORD_Q)) != 0, 0)) {
      alignas(32) float lo[8], hi[8];
      _mm256_store_ps(lo, v.v[0]);
      _mm256_store_ps(hi, v.v[1]);
      for (int k = 0; k < 8; ++k) {
        q[k] = units<bfloat16_pair>::join(cpu::store<bfloat16>(lo[k]), cpu::store<bfloat16>(hi[k]));
      }
      return;
    }
    // (u + 0x7fff + ((u >> 16) & 1)) >> 16 per value; the high value's result stays in the upper half.
    const auto round = [](__m256 x) {
      const __m256i u = _mm256_castps_si256(x);
      const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
      return _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), odd);
    };
    const __m256i high = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
    const __m256i w = _mm256_or_si256(_mm256_srli_epi32(round(v.v[0]), 16), _mm256_and_si256(round(v.v[1]), high));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q), w);
  }
};

template <typename S> struct avx2_vectors { using type = void; };
template <> struct avx2_vectors<float16> { using type = F16Vectors256; };
template <> struct avx2_vectors<bfloat16_pair> { using type = Bf16PairVectors256; };
template <typename S> using avx2_vectors_t = typename avx2_vectors<S>::type;

// A per-lane (Lanes) or scalar constant as a vector.
template <bool Lanes>
inline __m256 lane_constant(const float* k, int64_t i) {
  return Lanes ? _mm256_loadu_ps(k + i) : _mm256_broadcast_ss(k);
}

// block(in, out, consts, i) for the blocks of 8 units of [0, len): `in` holds Q input streams (the
// units at in[q] + i), `consts` the K per-lane constant arrays (read at consts[k] + i when Lanes). The
// last len % 8 units run as one block from zero-padded copies, whose results are copied out. Returns len.
template <bool Lanes, typename U, size_t Q, size_t K, typename Block>
inline int64_t over_codec_blocks(const std::array<const U*, Q>& in, U* out, const std::array<const float*, K>& consts,
                                 int64_t len, Block&& block) {
  int64_t i = 0;
  for (; i + 8 <= len; i += 8) block(in, out, consts, i);
  const int64_t rest = len - i;
  if (rest > 0) {
    U pin[Q][8] = {}, pout[8];
    alignas(32) float pk[K][8] = {};
    std::array<const U*, Q> tin;
    std::array<const float*, K> tk;
    for (size_t q = 0; q < Q; ++q) {
      std::copy(in[q] + i, in[q] + len, pin[q]);
      tin[q] = pin[q];
    }
    for (size_t k = 0; k < K; ++k) {
      if (Lanes) std::copy(consts[k] + i, consts[k] + len, pk[k]);
      tk[k] = Lanes ? pk[k] : consts[k];
    }
    block(tin, pout, tk, int64_t{0});
    std::copy(pout, pout + rest, out + i);
  }
  return len;
}

// The normalize loop (as normalize_avx512). LeakyReLU with 0 < slope <= 1 is max(v, v * slope): the
// product rounds towards v's side of zero, so the maximum picks v for v > 0 and v * slope otherwise
// (NaN: the product, a NaN; -0: -0), one operation fewer than a compare and a blend.
template <typename V, bool Relu, bool Lanes>
inline int64_t normalize_avx2(const typename V::Unit* p, typename V::Unit* q, int64_t len, const float* a,
                              const float* b, float slope) {
  const __m256 vslope = _mm256_set1_ps(slope), zero = _mm256_setzero_ps();
  const auto loop = [&](auto act) {
    return over_codec_blocks<Lanes>(std::array{p}, q, std::array{a, b}, len,
                                    [&](const auto& in, auto* out, const auto& k, int64_t i) {
      M256s<V::kVectors> v = V::load(in[0] + i);
      const __m256 va = lane_constant<Lanes>(k[0], i), vb = lane_constant<Lanes>(k[1], i);
      for (__m256& e : v.v) e = act(_mm256_fmadd_ps(e, va, vb));
      V::store(out + i, v);
    });
  };
  if constexpr (Relu) {  // v <= 0 -> +0; NaN stays (as activate<true>)
    return loop([&](__m256 v) { return _mm256_andnot_ps(_mm256_cmp_ps(v, zero, _CMP_LE_OQ), v); });
  } else if (slope > 0 && slope <= 1) {
    return loop([&](__m256 v) { return _mm256_max_ps(v, _mm256_mul_ps(v, vslope)); });
  } else {  // not v > 0 (NaN included) -> v * slope (as activate<false>)
    return loop([&](__m256 v) {
      return _mm256_blendv_ps(v, _mm256_mul_ps(v, vslope), _mm256_cmp_ps(v, zero, _CMP_NGT_UQ));
    });
  }
}
#endif

// Units [0, return value) normalized by a codec loop where S has a codec, else 0.
template <typename S, bool Relu, bool Lanes>
inline int64_t normalize_with_codec(const S* p, S* q, int64_t len, const compute_t<S>* a, const compute_t<S>* b,
                                    compute_t<S> slope) {
#if defined(__AVX512F__)
  if constexpr (!std::is_void_v<avx512_vectors_t<S>>) {
    return normalize_avx512<avx512_vectors_t<S>, Relu, Lanes>(p, q, len, a, b, slope);
  }
#elif defined(GENCORE_AVX2_CODECS)
  if constexpr (!std::is_void_v<avx2_vectors_t<S>>) {
    return normalize_avx2<avx2_vectors_t<S>, Relu, Lanes>(p, q, len, a, b, slope);
  }
#endif
  return 0;
}

template <typename S>
GENCORE_RUN_LOOP void normalize_run(const S* p, S* q, int64_t len, compute_t<S> a, compute_t<S> b, compute_t<S> slope, bool relu) {
  if constexpr (float16_outputs_in_tiles<S>()) {
    if (len >= kMinTileLen) {
      over_float16_tiles(std::array{p}, q, len, [&](const auto& w, float* out, int64_t, int64_t count) {
        normalize_run<float>(w[0], out, count, a, b, slope, relu);
      });
      return;
    }
  }
  with_relu(relu, [&](auto r) {
    const auto y = normalized<decltype(r)::value, compute_t<S>>(slope);
    const int64_t i0 = normalize_with_codec<S, decltype(r)::value, false>(p, q, len, &a, &b, slope);
#pragma omp simd
    for (int64_t i = i0; i < len; ++i) q[i] = units<S>::map(y, p[i], a, b);
  });
}

// Mean and biased variance from sums of (x - shift) over m values (NaN stays NaN).
template <typename C>
inline void finish_stats(double shift, double s1, double s2, int64_t m, C& mean, C& var) {
  const double d = s1 / static_cast<double>(m);
  const double v = s2 / static_cast<double>(m) - d * d;
  mean = static_cast<C>(shift + d);
  var = static_cast<C>(v < 0 ? 0.0 : v);
}

// ---- short runs (s < kMinSpan) in the cached schedule -------------------------------------------------
// A group's k channels of one sample are one contiguous span of k * s values. Instead of k runs of s
// values (each with its own loop prologue, tail and horizontal sum: at s = 64 that overhead cost as much
// as the work), one vector loop covers the span, with every per-channel constant expanded to one value
// per span position (spread) and the sums kept per position across samples (lane accumulators), added
// into each channel's double sums every few samples (span_sums_over_samples).

// Spans replace runs when runs are short and there are enough samples to pay for setting up the spread
// constants and accumulators (a few passes over one span: about a quarter of the work at 16 samples).
constexpr int64_t kSpanMinSamples = 16;
inline bool use_spans(int64_t n, int64_t s) { return s < kMinSpan && n >= kSpanMinSamples; }

// out[j] = v[j / s] for j < k * s.
template <typename C>
void spread(const C* v, int64_t k, int64_t s, C* out) {
  for (int64_t ch = 0; ch < k; ++ch) std::fill(out + ch * s, out + (ch + 1) * s, v[ch]);
}

// Adds each channel's s accumulators of e1 / e2 into s1[ch] / s2[ch] (a SIMD sum per channel, as
// shifted_sums adds a block) and clears them.
template <typename C>
GENCORE_RUN_LOOP void flush_span(C* e1, C* e2, int64_t k, int64_t s, double* s1, double* s2) {
  for (int64_t ch = 0; ch < k; ++ch) {
    C a1 = 0, a2 = 0;
#pragma omp simd reduction(+ : a1, a2)
    for (int64_t j = ch * s; j < (ch + 1) * s; ++j) {
      a1 += e1[j];
      a2 += e2[j];
      e1[j] = C(0);
      e2[j] = C(0);
    }
    s1[ch] += static_cast<double>(a1);
    s2[ch] += static_cast<double>(a2);
  }
}

// The statistics sweep of a span for all n samples: add(i, r, e1, e2) adds samples [i, i + r) (r from
// for_each_sample_block) into the lane accumulators, which flush_span adds into each channel's double
// sums s1 / s2 after every `flush` samples and after the last. With that cadence every channel's float
// partial sums cover at most kBlock values, as in shifted_sums (s < kMinSpan <= kBlock), and no lane adds
// more than kRowBlock values in float (the depth of the channels-last partial sums; matters for tiny s,
// e.g. (N, C) input with s = 1).
template <typename S, typename Add>
void span_sums_over_samples(int64_t n, int64_t k, int64_t s, double* s1, double* s2, Add&& add) {
  using C = compute_t<S>;
  constexpr int64_t per_unit = units<S>::kValues;  // a lane adds per_unit values per sample
  LineVector<C> e1(static_cast<size_t>(k * s), C(0)), e2(static_cast<size_t>(k * s), C(0));
  const int64_t flush = std::clamp<int64_t>(kBlock / (s * per_unit), 1, kRowBlock / per_unit);
  for_each_sample_block(n, flush, [&](int64_t i, auto r) {
    add(i, r, e1.data(), e2.data());
    if ((i + r.value) % flush == 0 || i + r.value == n) flush_span(e1.data(), e2.data(), k, s, s1, s2);
  });
}

// Loops with one constant per lane (position): a channels-last row (lane = channel) or a span (lane = a
// position in the group's span, constants spread). Sums of (x - shift) per lane over R rows `stride`
// values apart (see shifted_sums), and the normalization.
template <int R, typename S>
GENCORE_RUN_LOOP void lane_sums(const S* row, int64_t stride, const compute_t<S>* shift, compute_t<S>* a1, compute_t<S>* a2,
                                int64_t lanes) {
  if constexpr (float16_sums_in_tiles<S>()) {
    if (lanes >= kMinTileLen) {
      over_widened_tiles<R>(std::array{row}, stride, lanes, [&](const auto& w, int64_t tile, int64_t j, int64_t count) {
        lane_sums<R, float>(w[0], tile, shift + j, a1 + j, a2 + j, count);
      });
      return;
    }
  }
  using C = compute_t<S>;
#pragma omp simd
  for (int64_t i = 0; i < lanes; ++i) {
    C t1 = 0, t2 = 0;
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 2
      for (int v = 0; v < units<S>::kValues; ++v) {
        const C d = units<S>::value(row[i + r * stride], v) - shift[i];
        t1 += d;
        t2 += d * d;
      }
    }
    a1[i] += t1;
    a2[i] += t2;
  }
}

template <typename S>
GENCORE_RUN_LOOP void lane_normalize(const S* row, S* out, const compute_t<S>* a, const compute_t<S>* b,
                                     int64_t lanes, compute_t<S> slope, bool relu) {
  if constexpr (float16_outputs_in_tiles<S>()) {
    if (lanes >= kMinTileLen) {
      over_float16_tiles(std::array{row}, out, lanes, [&](const auto& w, float* res, int64_t j, int64_t count) {
        lane_normalize<float>(w[0], res, a + j, b + j, count, slope, relu);
      });
      return;
    }
  }
  with_relu(relu, [&](auto r) {
    const auto y = normalized<decltype(r)::value, compute_t<S>>(slope);
    const int64_t i0 = normalize_with_codec<S, decltype(r)::value, true>(row, out, lanes, a, b, slope);
#pragma omp simd
    for (int64_t i = i0; i < lanes; ++i) out[i] = units<S>::map(y, row[i], a[i], b[i]);
  });
}

// y = activate(x * alpha + beta): the per-channel affine form of the normalization.
template <typename C>
struct Affine {
  LineVector<C> alpha, beta;
  explicit Affine(int64_t c) : alpha(static_cast<size_t>(c)), beta(static_cast<size_t>(c)) {}
  void set(int64_t ch, const C* weight, const C* bias, C mean, C var, double eps) {
    const double invstd = 1.0 / std::sqrt(static_cast<double>(var) + eps);
    const C w = weight ? weight[ch] : C(1);
    const C b = bias ? bias[ch] : C(0);
    alpha[ch] = static_cast<C>(w * invstd);
    beta[ch] = b - mean * alpha[ch];
  }
};

// The cached schedule's forward for one group [c0, c1) of short runs (s < kMinSpan): statistics from
// lane accumulators over the group's span, then one normalize loop per sample span.
template <typename S>
void forward_span(const S* x, S* y, Affine<compute_t<S>>& aff, double* s1, double* s2, int64_t n, int64_t c,
                  int64_t s, int64_t c0, int64_t c1, const compute_t<S>* weight, const compute_t<S>* bias,
                  compute_t<S>* mean, compute_t<S>* var, double eps, compute_t<S> sl, bool relu, bool stream) {
  using C = compute_t<S>;
  const int64_t k = c1 - c0, len = k * s;
  LineVector<C> shift(static_cast<size_t>(k)), a(static_cast<size_t>(len)), b(static_cast<size_t>(len));
  for (int64_t ch = c0; ch < c1; ++ch) shift[ch - c0] = units<S>::value(x[ch * s], 0);
  spread(shift.data(), k, s, a.data());  // a holds the spread shifts during the statistics
  span_sums_over_samples<S>(n, k, s, s1, s2, [&](int64_t i, auto r, C* e1, C* e2) {
    lane_sums<r.value>(x + (i * c + c0) * s, c * s, a.data(), e1, e2, len);
  });
  for (int64_t ch = c0; ch < c1; ++ch) {
    finish_stats<C>(shift[ch - c0], s1[ch - c0], s2[ch - c0], n * s * units<S>::kValues, mean[ch], var[ch]);
    aff.set(ch, weight, bias, mean[ch], var[ch], eps);
  }
  spread(aff.alpha.data() + c0, k, s, a.data());
  spread(aff.beta.data() + c0, k, s, b.data());
  for (int64_t i = 0; i < n; ++i) {
    const int64_t off = (i * c + c0) * s;
    if (!stream && i + 1 < n) prefetch_for_write(y + off + c * s, len);
    write_run(y + off, len, stream, [&](S* out, int64_t j, int64_t count) {
      lane_normalize(x + off + j, out, a.data() + j, b.data() + j, count, sl, relu);
    });
  }
  if (stream) stream_fence();
}

// The normalize pass outside the cached schedule (eval mode; training with C < 32 or with a channel slice
// too large for L2) when runs are short: each sample's C*S values are one span, normalized in memory
// order by one vector loop with the per-channel constants spread per position, instead of a loop call,
// prologue and tail per run of S values. Measured 2026-11-29 (eval forward, float32, two threads, ns per
// value, minimum of 60): S = 16
// 0.59 -> 0.15 (64x128x4x4) and 0.56 -> 0.39 (8x512x4x4), S = 32 0.32 -> 0.19, S = 49 0.30 -> 0.23,
// S = 64 0.21 -> 0.18 (64x128x8x8) or even (64x512x8x8), S = 256 even; on 4 samples setting up the
// spread arrays cost more than the runs did (4x64x4x4: 1.22 -> 1.34), hence the minimum of 8. Spread
// arrays of at most kSampleSpanMax values each (256 KiB of float) stay in L2 next to the data; a sample
// is cut into pieces of >= kChunk values when there are too few samples for the threads.
constexpr int64_t kSampleSpanMax = int64_t{1} << 16;
constexpr int64_t kSampleSpanMinSamples = 8;

template <typename S>
void normalize_sample_spans(const S* x, S* y, const Affine<compute_t<S>>& aff, int64_t n, int64_t c, int64_t s,
                            compute_t<S> sl, bool relu, bool stream) {
  using C = compute_t<S>;
  const int64_t len = c * s;
  LineVector<C> a(static_cast<size_t>(len)), b(static_cast<size_t>(len));
  spread(aff.alpha.data(), c, s, a.data());
  spread(aff.beta.data(), c, s, b.data());
  const int64_t values = len * units<S>::kValues;  // per sample
  const int64_t pieces = std::clamp<int64_t>((kMaxTasks + n - 1) / n, 1, std::max<int64_t>(1, values / kChunk));
  const auto edge = [&](int64_t q) { return q == pieces ? len : (len * q / pieces) / 16 * 16; };
#pragma omp parallel if (n * pieces > 1)
  {
#pragma omp for schedule(static) nowait
    for (int64_t t = 0; t < n * pieces; ++t) {
      const int64_t i = t / pieces, q = t % pieces;
      const int64_t p0 = edge(q), off = i * len + p0;
      write_run(y + off, edge(q + 1) - p0, stream, [&](S* out, int64_t j, int64_t count) {
        lane_normalize(x + off + j, out, a.data() + p0 + j, b.data() + p0 + j, count, sl, relu);
      });
    }
    if (stream) stream_fence();
  }
}

template <typename S>
void forward_ncs(const S* x, S* y, const compute_t<S>* weight, const compute_t<S>* bias, compute_t<S>* mean,
                 compute_t<S>* var, int64_t n, int64_t c, int64_t s, bool training, double eps, double slope,
                 bool stream) {
  using C = compute_t<S>;
  const int64_t m = n * s;  // storage units per channel
  const int64_t values = m * units<S>::kValues;
  const C sl = static_cast<C>(slope);
  const bool relu = slope == 0;
  Affine<C> aff(c);
  const int64_t chunks = chunks_per_channel(c, values);
  const int64_t group = training ? channel_group(c, s, m, sizeof(S)) : 0;
  if (group > 0) {
    // Statistics then normalization of a group of channels while their slices are in L2.
    const int64_t groups = (c + group - 1) / group;
#pragma omp parallel for schedule(static) if (groups > 1)
    for (int64_t gi = 0; gi < groups; ++gi) {
      const int64_t c0 = gi * group, c1 = std::min(c, c0 + group);
      std::vector<double> s1(static_cast<size_t>(c1 - c0)), s2(static_cast<size_t>(c1 - c0));
      if (use_spans(n, s * units<S>::kValues)) {
        forward_span(x, y, aff, s1.data(), s2.data(), n, c, s, c0, c1, weight, bias, mean, var, eps, sl, relu,
                     stream);
        continue;
      }
      for_each_sample_block(n, n, [&](int64_t i, auto r) {
        for (int64_t ch = c0; ch < c1; ++ch) {
          shifted_sums<r.value>(x + (i * c + ch) * s, c * s, s, units<S>::value(x[ch * s], 0), s1[ch - c0],
                                s2[ch - c0]);
        }
      });
      for (int64_t ch = c0; ch < c1; ++ch) {
        finish_stats<C>(units<S>::value(x[ch * s], 0), s1[ch - c0], s2[ch - c0], values, mean[ch], var[ch]);
        aff.set(ch, weight, bias, mean[ch], var[ch], eps);
      }
      for (int64_t i = 0; i < n; ++i) {
        if (!stream && i + 1 < n) prefetch_for_write(y + ((i + 1) * c + c0) * s, (c1 - c0) * s);
        for (int64_t ch = c0; ch < c1; ++ch) {
          const int64_t off = (i * c + ch) * s;
          write_run(y + off, s, stream, [&](S* out, int64_t j, int64_t len) {
            normalize_run(x + off + j, out, len, aff.alpha[ch], aff.beta[ch], sl, relu);
          });
        }
      }
      if (stream) stream_fence();
    }
    return;
  }
  const int64_t tasks = c * chunks;
  if (training) {
    std::vector<double> p1(static_cast<size_t>(tasks)), p2(static_cast<size_t>(tasks));
#pragma omp parallel for schedule(static) if (tasks > 1)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t ch = t / chunks, q = t % chunks;
      const C shift = units<S>::value(x[ch * s], 0);
      double s1 = 0, s2 = 0;
      for_each_run(c, s, ch, m * q / chunks, m * (q + 1) / chunks,
                   [&](int64_t off, int64_t len) { shifted_sums<1>(x + off, 0, len, shift, s1, s2); });
      p1[t] = s1;
      p2[t] = s2;
    }
    for (int64_t ch = 0; ch < c; ++ch) {
      double s1 = 0, s2 = 0;
      for (int64_t q = 0; q < chunks; ++q) {
        s1 += p1[ch * chunks + q];
        s2 += p2[ch * chunks + q];
      }
      finish_stats<C>(units<S>::value(x[ch * s], 0), s1, s2, values, mean[ch], var[ch]);
    }
  }
  for (int64_t ch = 0; ch < c; ++ch) aff.set(ch, weight, bias, mean[ch], var[ch], eps);
  if (n >= kSampleSpanMinSamples && n * c >= kMaxTasks && s * units<S>::kValues < kMinSpan &&
      c * s <= kSampleSpanMax) {
    normalize_sample_spans(x, y, aff, n, c, s, sl, relu, stream);
    return;
  }
  if (n * c >= kMaxTasks) {
    // Enough (sample, channel) runs: normalize them in memory order (short runs stay prefetch-friendly).
#pragma omp parallel
    {
#pragma omp for schedule(static) nowait
      for (int64_t r = 0; r < n * c; ++r) {
        const int64_t ch = r % c;
        write_run(y + r * s, s, stream, [&](S* out, int64_t j, int64_t len) {
          normalize_run(x + r * s + j, out, len, aff.alpha[ch], aff.beta[ch], sl, relu);
        });
      }
      if (stream) stream_fence();
    }
    return;
  }
#pragma omp parallel for schedule(static) if (tasks > 1)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t ch = t / chunks, q = t % chunks;
    const C a = aff.alpha[ch], b = aff.beta[ch];
    for_each_run(c, s, ch, m * q / chunks, m * (q + 1) / chunks, [&](int64_t off, int64_t len) {
      write_run(y + off, len, stream, [&](S* out, int64_t j, int64_t count) {
        normalize_run(x + off + j, out, count, a, b, sl, relu);
      });
    });
    if (stream) stream_fence();
  }
}

template <typename S>
void forward_nsc(const S* x, S* y, const compute_t<S>* weight, const compute_t<S>* bias, compute_t<S>* mean,
                 compute_t<S>* var, int64_t n, int64_t c, int64_t s, bool training, double eps, double slope) {
  using C = compute_t<S>;
  const int64_t rows = n * s;
  const C sl = static_cast<C>(slope);
  const bool relu = slope == 0;
  const int64_t tasks = row_tasks(rows, c);
  if (training) {
    LineVector<C> shift(static_cast<size_t>(c));
    for (int64_t ch = 0; ch < c; ++ch) shift[ch] = load(x[ch]);
    std::vector<double> p1(static_cast<size_t>(tasks * c)), p2(static_cast<size_t>(tasks * c));
    const C* k = shift.data();
#pragma omp parallel for schedule(static) if (tasks > 1)
    for (int64_t t = 0; t < tasks; ++t) {
      LineVector<C> f1(static_cast<size_t>(c)), f2(static_cast<size_t>(c));
      C* a1 = f1.data();
      C* a2 = f2.data();
      double* d1 = p1.data() + t * c;
      double* d2 = p2.data() + t * c;
      const int64_t r1 = rows * (t + 1) / tasks;
      for (int64_t r = rows * t / tasks; r < r1; r += kRowBlock) {
        const int64_t re = std::min(r1, r + kRowBlock);
        std::fill(f1.begin(), f1.end(), C(0));
        std::fill(f2.begin(), f2.end(), C(0));
        for (int64_t rr = r; rr < re; ++rr) lane_sums<1>(x + rr * c, 0, k, a1, a2, c);
        for (int64_t ch = 0; ch < c; ++ch) {
          d1[ch] += static_cast<double>(a1[ch]);
          d2[ch] += static_cast<double>(a2[ch]);
        }
      }
    }
    for (int64_t ch = 0; ch < c; ++ch) {
      double s1 = 0, s2 = 0;
      for (int64_t t = 0; t < tasks; ++t) {
        s1 += p1[t * c + ch];
        s2 += p2[t * c + ch];
      }
      finish_stats<C>(shift[ch], s1, s2, rows, mean[ch], var[ch]);
    }
  }
  Affine<C> aff(c);
  for (int64_t ch = 0; ch < c; ++ch) aff.set(ch, weight, bias, mean[ch], var[ch], eps);
  const C* a = aff.alpha.data();
  const C* b = aff.beta.data();
#pragma omp parallel for schedule(static) if (tasks > 1)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t r1 = rows * (t + 1) / tasks;
    for (int64_t r = rows * t / tasks; r < r1; ++r) {
      lane_normalize(x + r * c, y + r * c, a, b, c, sl, relu);
    }
  }
}

// ---- backward ---------------------------------------------------------------------------------------
// Per channel: a = w * invstd, b = bias - mean * a (so pre = x * a + b, bit-identical to the forward),
// u = the value x̂ is affine in (x, or z rebuilt from y), center / uscale with x̂ = (u - center) * uscale.
// dx (training) = a * dz - k2 * (u - center) + k0 with k2 = a * uscale * Σdz·x̂ / m, k0 = -a * Σdz / m.
template <typename C>
struct BackwardCoef {
  LineVector<C> a, b, center, uscale, k2, k0;
  explicit BackwardCoef(int64_t c)
      : a(c), b(c), center(c), uscale(c), k2(c, C(0)), k0(c, C(0)) {}
  void set(int64_t ch, bool from_output, const C* weight, const C* bias, const C* mean, const C* var, double eps) {
    const double invstd = 1.0 / std::sqrt(static_cast<double>(var[ch]) + eps);
    const double w = weight ? static_cast<double>(weight[ch]) : 1.0;
    const C bb = bias ? bias[ch] : C(0);
    a[ch] = static_cast<C>(w * invstd);
    b[ch] = bb - mean[ch] * a[ch];
    center[ch] = from_output ? bb : mean[ch];
    uscale[ch] = static_cast<C>(from_output ? 1.0 / w : invstd);
  }
  // From the two channel sums: grad_weight, grad_bias and the dx coefficients.
  void finish(int64_t ch, double sdz, double sdzu, int64_t m, bool training, C* grad_weight, C* grad_bias) {
    const double gw = sdzu * static_cast<double>(uscale[ch]);
    grad_weight[ch] = static_cast<C>(gw);
    grad_bias[ch] = static_cast<C>(sdz);
    if (training) {
      k2[ch] = static_cast<C>(static_cast<double>(a[ch]) * uscale[ch] * gw / static_cast<double>(m));
      k0[ch] = static_cast<C>(-static_cast<double>(a[ch]) * sdz / static_cast<double>(m));
    }
  }
};

// How the backward sees the activation: from the input x with LeakyReLU or with ReLU (dz = 0 exactly where
// pre <= 0, as torch's threshold_backward, even for an inf/NaN incoming gradient), or from the output y.
constexpr int kFromInput = 0;
constexpr int kFromInputRelu = 1;
constexpr int kFromOutput = 2;

// dz and u for one element; kFromOutput rebuilds z = y > 0 ? y : y / slope from the output.
template <typename C, int Mode>
inline void grad_pre(C g, C v, C a, C b, C slope, C inv_slope, C& dz, C& u) {
  bool pos;
  if constexpr (Mode == kFromOutput) {
    pos = v > C(0);
    u = pos ? v : v * inv_slope;
  } else {
    pos = v * a + b > C(0);
    u = v;
  }
  if constexpr (Mode == kFromInputRelu) {
    dz = pos ? g : C(0);
  } else {
    dz = pos ? g : g * slope;
  }
}

// Training dx of one value as a function of (dy, input, a, b, center, k2, k0, slope, inv_slope), for
// units<S>::map2.
template <typename C, int Mode>
inline auto dx_value() {
  return [](C g, C v, C a, C b, C center, C k2, C k0, C slope, C inv_slope) {
    C dz, u;
    grad_pre<C, Mode>(g, v, a, b, slope, inv_slope, dz, u);
    return a * dz - k2 * (u - center) + k0;
  };
}

// Both backward sums over R runs (dy, in) + r * stride, r < R (as shifted_sums).
template <int R, typename S, int Mode>
GENCORE_RUN_LOOP void bwd_sums_run(const S* dy, const S* in, int64_t stride, int64_t len, compute_t<S> a,
                                   compute_t<S> b, compute_t<S> center, compute_t<S> slope, compute_t<S> inv_slope,
                                   double& s1, double& s2) {
  if constexpr (float16_sums_in_tiles<S>()) {
    if (len >= kMinTileLen) {
      over_widened_tiles<R>(std::array{dy, in}, stride, len, [&](const auto& w, int64_t tile, int64_t, int64_t count) {
        bwd_sums_run<R, float, Mode>(w[0], w[1], tile, count, a, b, center, slope, inv_slope, s1, s2);
      });
      return;
    }
  }
  using C = compute_t<S>;
  using U = units<S>;
  constexpr int64_t block = kBlock / (R * U::kValues);
  for (int64_t b0 = 0; b0 < len; b0 += block) {
    const int64_t e = std::min(len, b0 + block);
    C a1 = 0, a2 = 0;
#pragma omp simd reduction(+ : a1, a2)
    for (int64_t i = b0; i < e; ++i) {
      const auto term = [&](auto k, auto second) {
        const int64_t j = i + (k / U::kValues) * stride;
        C dz, u;
        grad_pre<C, Mode>(U::value(dy[j], k % U::kValues), U::value(in[j], k % U::kValues), a, b, slope,
                          inv_slope, dz, u);
        return second ? dz * (u - center) : dz;
      };
      a1 += tree_sum<R * U::kValues>([&](auto k) { return term(k, std::false_type{}); });
      a2 += tree_sum<R * U::kValues>([&](auto k) { return term(k, std::true_type{}); });
    }
    s1 += static_cast<double>(a1);
    s2 += static_cast<double>(a2);
  }
}

#if defined(__AVX512F__)
// The training dx loop with a codec (as normalize_avx512): the same operations as dx_value in the order
// GCC compiles it (checked bit for bit against the portable loop): t = (u - center) * k2,
// dx = fma(dz, a, -t) + k0. Measured 2026-11-29 for bfloat16 pairs (standalone harness, two threads, a
// quiet host, three alternating runs, minimum of 60): backward 0.218-0.220 -> 0.199-0.203 ns per value
// at 64x512x8x8 and 0.225-0.233 -> 0.205-0.210 at 64x256x16x16; 64x128x32x32, memory-bound, unchanged.
template <typename V, int Mode, bool Lanes>
inline int64_t dx_avx512(const typename V::Unit* g, const typename V::Unit* v, typename V::Unit* out, int64_t len,
                         const float* ka, const float* kb, const float* kc, const float* k2, const float* k0,
                         float slope, float inv_slope) {
  const __m512 vslope = _mm512_set1_ps(slope), vinv = _mm512_set1_ps(inv_slope), zero = _mm512_setzero_ps();
  const auto lane = [&](const float* k, int64_t i) { return Lanes ? _mm512_loadu_ps(k + i) : _mm512_set1_ps(*k); };
  int64_t i = 0;
  for (; i + 16 <= len; i += 16) {
    const M512s<V::kVectors> gv = V::load(g + i), vv = V::load(v + i);
    const __m512 a = lane(ka, i), b = lane(kb, i), c = lane(kc, i), q2 = lane(k2, i), q0 = lane(k0, i);
    M512s<V::kVectors> r;
    for (int e = 0; e < V::kVectors; ++e) {
      __mmask16 neg;  // not positive: dz = g * slope (or 0 for ReLU)
      __m512 u = vv.v[e];
      if constexpr (Mode == kFromOutput) {
        neg = _mm512_cmp_ps_mask(vv.v[e], zero, _CMP_NGT_UQ);
        u = _mm512_mask_mul_ps(vv.v[e], neg, vv.v[e], vinv);
      } else {
        neg = _mm512_cmp_ps_mask(_mm512_fmadd_ps(vv.v[e], a, b), zero, _CMP_NGT_UQ);
      }
      const __m512 dz = Mode == kFromInputRelu ? _mm512_mask_mov_ps(gv.v[e], neg, zero)
                                               : _mm512_mask_mul_ps(gv.v[e], neg, gv.v[e], vslope);
      const __m512 t = _mm512_mul_ps(_mm512_sub_ps(u, c), q2);
      r.v[e] = _mm512_add_ps(_mm512_fmsub_ps(dz, a, t), q0);
    }
    if (!V::store(out + i, r)) break;
  }
  return i;
}
#endif

#if defined(GENCORE_AVX2_CODECS)
// The training dx loop of AVX2 builds: the operations of dx_avx512 (checked bit for bit against the
// portable loop, which GCC compiles in the same order), each per-lane constant loaded once per 8 units.
template <typename V, int Mode, bool Lanes>
inline int64_t dx_avx2(const typename V::Unit* g, const typename V::Unit* v, typename V::Unit* out, int64_t len,
                       const float* ka, const float* kb, const float* kc, const float* k2, const float* k0,
                       float slope, float inv_slope) {
  const __m256 vslope = _mm256_set1_ps(slope), vinv = _mm256_set1_ps(inv_slope), zero = _mm256_setzero_ps();
  return over_codec_blocks<Lanes>(std::array{g, v}, out, std::array{ka, kb, kc, k2, k0}, len,
                                  [&](const auto& in, auto* q, const auto& k, int64_t i) {
    const M256s<V::kVectors> gv = V::load(in[0] + i), vv = V::load(in[1] + i);
    const __m256 a = lane_constant<Lanes>(k[0], i), b = lane_constant<Lanes>(k[1], i);
    const __m256 c = lane_constant<Lanes>(k[2], i), q2 = lane_constant<Lanes>(k[3], i);
    const __m256 q0 = lane_constant<Lanes>(k[4], i);
    M256s<V::kVectors> r;
    for (int e = 0; e < V::kVectors; ++e) {
      __m256 neg;  // not positive: dz = g * slope (or 0 for ReLU)
      __m256 u = vv.v[e];
      if constexpr (Mode == kFromOutput) {
        neg = _mm256_cmp_ps(vv.v[e], zero, _CMP_NGT_UQ);
        u = _mm256_blendv_ps(vv.v[e], _mm256_mul_ps(vv.v[e], vinv), neg);
      } else {
        neg = _mm256_cmp_ps(_mm256_fmadd_ps(vv.v[e], a, b), zero, _CMP_NGT_UQ);
      }
      const __m256 dz = Mode == kFromInputRelu ? _mm256_andnot_ps(neg, gv.v[e])
                                               : _mm256_blendv_ps(gv.v[e], _mm256_mul_ps(gv.v[e], vslope), neg);
      const __m256 t = _mm256_mul_ps(_mm256_sub_ps(u, c), q2);
      r.v[e] = _mm256_add_ps(_mm256_fmsub_ps(dz, a, t), q0);
    }
    V::store(q + i, r);
  });
}
#endif

// Units [0, return value) of dx computed by a codec loop where S has a codec, else 0.
template <typename S, int Mode, bool Lanes>
inline int64_t dx_with_codec(const S* g, const S* v, S* out, int64_t len, const compute_t<S>* ka,
                             const compute_t<S>* kb, const compute_t<S>* kc, const compute_t<S>* k2,
                             const compute_t<S>* k0, compute_t<S> slope, compute_t<S> inv_slope) {
#if defined(__AVX512F__)
  if constexpr (!std::is_void_v<avx512_vectors_t<S>>) {
    return dx_avx512<avx512_vectors_t<S>, Mode, Lanes>(g, v, out, len, ka, kb, kc, k2, k0, slope, inv_slope);
  }
#elif defined(GENCORE_AVX2_CODECS)
  if constexpr (!std::is_void_v<avx2_vectors_t<S>>) {
    return dx_avx2<avx2_vectors_t<S>, Mode, Lanes>(g, v, out, len, ka, kb, kc, k2, k0, slope, inv_slope);
  }
#endif
  return 0;
}

// dx for one run; training == false is dx = a * dz (k2 = k0 = 0 give the same, but this skips work).
template <typename S, int Mode>
GENCORE_RUN_LOOP void bwd_dx_run(const S* dy, const S* in, S* dx, int64_t len, compute_t<S> a, compute_t<S> b,
                compute_t<S> center, compute_t<S> k2, compute_t<S> k0, compute_t<S> slope,
                compute_t<S> inv_slope) {
  if constexpr (float16_outputs_in_tiles<S>()) {
    if (len >= kMinTileLen) {
      over_float16_tiles(std::array{dy, in}, dx, len, [&](const auto& w, float* out, int64_t, int64_t count) {
        bwd_dx_run<float, Mode>(w[0], w[1], out, count, a, b, center, k2, k0, slope, inv_slope);
      });
      return;
    }
  }
  const auto f = dx_value<compute_t<S>, Mode>();
  const int64_t i0 = dx_with_codec<S, Mode, false>(dy, in, dx, len, &a, &b, &center, &k2, &k0, slope, inv_slope);
#pragma omp simd
  for (int64_t i = i0; i < len; ++i) dx[i] = units<S>::map2(f, dy[i], in[i], a, b, center, k2, k0, slope, inv_slope);
}

// Eval mode: dx = a * dz and both sums in one pass.
template <typename S, int Mode>
GENCORE_RUN_LOOP void bwd_eval_run(const S* dy, const S* in, S* dx, int64_t len, compute_t<S> a, compute_t<S> b,
                  compute_t<S> center, compute_t<S> slope, compute_t<S> inv_slope, double& s1,
                  double& s2) {
  using C = compute_t<S>;
  using U = units<S>;
  constexpr int64_t block = kBlock / U::kValues;
  const auto f = [](C g, C v, C a, C b, C slope, C inv_slope) {
    C dz, u;
    grad_pre<C, Mode>(g, v, a, b, slope, inv_slope, dz, u);
    return a * dz;
  };
  for (int64_t b0 = 0; b0 < len; b0 += block) {
    const int64_t e = std::min(len, b0 + block);
    C a1 = 0, a2 = 0;
#pragma omp simd reduction(+ : a1, a2)
    for (int64_t i = b0; i < e; ++i) {
#pragma GCC unroll 2
      for (int v = 0; v < U::kValues; ++v) {
        C dz, u;
        grad_pre<C, Mode>(U::value(dy[i], v), U::value(in[i], v), a, b, slope, inv_slope, dz, u);
        a1 += dz;
        a2 += dz * (u - center);
      }
      dx[i] = U::map2(f, dy[i], in[i], a, b, slope, inv_slope);  // the same dz (the compiler shares it)
    }
    s1 += static_cast<double>(a1);
    s2 += static_cast<double>(a2);
  }
}

// Backward loops with one set of constants per lane (a channels-last row or a span, as lane_sums): both
// sums per lane (and dx = a * dz in eval mode), then dx.
template <typename S, int Mode>
GENCORE_RUN_LOOP void lane_bwd_sums(const S* g, const S* v, S* out, const compute_t<S>* ka, const compute_t<S>* kb,
                                    const compute_t<S>* kc, compute_t<S> slope, compute_t<S> inv_slope,
                                    compute_t<S>* a1, compute_t<S>* a2, int64_t lanes, bool training) {
  // (No codec loop does this one's eval output: it goes through the tiles wherever the sums do.)
  if constexpr (float16_sums_in_tiles<S>()) {
    if (lanes >= kMinTileLen) {
      const auto sums = [&](const auto& w, float* res, int64_t j, int64_t count) {
        lane_bwd_sums<float, Mode>(w[0], w[1], res, ka + j, kb + j, kc + j, slope, inv_slope, a1 + j, a2 + j, count,
                                   training);
      };
      if (training) {
        over_widened_tiles<1>(std::array{g, v}, 0, lanes, [&](const auto& w, int64_t, int64_t j, int64_t count) {
          sums(w, nullptr, j, count);
        });
      } else {
        over_float16_tiles(std::array{g, v}, out, lanes, sums);
      }
      return;
    }
  }
  using C = compute_t<S>;
#pragma omp simd
  for (int64_t i = 0; i < lanes; ++i) {
    C dz, u;
    grad_pre<C, Mode>(load(g[i]), load(v[i]), ka[i], kb[i], slope, inv_slope, dz, u);
    a1[i] += dz;
    a2[i] += dz * (u - kc[i]);
    if (!training) out[i] = store<S>(ka[i] * dz);
  }
}

// The training sums of lane_bwd_sums over R rows `stride` values apart (the span schedule; R as in
// shifted_sums). Not used for channels-last rows: summing each row into a temporary first rounds the
// product dz * (u - center) once more than lane_bwd_sums' fused multiply-add, so its results would change.
template <int R, typename S, int Mode>
GENCORE_RUN_LOOP void lane_bwd_sums_rows(const S* g, const S* v, int64_t stride, const compute_t<S>* ka,
                                         const compute_t<S>* kb, const compute_t<S>* kc, compute_t<S> slope,
                                         compute_t<S> inv_slope, compute_t<S>* a1, compute_t<S>* a2,
                                         int64_t lanes) {
  if constexpr (float16_sums_in_tiles<S>()) {
    if (lanes >= kMinTileLen) {
      const auto rows = [&](const auto& w, int64_t tile, int64_t j, int64_t count) {
        lane_bwd_sums_rows<R, float, Mode>(w[0], w[1], tile, ka + j, kb + j, kc + j, slope, inv_slope, a1 + j, a2 + j,
                                           count);
      };
      over_widened_tiles<R>(std::array{g, v}, stride, lanes, rows);
      return;
    }
  }
  using C = compute_t<S>;
#pragma omp simd
  for (int64_t i = 0; i < lanes; ++i) {
    C t1 = 0, t2 = 0;
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 2
      for (int e = 0; e < units<S>::kValues; ++e) {
        C dz, u;
        grad_pre<C, Mode>(units<S>::value(g[i + r * stride], e), units<S>::value(v[i + r * stride], e), ka[i], kb[i],
                          slope, inv_slope, dz, u);
        t1 += dz;
        t2 += dz * (u - kc[i]);
      }
    }
    a1[i] += t1;
    a2[i] += t2;
  }
}

template <typename S, int Mode>
GENCORE_RUN_LOOP void lane_bwd_dx(const S* g, const S* v, S* out, const compute_t<S>* ka, const compute_t<S>* kb,
                                  const compute_t<S>* kc, const compute_t<S>* k2, const compute_t<S>* k0,
                                  compute_t<S> slope, compute_t<S> inv_slope, int64_t lanes) {
  if constexpr (float16_outputs_in_tiles<S>()) {
    if (lanes >= kMinTileLen) {
      over_float16_tiles(std::array{g, v}, out, lanes, [&](const auto& w, float* res, int64_t j, int64_t count) {
        lane_bwd_dx<float, Mode>(w[0], w[1], res, ka + j, kb + j, kc + j, k2 + j, k0 + j, slope, inv_slope, count);
      });
      return;
    }
  }
  const auto f = dx_value<compute_t<S>, Mode>();
  const int64_t i0 = dx_with_codec<S, Mode, true>(g, v, out, lanes, ka, kb, kc, k2, k0, slope, inv_slope);
#pragma omp simd
  for (int64_t i = i0; i < lanes; ++i) {
    out[i] = units<S>::map2(f, g[i], v[i], ka[i], kb[i], kc[i], k2[i], k0[i], slope, inv_slope);
  }
}

// The cached schedule's backward for one group [c0, c1) of short runs (s < kMinSpan; see forward_span):
// both sums from lane accumulators over the group's span, then one dx loop per sample span.
template <typename S, int Mode>
void backward_span(const S* dy, const S* in, S* dx, BackwardCoef<compute_t<S>>& k, double* s1, double* s2,
                   int64_t n, int64_t c, int64_t s, int64_t c0, int64_t c1, compute_t<S> sl, compute_t<S> isl,
                   compute_t<S>* grad_weight, compute_t<S>* grad_bias, bool stream) {
  using C = compute_t<S>;
  const int64_t kc = c1 - c0, len = kc * s;
  const auto spread_of = [&](const LineVector<C>& v) {
    LineVector<C> out(static_cast<size_t>(len));
    spread(v.data() + c0, kc, s, out.data());
    return out;
  };
  const LineVector<C> a = spread_of(k.a), b = spread_of(k.b), center = spread_of(k.center);
  span_sums_over_samples<S>(n, kc, s, s1, s2, [&](int64_t i, auto r, C* e1, C* e2) {
    const int64_t off = (i * c + c0) * s;
    lane_bwd_sums_rows<r.value, S, Mode>(dy + off, in + off, c * s, a.data(), b.data(), center.data(), sl, isl, e1,
                                         e2, len);
  });
  for (int64_t ch = c0; ch < c1; ++ch) {
    k.finish(ch, s1[ch - c0], s2[ch - c0], n * s * units<S>::kValues, true, grad_weight, grad_bias);
  }
  const LineVector<C> k2 = spread_of(k.k2), k0 = spread_of(k.k0);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t off = (i * c + c0) * s;
    write_run(dx + off, len, stream, [&](S* out, int64_t j, int64_t count) {
      lane_bwd_dx<S, Mode>(dy + off + j, in + off + j, out, a.data() + j, b.data() + j, center.data() + j,
                           k2.data() + j, k0.data() + j, sl, isl, count);
    });
  }
  if (stream) stream_fence();
}

template <typename S, int Mode>
void backward_ncs(const S* dy, const S* in, const compute_t<S>* weight, const compute_t<S>* bias,
                  const compute_t<S>* mean, const compute_t<S>* var, S* dx, compute_t<S>* grad_weight,
                  compute_t<S>* grad_bias, int64_t n, int64_t c, int64_t s, bool training, double eps,
                  double slope, bool stream) {
  using C = compute_t<S>;
  const int64_t m = n * s;  // storage units per channel
  const int64_t values = m * units<S>::kValues;
  const C sl = static_cast<C>(slope);
  const C isl = Mode == kFromOutput ? static_cast<C>(1.0 / slope) : C(0);
  BackwardCoef<C> k(c);
  for (int64_t ch = 0; ch < c; ++ch) k.set(ch, Mode == kFromOutput, weight, bias, mean, var, eps);
  const int64_t chunks = chunks_per_channel(c, values);
  const int64_t group = training ? channel_group(c, s, m, 2 * sizeof(S)) : 0;
  if (group > 0) {
    // Both reductions, then dx, while a group of channels' dy and input slices are in L2.
    const int64_t groups = (c + group - 1) / group;
#pragma omp parallel for schedule(static) if (groups > 1)
    for (int64_t gi = 0; gi < groups; ++gi) {
      const int64_t c0 = gi * group, c1 = std::min(c, c0 + group);
      std::vector<double> s1(static_cast<size_t>(c1 - c0)), s2(static_cast<size_t>(c1 - c0));
      if (use_spans(n, s * units<S>::kValues)) {
        backward_span<S, Mode>(dy, in, dx, k, s1.data(), s2.data(), n, c, s, c0, c1, sl, isl, grad_weight, grad_bias,
                               stream);
        continue;
      }
      for_each_sample_block(n, n, [&](int64_t i, auto r) {
        for (int64_t ch = c0; ch < c1; ++ch) {
          const int64_t off = (i * c + ch) * s;
          bwd_sums_run<r.value, S, Mode>(dy + off, in + off, c * s, s, k.a[ch], k.b[ch], k.center[ch], sl, isl,
                                         s1[ch - c0], s2[ch - c0]);
        }
      });
      for (int64_t ch = c0; ch < c1; ++ch) k.finish(ch, s1[ch - c0], s2[ch - c0], values, true, grad_weight, grad_bias);
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t ch = c0; ch < c1; ++ch) {
          const int64_t off = (i * c + ch) * s;
          write_run(dx + off, s, stream, [&](S* out, int64_t j, int64_t len) {
            bwd_dx_run<S, Mode>(dy + off + j, in + off + j, out, len, k.a[ch], k.b[ch], k.center[ch], k.k2[ch],
                                k.k0[ch], sl, isl);
          });
        }
      }
      if (stream) stream_fence();
    }
    return;
  }
  const int64_t tasks = c * chunks;
  std::vector<double> p1(static_cast<size_t>(tasks)), p2(static_cast<size_t>(tasks));
#pragma omp parallel for schedule(static) if (tasks > 1)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t ch = t / chunks, q = t % chunks;
    const C a = k.a[ch], b = k.b[ch], center = k.center[ch];
    double s1 = 0, s2 = 0;
    for_each_run(c, s, ch, m * q / chunks, m * (q + 1) / chunks, [&](int64_t off, int64_t len) {
      if (training) {
        bwd_sums_run<1, S, Mode>(dy + off, in + off, 0, len, a, b, center, sl, isl, s1, s2);
      } else {
        bwd_eval_run<S, Mode>(dy + off, in + off, dx + off, len, a, b, center, sl, isl, s1, s2);
      }
    });
    p1[t] = s1;
    p2[t] = s2;
  }
  for (int64_t ch = 0; ch < c; ++ch) {
    double s1 = 0, s2 = 0;
    for (int64_t q = 0; q < chunks; ++q) {
      s1 += p1[ch * chunks + q];
      s2 += p2[ch * chunks + q];
    }
    k.finish(ch, s1, s2, values, training, grad_weight, grad_bias);
  }
  if (!training) return;
#pragma omp parallel for schedule(static) if (tasks > 1)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t ch = t / chunks, q = t % chunks;
    const C a = k.a[ch], b = k.b[ch], center = k.center[ch], k2 = k.k2[ch], k0 = k.k0[ch];
    for_each_run(c, s, ch, m * q / chunks, m * (q + 1) / chunks, [&](int64_t off, int64_t len) {
      write_run(dx + off, len, stream, [&](S* out, int64_t j, int64_t count) {
        bwd_dx_run<S, Mode>(dy + off + j, in + off + j, out, count, a, b, center, k2, k0, sl, isl);
      });
    });
    if (stream) stream_fence();
  }
}

template <typename S, int Mode>
void backward_nsc(const S* dy, const S* in, const compute_t<S>* weight, const compute_t<S>* bias,
                  const compute_t<S>* mean, const compute_t<S>* var, S* dx, compute_t<S>* grad_weight,
                  compute_t<S>* grad_bias, int64_t n, int64_t c, int64_t s, bool training, double eps,
                  double slope) {
  using C = compute_t<S>;
  const int64_t rows = n * s;
  const C sl = static_cast<C>(slope);
  const C isl = Mode == kFromOutput ? static_cast<C>(1.0 / slope) : C(0);
  BackwardCoef<C> k(c);
  for (int64_t ch = 0; ch < c; ++ch) k.set(ch, Mode == kFromOutput, weight, bias, mean, var, eps);
  const C* ka = k.a.data();
  const C* kb = k.b.data();
  const C* kc = k.center.data();
  const int64_t tasks = row_tasks(rows, c);
  std::vector<double> p1(static_cast<size_t>(tasks * c)), p2(static_cast<size_t>(tasks * c));
#pragma omp parallel for schedule(static) if (tasks > 1)
  for (int64_t t = 0; t < tasks; ++t) {
    LineVector<C> f1(static_cast<size_t>(c)), f2(static_cast<size_t>(c));
    C* a1 = f1.data();
    C* a2 = f2.data();
    double* d1 = p1.data() + t * c;
    double* d2 = p2.data() + t * c;
    const int64_t r1 = rows * (t + 1) / tasks;
    for (int64_t r = rows * t / tasks; r < r1; r += kRowBlock) {
      const int64_t re = std::min(r1, r + kRowBlock);
      std::fill(f1.begin(), f1.end(), C(0));
      std::fill(f2.begin(), f2.end(), C(0));
      for (int64_t rr = r; rr < re; ++rr) {
        lane_bwd_sums<S, Mode>(dy + rr * c, in + rr * c, dx + rr * c, ka, kb, kc, sl, isl, a1, a2, c, training);
      }
      for (int64_t ch = 0; ch < c; ++ch) {
        d1[ch] += static_cast<double>(a1[ch]);
        d2[ch] += static_cast<double>(a2[ch]);
      }
    }
  }
  for (int64_t ch = 0; ch < c; ++ch) {
    double s1 = 0, s2 = 0;
    for (int64_t t = 0; t < tasks; ++t) {
      s1 += p1[t * c + ch];
      s2 += p2[t * c + ch];
    }
    k.finish(ch, s1, s2, rows, training, grad_weight, grad_bias);
  }
  if (!training) return;
  const C* k2 = k.k2.data();
  const C* k0 = k.k0.data();
#pragma omp parallel for schedule(static) if (tasks > 1)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t r1 = rows * (t + 1) / tasks;
    for (int64_t r = rows * t / tasks; r < r1; ++r) {
      lane_bwd_dx<S, Mode>(dy + r * c, in + r * c, dx + r * c, ka, kb, kc, k2, k0, sl, isl, c);
    }
  }
}

// Calls f(p...) with the NCS data pointers as given or, for bfloat16 when runs have an even length
// (S) and every pointer is 4-byte aligned, as bfloat16_pair pointers with s halved (scalar_types.h).
// Pairs change only how the loops load and store: each value is computed as before, but the float
// partial sums group the values differently, so the statistics and the weight/bias gradients may differ
// from the one-value view in the last bits.
template <typename S, typename F, typename... P>
void with_storage_units(int64_t& s, F&& f, P*... p) {
  if constexpr (std::is_same_v<S, bfloat16>) {
    if (s % 2 == 0 && ((reinterpret_cast<uintptr_t>(p) % 4 == 0) && ...)) {
      s /= 2;
      f(reinterpret_cast<std::conditional_t<std::is_const_v<P>, const bfloat16_pair*, bfloat16_pair*>>(p)...);
      return;
    }
  }
  f(p...);
}

}  // namespace

template <typename S>
void batch_norm_leaky_relu_forward(const S* x, S* y, const compute_t<S>* weight, const compute_t<S>* bias,
                                   compute_t<S>* mean, compute_t<S>* var, int64_t n, int64_t c, int64_t s,
                                   bool channels_last, bool training, double eps, double slope) {
  if (c == 0 || n * s == 0) return;
  if (channels_last) {
    forward_nsc(x, y, weight, bias, mean, var, n, c, s, training, eps, slope);
  } else {
    const bool stream = stream_output(n * c * s * static_cast<int64_t>(sizeof(S)));
    int64_t su = s;
    with_storage_units<S>(su, [&](auto* xu, auto* yu) {
      forward_ncs(xu, yu, weight, bias, mean, var, n, c, su, training, eps, slope, stream);
    }, x, y);
  }
}

template <typename S>
void batch_norm_leaky_relu_backward(const S* dy, const S* in, bool from_output, const compute_t<S>* weight,
                                    const compute_t<S>* bias, const compute_t<S>* mean,
                                    const compute_t<S>* var, S* dx, compute_t<S>* grad_weight,
                                    compute_t<S>* grad_bias, int64_t n, int64_t c, int64_t s,
                                    bool channels_last, bool training, double eps, double slope) {
  if (c == 0) return;
  if (n * s == 0) {
    std::fill(grad_weight, grad_weight + c, compute_t<S>(0));
    std::fill(grad_bias, grad_bias + c, compute_t<S>(0));
    return;
  }
  const int mode = from_output ? kFromOutput : (slope == 0 ? kFromInputRelu : kFromInput);
  auto run = [&](auto mode_tag) {
    constexpr int M = decltype(mode_tag)::value;
    if (channels_last) {
      backward_nsc<S, M>(dy, in, weight, bias, mean, var, dx, grad_weight, grad_bias, n, c, s, training, eps, slope);
    } else {
      const bool stream = stream_output(n * c * s * static_cast<int64_t>(sizeof(S)));
      int64_t su = s;
      with_storage_units<S>(su, [&](auto* dyu, auto* inu, auto* dxu) {
        backward_ncs<std::remove_pointer_t<decltype(dxu)>, M>(dyu, inu, weight, bias, mean, var, dxu, grad_weight,
                                                              grad_bias, n, c, su, training, eps, slope, stream);
      }, dy, in, dx);
    }
  };
  if (mode == kFromOutput) {
    run(std::integral_constant<int, kFromOutput>{});
  } else if (mode == kFromInputRelu) {
    run(std::integral_constant<int, kFromInputRelu>{});
  } else {
    run(std::integral_constant<int, kFromInput>{});
  }
}

#define GENCORE_INSTANTIATE_BN(S)                                                                           \
  template void batch_norm_leaky_relu_forward<S>(const S*, S*, const compute_t<S>*, const compute_t<S>*,      \
                                                 compute_t<S>*, compute_t<S>*, int64_t, int64_t, int64_t,    \
                                                 bool, bool, double, double);                                \
  template void batch_norm_leaky_relu_backward<S>(const S*, const S*, bool, const compute_t<S>*,              \
                                                  const compute_t<S>*, const compute_t<S>*,                  \
                                                  const compute_t<S>*, S*, compute_t<S>*, compute_t<S>*,     \
                                                  int64_t, int64_t, int64_t, bool, bool, double, double);
GENCORE_INSTANTIATE_BN(float)
GENCORE_INSTANTIATE_BN(double)
GENCORE_INSTANTIATE_BN(float16)
GENCORE_INSTANTIATE_BN(bfloat16)
#undef GENCORE_INSTANTIATE_BN

}  // namespace gencore::cpu
