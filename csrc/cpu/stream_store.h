// Non-temporal ("streaming") stores for outputs too large to stay cached.
//
// A normal store of a line that is not cached first reads the line from memory (read-for-ownership),
// so writing an output costs a read and a write of memory. A streaming store writes whole 64-byte
// lines without reading them, and does not evict the inputs from the caches. The kernels compute a
// run into a small buffer that stays in L1 (with their ordinary vectorized loops, for every storage
// type) and copy it out with streaming stores: write_run below. Whether to stream is the caller's
// decision: stream_output(bytes), true for outputs too large to stay cached next to what the next layer
// reads and writes anyway (half the last-level cache, at most 16 MiB: stream_min_bytes).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(__AVX512F__) || defined(__AVX__) || defined(__SSE2__)
#include <immintrin.h>
#endif

namespace gencore::cpu {

// The threshold of stream_output: GENCORE_STREAM_MIN_BYTES from the environment when it is a
// non-negative integer (read once; anything else is ignored), else half the last-level cache (32 MiB
// for the cache when the system does not say) but at most kStreamDefaultCapBytes. set_stream_min_bytes
// overrides it for the process (tests, tuning); a negative value restores the default.
//
// The cap: the last-level cache the system reports is shared with every other core of the socket (on
// a VM, with other tenants), so much less of it holds our data than its size says. Measured 2026-11-29
// on a 2-vCPU VM with a 105 MB L3 (docs/batch_norm_leaky_relu.md): with the next step reading the
// output right away, streaming the BatchNorm outputs lost on two threads at 4 and 8 MB (8 MB: backward
// 9 % slower; on one thread it won at 8 MB), broke even or won at 16 MB and won at 32 MB.
constexpr int64_t kStreamDefaultCapBytes = int64_t{16} << 20;
int64_t stream_min_bytes();
void set_stream_min_bytes(int64_t bytes);

#if defined(__AVX512F__) || defined(__AVX__) || defined(__SSE2__)
constexpr bool kStreamingStores = true;
#else
constexpr bool kStreamingStores = false;  // stream_copy would be a plain memcpy: never worth the buffer
#endif
inline bool stream_output(int64_t bytes) { return kStreamingStores && bytes >= stream_min_bytes(); }

// Values per L1 buffer of write_run: 2 KiB of float32, a multiple of the 64-byte line for every type.
constexpr int64_t kStreamChunk = 512;

// Copies `bytes` from src to dst: streaming stores for the whole aligned 64-byte lines of dst, ordinary
// stores for a partial line at either end.
inline void stream_copy(void* dst, const void* src, int64_t bytes) {
  char* d = static_cast<char*>(dst);
  const char* s = static_cast<const char*>(src);
#if defined(__AVX512F__) || defined(__AVX__) || defined(__SSE2__)
  const int64_t head = std::min<int64_t>(bytes, static_cast<int64_t>((64 - reinterpret_cast<uintptr_t>(d) % 64) % 64));
  std::memcpy(d, s, static_cast<size_t>(head));
  d += head;
  s += head;
  bytes -= head;
  for (; bytes >= 64; bytes -= 64, d += 64, s += 64) {
#if defined(__AVX512F__)
    _mm512_stream_si512(reinterpret_cast<__m512i*>(d), _mm512_loadu_si512(s));
#elif defined(__AVX__)
    _mm256_stream_si256(reinterpret_cast<__m256i*>(d), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s)));
    _mm256_stream_si256(reinterpret_cast<__m256i*>(d + 32),
                        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + 32)));
#else
    for (int k = 0; k < 64; k += 16) {
      _mm_stream_si128(reinterpret_cast<__m128i*>(d + k), _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + k)));
    }
#endif
  }
#endif
  std::memcpy(d, s, static_cast<size_t>(bytes));
}

// Streaming stores are weakly ordered: each thread fences after its last one, before another thread
// (or the caller, after the parallel region) may read the output.
inline void stream_fence() {
#if defined(__AVX512F__) || defined(__AVX__) || defined(__SSE2__)
  _mm_sfence();
#endif
}

// Writes len values of dst, produced by fill(out, first, count) for out = dst + first (stream == false)
// or for an L1 buffer that is then streamed to dst + first (stream == true).
template <typename S, typename Fill>
inline void write_run(S* dst, int64_t len, bool stream, Fill&& fill) {
  if (!stream) {
    fill(dst, int64_t{0}, len);
    return;
  }
  alignas(64) S buf[kStreamChunk];
  for (int64_t first = 0; first < len; first += kStreamChunk) {
    const int64_t count = std::min(kStreamChunk, len - first);
    fill(buf, first, count);
    stream_copy(dst + first, buf, count * static_cast<int64_t>(sizeof(S)));
  }
}

}  // namespace gencore::cpu
