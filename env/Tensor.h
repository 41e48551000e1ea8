// Named dense tensors (observations) and the Box specs that describe them, free of any RPC types.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace mlir_rl::env {

enum class DType { Float32, Float64, Int64, Int32, Bool };

struct NamedTensor {
  std::string name;
  DType dtype = DType::Float32;
  std::vector<int64_t> shape;
  std::string bytes;  // row-major, little-endian

  template <typename T>
  static NamedTensor of(std::string name, DType dtype, std::vector<int64_t> shape, const std::vector<T> &values) {
    NamedTensor t{std::move(name), dtype, std::move(shape), {}};
    t.bytes.resize(values.size() * sizeof(T));
    if (!values.empty()) std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
    return t;
  }
};

struct BoxSpec {
  std::string name;
  std::string description;
  std::vector<int64_t> shape;
  DType dtype = DType::Float32;
  double low = 0, high = 0;
};

}  // namespace mlir_rl::env
