// mlir-rl-peak: the floating-point peak and the read bandwidth of one core, measured. Chains of fused multiply-adds
// on independent accumulators (enough to cover the FMA latency on every current x86 core), AVX-512 and AVX2 kernels
// for f32 and f64 when the CPU has them, one thread pinned to --cpu. Then the bandwidth of reading a buffer again and
// again, for working sets from 16 KiB to 1 GiB (each cache level, then memory): what a kernel that runs repeatedly on
// the same data can stream at best. Prints JSON: GFLOP/s per kernel and the best per dtype, GB/s per working set.
// The performance report (scripts/report.sh) divides achieved GFLOP/s by the peak and places each benchmark under
// the roofline these two draw.
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <immintrin.h>

namespace {

constexpr int kAccumulators = 12;  // FMA latency 4 x 2 pipes = 8 in flight on Zen 4 / Ice Lake; 12 covers 6 x 2

// Each kernel runs `iterations` rounds of kAccumulators independent FMAs and returns a value depending on all
// accumulators (so the compiler cannot drop them). flops = 2 * lanes * kAccumulators * iterations.
__attribute__((target("avx512f"))) double fma512f32(long iterations) {
  __m512 acc[kAccumulators];
  for (int j = 0; j < kAccumulators; ++j) acc[j] = _mm512_set1_ps(1.0f + j * 1e-3f);
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (long i = 0; i < iterations; ++i)
    for (int j = 0; j < kAccumulators; ++j) acc[j] = _mm512_fmadd_ps(acc[j], a, b);
  __m512 s = acc[0];
  for (int j = 1; j < kAccumulators; ++j) s = _mm512_add_ps(s, acc[j]);
  float out[16];
  _mm512_storeu_ps(out, s);
  double sum = 0;
  for (float x : out) sum += x;
  return sum;
}

__attribute__((target("avx512f"))) double fma512f64(long iterations) {
  __m512d acc[kAccumulators];
  for (int j = 0; j < kAccumulators; ++j) acc[j] = _mm512_set1_pd(1.0 + j * 1e-3);
  const __m512d a = _mm512_set1_pd(0.999999), b = _mm512_set1_pd(1e-7);
  for (long i = 0; i < iterations; ++i)
    for (int j = 0; j < kAccumulators; ++j) acc[j] = _mm512_fmadd_pd(acc[j], a, b);
  __m512d s = acc[0];
  for (int j = 1; j < kAccumulators; ++j) s = _mm512_add_pd(s, acc[j]);
  double out[8];
  _mm512_storeu_pd(out, s);
  double sum = 0;
  for (double x : out) sum += x;
  return sum;
}

__attribute__((target("avx2,fma"))) double fma256f32(long iterations) {
  __m256 acc[kAccumulators];
  for (int j = 0; j < kAccumulators; ++j) acc[j] = _mm256_set1_ps(1.0f + j * 1e-3f);
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (long i = 0; i < iterations; ++i)
    for (int j = 0; j < kAccumulators; ++j) acc[j] = _mm256_fmadd_ps(acc[j], a, b);
  __m256 s = acc[0];
  for (int j = 1; j < kAccumulators; ++j) s = _mm256_add_ps(s, acc[j]);
  float out[8];
  _mm256_storeu_ps(out, s);
  double sum = 0;
  for (float x : out) sum += x;
  return sum;
}

__attribute__((target("avx2,fma"))) double fma256f64(long iterations) {
  __m256d acc[kAccumulators];
  for (int j = 0; j < kAccumulators; ++j) acc[j] = _mm256_set1_pd(1.0 + j * 1e-3);
  const __m256d a = _mm256_set1_pd(0.999999), b = _mm256_set1_pd(1e-7);
  for (long i = 0; i < iterations; ++i)
    for (int j = 0; j < kAccumulators; ++j) acc[j] = _mm256_fmadd_pd(acc[j], a, b);
  __m256d s = acc[0];
  for (int j = 1; j < kAccumulators; ++j) s = _mm256_add_pd(s, acc[j]);
  double out[4];
  _mm256_storeu_pd(out, s);
  return out[0] + out[1] + out[2] + out[3];
}

// Sums `n` floats (n a multiple of 4 * 64) read as 4 concurrent streams (the buffer's quarters, as a kernel reads its
// operands side by side: one stream alone leaves the prefetchers and the outer caches idle part of the time), 8
// independent accumulators: the loads are the bottleneck.
__attribute__((target("avx512f"))) double read512(const float *data, long n) {
  __m512 acc[8];
  for (int j = 0; j < 8; ++j) acc[j] = _mm512_setzero_ps();
  const long q = n / 4;
  for (long i = 0; i < q; i += 32)
    for (int s = 0; s < 4; ++s) {
      acc[2 * s] = _mm512_add_ps(acc[2 * s], _mm512_load_ps(data + s * q + i));
      acc[2 * s + 1] = _mm512_add_ps(acc[2 * s + 1], _mm512_load_ps(data + s * q + i + 16));
    }
  __m512 s = acc[0];
  for (int j = 1; j < 8; ++j) s = _mm512_add_ps(s, acc[j]);
  float out[16];
  _mm512_storeu_ps(out, s);
  double sum = 0;
  for (float x : out) sum += x;
  return sum;
}

__attribute__((target("avx2"))) double read256(const float *data, long n) {
  __m256 acc[8];
  for (int j = 0; j < 8; ++j) acc[j] = _mm256_setzero_ps();
  const long q = n / 4;
  for (long i = 0; i < q; i += 16)
    for (int s = 0; s < 4; ++s) {
      acc[2 * s] = _mm256_add_ps(acc[2 * s], _mm256_load_ps(data + s * q + i));
      acc[2 * s + 1] = _mm256_add_ps(acc[2 * s + 1], _mm256_load_ps(data + s * q + i + 8));
    }
  __m256 s = acc[0];
  for (int j = 1; j < 8; ++j) s = _mm256_add_ps(s, acc[j]);
  float out[8];
  _mm256_storeu_ps(out, s);
  double sum = 0;
  for (float x : out) sum += x;
  return sum;
}

// GB/s of reading a buffer of `bytes` repeatedly (warm: each pass after the first finds what the caches kept), best of
// `repeats` timed batches of about `seconds`.
double readBandwidth(long bytes, double seconds, int repeats, double *sink) {
  long n = bytes / sizeof(float);
  n -= n % 256;
  auto *data = static_cast<float *>(std::aligned_alloc(64, n * sizeof(float)));
  for (long i = 0; i < n; ++i) data[i] = 1e-9f * static_cast<float>(i % 1000);
  bool wide = __builtin_cpu_supports("avx512f");
  auto pass = [&] {
    asm volatile("" : : "r"(data) : "memory");  // the buffer may have changed: every pass reads it again
    return wide ? read512(data, n) : read256(data, n);
  };
  *sink += pass();  // first touch
  long passes = 1;
  for (;;) {
    auto t0 = std::chrono::steady_clock::now();
    for (long p = 0; p < passes; ++p) *sink += pass();
    double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (t > seconds / 10) {
      passes = std::max<long>(1, static_cast<long>(passes * seconds / t));
      break;
    }
    passes *= 4;
  }
  double best = 0;
  for (int r = 0; r < repeats; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    for (long p = 0; p < passes; ++p) *sink += pass();
    double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, static_cast<double>(n) * sizeof(float) * passes / t / 1e9);
  }
  std::free(data);
  return best;
}

struct Kernel {
  const char *name;
  const char *dtype;
  int lanes;
  const char *feature;  // for __builtin_cpu_supports
  double (*run)(long);
};

// GFLOP/s of one timed run of about `seconds`, best of `repeats`.
double measure(const Kernel &k, double seconds, int repeats, double *sink) {
  long iterations = 1 << 16;
  for (;;) {  // calibrate: one run of at least a tenth of the target
    auto t0 = std::chrono::steady_clock::now();
    *sink += k.run(iterations);
    double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (t > seconds / 10) {
      iterations = static_cast<long>(iterations * seconds / t);
      break;
    }
    iterations *= 4;
  }
  double best = 0;
  for (int r = 0; r < repeats; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    *sink += k.run(iterations);
    double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * k.lanes * kAccumulators * iterations / t / 1e9);
  }
  return best;
}

std::string cpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "";
}

}  // namespace

int main(int argc, char **argv) {
  int cpu = -1;
  double seconds = 0.2;
  int repeats = 5;
  bool bandwidth = true;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--cpu=", 0) == 0)
      cpu = std::atoi(a.c_str() + 6);
    else if (a.rfind("--seconds=", 0) == 0)
      seconds = std::atof(a.c_str() + 10);
    else if (a.rfind("--repeats=", 0) == 0)
      repeats = std::atoi(a.c_str() + 10);
    else if (a == "--no_bandwidth")
      bandwidth = false;
    else {
      std::fprintf(stderr,
                   "usage: mlir-rl-peak [--cpu=N] [--seconds=0.2] [--repeats=5] [--no_bandwidth]\n"
                   "Measures the f32 and f64 FMA peak and the read bandwidth per working set of one core (pinned to\n"
                   "CPU N) and prints JSON.\n");
      return a == "--help" ? 0 : 2;
    }
  }
  if (cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
      std::perror("sched_setaffinity");
      return 1;
    }
  }
  __builtin_cpu_init();
  const Kernel kernels[] = {
      {"avx512_f32", "f32", 16, "avx512f", fma512f32},
      {"avx512_f64", "f64", 8, "avx512f", fma512f64},
      {"avx2_f32", "f32", 8, "fma", fma256f32},
      {"avx2_f64", "f64", 4, "fma", fma256f64},
  };
  double sink = 0, bestF32 = 0, bestF64 = 0;
  std::string rows;
  for (const Kernel &k : kernels) {
    bool supported = std::strcmp(k.feature, "avx512f") == 0
                         ? __builtin_cpu_supports("avx512f")
                         : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (!supported) continue;
    double g = measure(k, seconds, repeats, &sink);
    double &best = std::strcmp(k.dtype, "f32") == 0 ? bestF32 : bestF64;
    best = std::max(best, g);
    char buf[128];
    std::snprintf(buf, sizeof buf, "%s\"%s\": %.2f", rows.empty() ? "" : ", ", k.name, g);
    rows += buf;
  }
  // Working sets from 16 KiB to 1 GiB by factors of 2; shorter batches than the FMA kernels' (memory is steadier).
  std::string ladder;
  if (bandwidth && (__builtin_cpu_supports("avx512f") || __builtin_cpu_supports("avx2")))
    for (long bytes = 16L << 10; bytes <= 1L << 30; bytes *= 2) {
      double g = readBandwidth(bytes, seconds / 2, std::max(1, repeats / 2), &sink);
      char buf[64];
      std::snprintf(buf, sizeof buf, "%s\"%ld\": %.2f", ladder.empty() ? "" : ", ", bytes, g);
      ladder += buf;
    }
  std::printf(
      "{\"cpu\": \"%s\", \"pinned_cpu\": %d, \"threads\": 1, \"accumulators\": %d, \"f32_gflops\": %.2f, "
      "\"f64_gflops\": %.2f, \"kernels\": {%s}, \"read_gbs\": {%s}, \"checksum\": %.3g}\n",
      cpuModel().c_str(), cpu, kAccumulators, bestF32, bestF64, rows.c_str(), ladder.c_str(), sink);
  return bestF32 > 0 ? 0 : 1;
}
