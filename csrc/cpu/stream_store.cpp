// The streaming-store threshold (stream_store.h).
#include "cpu/stream_store.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>

namespace gencore::cpu {

namespace {

std::atomic<int64_t> override_bytes{-1};

int64_t last_level_cache_bytes() {
  static const int64_t bytes = [] {
    long l3 = -1;
#ifdef _SC_LEVEL3_CACHE_SIZE
    l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
    return l3 > 0 ? static_cast<int64_t>(l3) : int64_t{32} << 20;
  }();
  return bytes;
}

int64_t environment_bytes() {
  static const int64_t bytes = [] {
    const char* e = std::getenv("GENCORE_STREAM_MIN_BYTES");
    if (e == nullptr || *e == '\0') return int64_t{-1};
    char* end = nullptr;
    const long long v = std::strtoll(e, &end, 10);
    return (end != nullptr && *end == '\0' && v >= 0) ? static_cast<int64_t>(v) : int64_t{-1};
  }();
  return bytes;
}

}  // namespace

int64_t stream_min_bytes() {
  const int64_t set = override_bytes.load(std::memory_order_relaxed);
  if (set >= 0) return set;
  const int64_t env = environment_bytes();
  if (env >= 0) return env;
  return std::min(last_level_cache_bytes() / 2, kStreamDefaultCapBytes);
}

void set_stream_min_bytes(int64_t bytes) { override_bytes.store(bytes < 0 ? -1 : bytes, std::memory_order_relaxed); }

}  // namespace gencore::cpu
