#include "runners/Buffers.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <sstream>

namespace mlir_rl::runners {

size_t elementBytes(ElementKind kind) {
  switch (kind) {
    case ElementKind::F32: return 4;
    case ElementKind::F64: return 8;
    case ElementKind::I32: return 4;
    case ElementKind::I64: return 8;
    case ElementKind::I8: return 1;
    case ElementKind::I1: return 1;
  }
  return 1;
}

const char *elementName(ElementKind kind) {
  switch (kind) {
    case ElementKind::F32: return "f32";
    case ElementKind::F64: return "f64";
    case ElementKind::I32: return "i32";
    case ElementKind::I64: return "i64";
    case ElementKind::I8: return "i8";
    case ElementKind::I1: return "i1";
  }
  return "?";
}

int64_t TensorSpec::numElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

void Buffer::Free::operator()(void *p) const { std::free(p); }

Buffer::Buffer(TensorSpec spec) : spec_(std::move(spec)) {
  size_t bytes = static_cast<size_t>(spec_.numBytes());
  size_t rounded = (bytes + 63) / 64 * 64;
  if (rounded == 0) rounded = 64;
  void *p = std::aligned_alloc(64, rounded);
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, rounded);
  data_.reset(p);
}

namespace {
// splitmix64: a tiny, well-mixed generator; reproducible across platforms.
uint64_t next(uint64_t &state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
double unit(uint64_t &state) { return static_cast<double>(next(state) >> 11) * 0x1.0p-53; }
}  // namespace

void Buffer::fillRandom(uint64_t seed) {
  uint64_t state = seed;
  int64_t n = spec_.numElements();
  switch (spec_.kind) {
    case ElementKind::F32: {
      auto *p = static_cast<float *>(data());
      for (int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(2.0 * unit(state) - 1.0);
      break;
    }
    case ElementKind::F64: {
      auto *p = static_cast<double *>(data());
      for (int64_t i = 0; i < n; ++i) p[i] = 2.0 * unit(state) - 1.0;
      break;
    }
    case ElementKind::I32: {
      auto *p = static_cast<int32_t *>(data());
      for (int64_t i = 0; i < n; ++i) p[i] = static_cast<int32_t>(next(state) % 17) - 8;
      break;
    }
    case ElementKind::I64: {
      auto *p = static_cast<int64_t *>(data());
      for (int64_t i = 0; i < n; ++i) p[i] = static_cast<int64_t>(next(state) % 17) - 8;
      break;
    }
    case ElementKind::I8: {
      auto *p = static_cast<int8_t *>(data());
      for (int64_t i = 0; i < n; ++i) p[i] = static_cast<int8_t>(static_cast<int64_t>(next(state) % 17) - 8);
      break;
    }
    case ElementKind::I1: {
      auto *p = static_cast<uint8_t *>(data());
      for (int64_t i = 0; i < n; ++i) p[i] = next(state) & 1;
      break;
    }
  }
}

namespace {
template <typename T>
Comparison compareFloats(const T *a, const T *b, int64_t n, double rtol, double atolScale) {
  Comparison c;
  double maxRef = 0.0;
  for (int64_t i = 0; i < n; ++i)
    if (std::isfinite(static_cast<double>(b[i]))) maxRef = std::max(maxRef, std::fabs(static_cast<double>(b[i])));
  double atol = atolScale * std::max(1.0, maxRef);
  for (int64_t i = 0; i < n; ++i) {
    double x = a[i], y = b[i];
    if (std::isnan(x) || std::isnan(y)) {
      if (std::isnan(x) && std::isnan(y)) continue;
    } else if (x == y) {
      continue;
    }
    double err = std::fabs(x - y);
    if (!std::isnan(err)) c.maxAbsError = std::max(c.maxAbsError, err);
    if (std::isnan(err) || err > atol + rtol * std::fabs(y)) {
      if (c.equal) {
        std::ostringstream os;
        os << "element " << i << ": got " << x << ", expected " << y;
        c.detail = os.str();
      }
      c.equal = false;
    }
  }
  return c;
}

template <typename T>
Comparison compareInts(const T *a, const T *b, int64_t n) {
  Comparison c;
  for (int64_t i = 0; i < n; ++i) {
    if (a[i] != b[i]) {
      double err = std::fabs(static_cast<double>(a[i]) - static_cast<double>(b[i]));
      c.maxAbsError = std::max(c.maxAbsError, err);
      if (c.equal) {
        std::ostringstream os;
        os << "element " << i << ": got " << static_cast<int64_t>(a[i]) << ", expected " << static_cast<int64_t>(b[i]);
        c.detail = os.str();
      }
      c.equal = false;
    }
  }
  return c;
}
}  // namespace

Comparison compareBuffers(const Buffer &candidate, const Buffer &reference) {
  const TensorSpec &s = reference.spec();
  if (candidate.spec().shape != s.shape || candidate.spec().kind != s.kind) {
    Comparison c;
    c.equal = false;
    c.detail = "shape or element type differs from the reference";
    return c;
  }
  int64_t n = s.numElements();
  switch (s.kind) {
    case ElementKind::F32:
      return compareFloats(static_cast<const float *>(candidate.data()), static_cast<const float *>(reference.data()),
                           n, 1e-3, 1e-4);
    case ElementKind::F64:
      return compareFloats(static_cast<const double *>(candidate.data()), static_cast<const double *>(reference.data()),
                           n, 1e-9, 1e-12);
    case ElementKind::I32:
      return compareInts(static_cast<const int32_t *>(candidate.data()), static_cast<const int32_t *>(reference.data()),
                         n);
    case ElementKind::I64:
      return compareInts(static_cast<const int64_t *>(candidate.data()), static_cast<const int64_t *>(reference.data()),
                         n);
    case ElementKind::I8:
    case ElementKind::I1:
      return compareInts(static_cast<const int8_t *>(candidate.data()), static_cast<const int8_t *>(reference.data()),
                         n);
  }
  return {};
}

}  // namespace mlir_rl::runners
