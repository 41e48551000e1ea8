#include "env/Generators.h"

#include <map>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace mlir_rl::env {

namespace {

// Deterministic across platforms: splitmix64 over (seed, attempt), not std::*_distribution.
class Draw {
 public:
  Draw(uint64_t seed, int attempt) : state_(seed * 0x9e3779b97f4a7c15ULL + static_cast<uint64_t>(attempt) + 1) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  template <typename T>
  T pick(const std::vector<T> &v) {
    return v[next() % v.size()];
  }

 private:
  uint64_t state_;
};

std::string tensor(const std::vector<int64_t> &shape, const std::string &dt) {
  return "tensor<" + absl::StrJoin(shape, "x") + "x" + dt + ">";
}

std::string header(const std::string &family, uint64_t seed, const std::string &what) {
  return absl::StrCat("// description: generated ", family, " (seed ", seed, "): ", what, "\n");
}

// Shared body pieces.
std::string zeroInit(const std::string &type, const std::string &dt) {
  return absl::StrCat("  %zero = arith.constant 0.0 : ", dt, "\n  %init = tensor.empty() : ", type,
                      "\n  %acc = linalg.fill ins(%zero : ", dt, ") outs(%init : ", type, ") -> ", type, "\n");
}

const std::vector<int64_t> kDims = {16, 24, 32, 48, 64, 96, 128, 160, 192, 256, 320, 384};
const std::vector<int64_t> kChannels = {8, 16, 24, 32, 48, 64, 96, 128};
const std::vector<int64_t> kSpatial = {8, 10, 12, 14, 16, 20, 24, 28, 32};

std::string matmul(uint64_t seed, Draw &d, const std::string &dt) {
  int64_t m = d.pick(kDims), n = d.pick(kDims), k = d.pick(kDims);
  std::string a = tensor({m, k}, dt), b = tensor({k, n}, dt), c = tensor({m, n}, dt);
  return header("matmul", seed, absl::StrCat(m, "x", n, "x", k, " ", dt)) +
         absl::StrCat("func.func @matmul(%A: ", a, ", %B: ", b, ") -> ", c, " {\n", zeroInit(c, dt),
                      "  %r = linalg.matmul ins(%A, %B : ", a, ", ", b, ") outs(%acc : ", c, ") -> ", c,
                      "\n  return %r : ", c, "\n}\n");
}

std::string batchMatmul(uint64_t seed, Draw &d, const std::string &dt) {
  int64_t bt = d.pick<int64_t>({2, 3, 4, 6, 8}), m = d.pick(kDims) / 2, n = d.pick(kDims) / 2, k = d.pick(kDims) / 2;
  std::string a = tensor({bt, m, k}, dt), b = tensor({bt, k, n}, dt), c = tensor({bt, m, n}, dt);
  return header("batch_matmul", seed, absl::StrCat(bt, "x", m, "x", n, "x", k, " ", dt)) +
         absl::StrCat("func.func @batch_matmul(%A: ", a, ", %B: ", b, ") -> ", c, " {\n", zeroInit(c, dt),
                      "  %r = linalg.batch_matmul ins(%A, %B : ", a, ", ", b, ") outs(%acc : ", c, ") -> ", c,
                      "\n  return %r : ", c, "\n}\n");
}

std::string conv(uint64_t seed, Draw &d, const std::string &dt, bool nchw) {
  int64_t c = d.pick(kChannels), f = d.pick(kChannels), h = d.pick(kSpatial), k = d.pick<int64_t>({1, 3, 5});
  int64_t o = h - k + 1;
  std::vector<int64_t> in = nchw ? std::vector<int64_t>{1, c, h, h} : std::vector<int64_t>{1, h, h, c};
  std::vector<int64_t> w = nchw ? std::vector<int64_t>{f, c, k, k} : std::vector<int64_t>{k, k, c, f};
  std::vector<int64_t> out = nchw ? std::vector<int64_t>{1, f, o, o} : std::vector<int64_t>{1, o, o, f};
  std::string ti = tensor(in, dt), tw = tensor(w, dt), to = tensor(out, dt);
  std::string op = nchw ? "linalg.conv_2d_nchw_fchw" : "linalg.conv_2d_nhwc_hwcf";
  return header(nchw ? "conv2d_nchw" : "conv2d_nhwc", seed,
                absl::StrCat("input ", absl::StrJoin(in, "x"), ", filter ", absl::StrJoin(w, "x"), " ", dt)) +
         absl::StrCat("func.func @conv(%I: ", ti, ", %W: ", tw, ") -> ", to, " {\n", zeroInit(to, dt), "  %r = ", op,
                      " {dilations = dense<1> : tensor<2xi64>, strides = dense<1> : tensor<2xi64>} ins(%I, %W : ", ti,
                      ", ", tw, ") outs(%acc : ", to, ") -> ", to, "\n  return %r : ", to, "\n}\n");
}

std::string depthwise(uint64_t seed, Draw &d, const std::string &dt) {
  int64_t c = d.pick(kChannels), h = d.pick(kSpatial), k = d.pick<int64_t>({3, 5});
  int64_t o = h - k + 1;
  std::string ti = tensor({1, h, h, c}, dt), tw = tensor({k, k, c}, dt), to = tensor({1, o, o, c}, dt);
  return header("depthwise_nhwc", seed, absl::StrCat("input 1x", h, "x", h, "x", c, ", kernel ", k, " ", dt)) +
         absl::StrCat("func.func @depthwise(%I: ", ti, ", %W: ", tw, ") -> ", to, " {\n", zeroInit(to, dt),
                      "  %r = linalg.depthwise_conv_2d_nhwc_hwc {dilations = dense<1> : tensor<2xi64>, strides = "
                      "dense<1> : tensor<2xi64>} ins(%I, %W : ",
                      ti, ", ", tw, ") outs(%acc : ", to, ") -> ", to, "\n  return %r : ", to, "\n}\n");
}

std::string poolMax(uint64_t seed, Draw &d, const std::string &dt) {
  int64_t c = d.pick(kChannels), k = d.pick<int64_t>({2, 3}), s = 2, o = d.pick(kSpatial) / 2 + 2;
  int64_t h = (o - 1) * s + k;
  std::string ti = tensor({1, c, h, h}, dt), tk = tensor({k, k}, dt), to = tensor({1, c, o, o}, dt);
  std::string lowest = dt == "f32" ? "0xFF800000" : "0xFFF0000000000000";
  return header("pooling_max", seed, absl::StrCat("input 1x", c, "x", h, "x", h, ", window ", k, ", stride 2 ", dt)) +
         absl::StrCat("func.func @pool(%I: ", ti, ") -> ", to, " {\n  %lowest = arith.constant ", lowest, " : ", dt,
                      "\n  %init = tensor.empty() : ", to, "\n  %acc = linalg.fill ins(%lowest : ", dt,
                      ") outs(%init : ", to, ") -> ", to, "\n  %win = tensor.empty() : ", tk,
                      "\n  %r = linalg.pooling_nchw_max {dilations = dense<1> : tensor<2xi64>, strides = dense<2> : "
                      "tensor<2xi64>} ins(%I, %win : ",
                      ti, ", ", tk, ") outs(%acc : ", to, ") -> ", to, "\n  return %r : ", to, "\n}\n");
}

std::string elementwise(uint64_t seed, Draw &d, const std::string &dt, bool relu) {
  int64_t m = d.pick(kDims), n = d.pick(kDims);
  std::string t = tensor({m, n}, dt);
  if (!relu)
    return header("add", seed, absl::StrCat(m, "x", n, " ", dt)) +
           absl::StrCat("func.func @add(%A: ", t, ", %B: ", t, ") -> ", t, " {\n  %init = tensor.empty() : ", t,
                        "\n  %r = linalg.add ins(%A, %B : ", t, ", ", t, ") outs(%init : ", t, ") -> ", t,
                        "\n  return %r : ", t, "\n}\n");
  return header("relu", seed, absl::StrCat(m, "x", n, " ", dt)) +
         absl::StrCat("#id = affine_map<(d0, d1) -> (d0, d1)>\nfunc.func @relu(%X: ", t, ") -> ", t,
                      " {\n  %zero = arith.constant 0.0 : ", dt, "\n  %init = tensor.empty() : ", t,
                      "\n  %r = linalg.generic {indexing_maps = [#id, #id], iterator_types = [\"parallel\", "
                      "\"parallel\"]} ins(%X : ",
                      t, ") outs(%init : ", t, ") {\n  ^bb0(%x: ", dt, ", %o: ", dt,
                      "):\n    %y = arith.maximumf %x, %zero : ", dt, "\n    linalg.yield %y : ", dt, "\n  } -> ", t,
                      "\n  return %r : ", t, "\n}\n");
}

std::string matmulRelu(uint64_t seed, Draw &d, const std::string &dt) {
  int64_t m = d.pick(kDims), n = d.pick(kDims), k = d.pick(kDims);
  std::string a = tensor({m, k}, dt), b = tensor({k, n}, dt), c = tensor({m, n}, dt);
  return header("matmul_relu", seed, absl::StrCat(m, "x", n, "x", k, " ", dt)) +
         absl::StrCat("#id = affine_map<(d0, d1) -> (d0, d1)>\nfunc.func @matmul_relu(%A: ", a, ", %B: ", b, ") -> ", c,
                      " {\n", zeroInit(c, dt), "  %mm = linalg.matmul ins(%A, %B : ", a, ", ", b, ") outs(%acc : ", c,
                      ") -> ", c, "\n  %out = tensor.empty() : ", c,
                      "\n  %r = linalg.generic {indexing_maps = [#id, #id], iterator_types = [\"parallel\", "
                      "\"parallel\"]} ins(%mm : ",
                      c, ") outs(%out : ", c, ") {\n  ^bb0(%x: ", dt, ", %o: ", dt,
                      "):\n    %y = arith.maximumf %x, %zero : ", dt, "\n    linalg.yield %y : ", dt, "\n  } -> ", c,
                      "\n  return %r : ", c, "\n}\n");
}

using Family = std::function<std::string(uint64_t, Draw &, const std::string &)>;

const std::map<std::string, Family> &families() {
  static const std::map<std::string, Family> f = {
      {"matmul", matmul},
      {"batch_matmul", batchMatmul},
      {"conv2d_nchw", [](uint64_t s, Draw &d, const std::string &dt) { return conv(s, d, dt, true); }},
      {"conv2d_nhwc", [](uint64_t s, Draw &d, const std::string &dt) { return conv(s, d, dt, false); }},
      {"depthwise_nhwc", depthwise},
      {"pooling_max", poolMax},
      {"add", [](uint64_t s, Draw &d, const std::string &dt) { return elementwise(s, d, dt, false); }},
      {"relu", [](uint64_t s, Draw &d, const std::string &dt) { return elementwise(s, d, dt, true); }},
      {"matmul_relu", matmulRelu},
  };
  return f;
}

}  // namespace

std::vector<std::string> generatorFamilies() {
  std::vector<std::string> names;
  for (const auto &[name, fn] : families()) names.push_back(name);
  return names;
}

absl::StatusOr<std::string> generateBenchmark(const std::string &family, uint64_t seed, int attempt) {
  auto it = families().find(family);
  if (it == families().end())
    return absl::NotFoundError(absl::StrCat("unknown generator family '", family,
                                            "' (known: ", absl::StrJoin(generatorFamilies(), ", "), ")"));
  Draw d(seed, attempt);
  std::string dt = d.next() % 4 == 0 ? "f64" : "f32";
  return it->second(seed, d, dt);
}

}  // namespace mlir_rl::env
