// Host buffers for kernel arguments and results: 64-byte aligned, filled deterministically from a seed.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace mlir_rl::runners {

enum class ElementKind { F32, F64, I32, I64, I8, I1 };

size_t elementBytes(ElementKind kind);
const char *elementName(ElementKind kind);

// Shape and element type of one kernel argument or result.
struct TensorSpec {
  std::vector<int64_t> shape;
  ElementKind kind = ElementKind::F32;
  int64_t numElements() const;
  int64_t numBytes() const { return numElements() * static_cast<int64_t>(elementBytes(kind)); }
};

// A contiguous row-major buffer aligned to 64 bytes (vector loads may assume natural alignment).
class Buffer {
 public:
  explicit Buffer(TensorSpec spec);
  const TensorSpec &spec() const { return spec_; }
  void *data() { return data_.get(); }
  const void *data() const { return data_.get(); }
  // Fills with reproducible values: floats uniform in [-1, 1), integers in [-8, 8].
  void fillRandom(uint64_t seed);

 private:
  struct Free {
    void operator()(void *p) const;
  };
  TensorSpec spec_;
  std::unique_ptr<void, Free> data_;
};

// Result of comparing a candidate's output with the reference output.
struct Comparison {
  bool equal = true;
  double maxAbsError = 0.0;
  std::string detail;  // first mismatch, when not equal
};

// Elementwise comparison with a tolerance suited to the element type: floats |a - b| <= atol + rtol * |b| with
// (rtol, atol) = (1e-3, 1e-4 * max|ref|) for f32 and (1e-9, 1e-12 * max|ref|) for f64 (reassociated reductions
// differ in the last bits); integers must match exactly. NaN matches only NaN.
Comparison compareBuffers(const Buffer &candidate, const Buffer &reference);

}  // namespace mlir_rl::runners
