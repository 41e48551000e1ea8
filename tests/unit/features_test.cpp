// Observation features, pinned on small modules written here: matmul, 2-D NCHW convolution (+ relu, for the
// producer), max pooling and a generic contraction. Exact access matrices, bounds, iterator types and op counts.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>

#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/IR/AffineExpr.h"
#include "mlir/Parser/Parser.h"

#include "env/Features.h"
#include "env/Session.h"
#include "tests/unit/TestSupport.h"

namespace mlir_rl {
namespace {

using env::ActionType;
using env::DType;
using env::NamedTensor;
using env::Session;
using env::SessionConfig;
using testing::act;

// ---- modules ---------------------------------------------------------------------------------------------------

// C[i, j] += A[i, k] * B[k, j]; loops (i, j, k) = (32, 8, 16).
const char *kMatmul = R"mlir(
func.func @matmul(%A: tensor<32x16xf32>, %B: tensor<16x8xf32>) -> tensor<32x8xf32> {
  %zero = arith.constant 0.0 : f32
  %init = tensor.empty() : tensor<32x8xf32>
  %C = linalg.fill ins(%zero : f32) outs(%init : tensor<32x8xf32>) -> tensor<32x8xf32>
  %R = linalg.matmul ins(%A, %B : tensor<32x16xf32>, tensor<16x8xf32>) outs(%C : tensor<32x8xf32>) -> tensor<32x8xf32>
  return %R : tensor<32x8xf32>
})mlir";

// conv: loops (n, f, oh, ow, c, kh, kw) = (1, 8, 8, 8, 3, 3, 3), strides (2, 2), dilations (1, 2); then relu.
const char *kConvRelu = R"mlir(
#id = affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>
func.func @conv_relu(%I: tensor<1x3x17x19xf32>, %F: tensor<8x3x3x3xf32>) -> tensor<1x8x8x8xf32> {
  %zero = arith.constant 0.0 : f32
  %init = tensor.empty() : tensor<1x8x8x8xf32>
  %O = linalg.fill ins(%zero : f32) outs(%init : tensor<1x8x8x8xf32>) -> tensor<1x8x8x8xf32>
  %conv = linalg.conv_2d_nchw_fchw {strides = dense<2> : tensor<2xi64>, dilations = dense<[1, 2]> : tensor<2xi64>}
      ins(%I, %F : tensor<1x3x17x19xf32>, tensor<8x3x3x3xf32>) outs(%O : tensor<1x8x8x8xf32>) -> tensor<1x8x8x8xf32>
  %empty = tensor.empty() : tensor<1x8x8x8xf32>
  %relu = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel", "parallel", "parallel"]}
      ins(%conv : tensor<1x8x8x8xf32>) outs(%empty : tensor<1x8x8x8xf32>) {
  ^bb0(%in: f32, %out: f32):
    %m = arith.maximumf %in, %zero : f32
    linalg.yield %m : f32
  } -> tensor<1x8x8x8xf32>
  return %relu : tensor<1x8x8x8xf32>
})mlir";

// Max pooling 2x2, stride 2: loops (n, c, oh, ow, kh, kw) = (1, 4, 8, 8, 2, 2).
const char *kPooling = R"mlir(
func.func @pool(%I: tensor<1x4x16x16xf32>) -> tensor<1x4x8x8xf32> {
  %ninf = arith.constant 0xFF800000 : f32
  %window = tensor.empty() : tensor<2x2xf32>
  %init = tensor.empty() : tensor<1x4x8x8xf32>
  %O = linalg.fill ins(%ninf : f32) outs(%init : tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32>
  %R = linalg.pooling_nchw_max {strides = dense<2> : tensor<2xi64>, dilations = dense<1> : tensor<2xi64>}
      ins(%I, %window : tensor<1x4x16x16xf32>, tensor<2x2xf32>) outs(%O : tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32>
  return %R : tensor<1x4x8x8xf32>
})mlir";

// A three-input contraction over loops (b, i, j, k) = (2, 4, 6, 5), k a reduction, with a transposed load, a
// shifted load (k + 1) and a broadcast, and a body mixing float and integer arithmetic:
//   C[b, i, j] = C[b, i, j] - exp((A[b, k, i] * B[k + 1, j] * W[j] + float(2 * k)) / 3)
const char *kContraction = R"mlir(
func.func @contraction(%A: tensor<2x5x4xf32>, %B: tensor<6x6xf32>, %W: tensor<6xf32>) -> tensor<2x4x6xf32> {
  %zero = arith.constant 0.0 : f32
  %init = tensor.empty() : tensor<2x4x6xf32>
  %C = linalg.fill ins(%zero : f32) outs(%init : tensor<2x4x6xf32>) -> tensor<2x4x6xf32>
  %R = linalg.generic {
      indexing_maps = [affine_map<(b, i, j, k) -> (b, k, i)>, affine_map<(b, i, j, k) -> (k + 1, j)>,
                       affine_map<(b, i, j, k) -> (j)>, affine_map<(b, i, j, k) -> (b, i, j)>],
      iterator_types = ["parallel", "parallel", "parallel", "reduction"]}
      ins(%A, %B, %W : tensor<2x5x4xf32>, tensor<6x6xf32>, tensor<6xf32>) outs(%C : tensor<2x4x6xf32>) {
  ^bb0(%a: f32, %bv: f32, %w: f32, %acc: f32):
    %two = arith.constant 2 : i32
    %three = arith.constant 3.0 : f32
    %k = linalg.index 3 : index
    %ki = arith.index_cast %k : index to i32
    %k2 = arith.muli %ki, %two : i32
    %kf = arith.sitofp %k2 : i32 to f32
    %ab = arith.mulf %a, %bv : f32
    %abw = arith.mulf %ab, %w : f32
    %s = arith.addf %abw, %kf : f32
    %d = arith.divf %s, %three : f32
    %e = math.exp %d : f32
    %r = arith.subf %acc, %e : f32
    linalg.yield %r : f32
  } -> tensor<2x4x6xf32>
  return %R : tensor<2x4x6xf32>
})mlir";

// ---- helpers ---------------------------------------------------------------------------------------------------

std::unique_ptr<Session> openModule(const char *text, const std::string &name, SessionConfig config = {}) {
  auto b = env::Benchmark::parse(testing::context(), "benchmark://golden/" + name, text);
  EXPECT_TRUE(b.ok()) << b.status();
  if (!b.ok()) return nullptr;
  auto s = Session::create(*b, config, 0, &testing::evaluator());
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

void step(Session &s, const std::vector<int64_t> &action) {
  auto r = s.step(action);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->applied) << r->failureReason;
}

template <typename T>
std::vector<T> values(const std::vector<NamedTensor> &obs, const std::string &name) {
  for (const NamedTensor &t : obs)
    if (t.name == name) {
      std::vector<T> out(t.bytes.size() / sizeof(T));
      std::memcpy(out.data(), t.bytes.data(), out.size() * sizeof(T));
      return out;
    }
  ADD_FAILURE() << "no observation tensor " << name;
  return {};
}

// Pads a list to `n` entries with `fill`.
template <typename T>
std::vector<T> padded(std::vector<T> v, size_t n, T fill = T()) {
  v.resize(n, fill);
  return v;
}

using Matrix = std::vector<std::vector<int32_t>>;  // rows = tensor dims; columns = the op's loops, then the constant

// The whole [A, L, L + 1] tensor expected when the accesses are `matrices` (all else zero).
std::vector<int32_t> accessTensor(const SessionConfig &c, const std::vector<Matrix> &matrices) {
  int L = c.maxLoops;
  std::vector<int32_t> out(static_cast<size_t>(c.maxAccesses) * L * (L + 1), 0);
  for (size_t a = 0; a < matrices.size(); ++a)
    for (size_t r = 0; r < matrices[a].size(); ++r) {
      const std::vector<int32_t> &row = matrices[a][r];
      for (size_t d = 0; d + 1 < row.size(); ++d) out[(a * L + r) * (L + 1) + d] = row[d];
      out[(a * L + r) * (L + 1) + L] = row.back();
    }
  return out;
}

// op_counts as {float row, int row}, columns add, sub, mul, div, exp, max, other.
std::vector<int32_t> counts(std::vector<int32_t> floats, std::vector<int32_t> ints) {
  floats.insert(floats.end(), ints.begin(), ints.end());
  return floats;
}

std::vector<float> oneHot(env::OpFamily family) {
  std::vector<float> v(env::kNumOpFamilies, 0.f);
  v[static_cast<int>(family)] = 1.f;
  return v;
}

void expectNoProducer(const std::vector<NamedTensor> &obs, const SessionConfig &c) {
  int L = c.maxLoops, A = c.maxAccesses;
  EXPECT_EQ(values<float>(obs, "producer_op_type"), std::vector<float>(env::kNumOpFamilies, 0.f));
  EXPECT_EQ(values<int64_t>(obs, "producer_loop_bounds"), std::vector<int64_t>(L, 0));
  EXPECT_EQ(values<int32_t>(obs, "producer_iterator_types"), std::vector<int32_t>(L, 0));
  EXPECT_EQ(values<int32_t>(obs, "producer_load_access"), accessTensor(c, {}));
  EXPECT_EQ(values<int32_t>(obs, "producer_store_access"), accessTensor(c, {}));
  EXPECT_EQ(values<int32_t>(obs, "producer_access_ranks"), std::vector<int32_t>(2 * A, -1));
  EXPECT_EQ(values<int32_t>(obs, "producer_op_counts"), std::vector<int32_t>(2 * env::kNumArithKinds, 0));
  EXPECT_EQ(values<uint8_t>(obs, "producer_vectorizable"), std::vector<uint8_t>{0});
}

// ---- expected features of the golden ops -----------------------------------------------------------------------

const std::vector<Matrix> kMatmulLoads = {
    {{1, 0, 0, 0}, {0, 0, 1, 0}},  // A[i, k]
    {{0, 0, 1, 0}, {0, 1, 0, 0}},  // B[k, j]
};
const std::vector<Matrix> kMatmulStores = {{{1, 0, 0, 0}, {0, 1, 0, 0}}};  // C[i, j]

const std::vector<Matrix> kConvLoads = {
    // I[n, c, 2 * oh + kh, 2 * ow + 2 * kw]  (strides 2, dilations (1, 2))
    {{1, 0, 0, 0, 0, 0, 0, 0}, {0, 0, 0, 0, 1, 0, 0, 0}, {0, 0, 2, 0, 0, 1, 0, 0}, {0, 0, 0, 2, 0, 0, 2, 0}},
    // F[f, c, kh, kw]
    {{0, 1, 0, 0, 0, 0, 0, 0}, {0, 0, 0, 0, 1, 0, 0, 0}, {0, 0, 0, 0, 0, 1, 0, 0}, {0, 0, 0, 0, 0, 0, 1, 0}},
};
const std::vector<Matrix> kConvStores = {  // O[n, f, oh, ow]
    {{1, 0, 0, 0, 0, 0, 0, 0}, {0, 1, 0, 0, 0, 0, 0, 0}, {0, 0, 1, 0, 0, 0, 0, 0}, {0, 0, 0, 1, 0, 0, 0, 0}}};
const std::vector<Matrix> kIdentity4 = {{{1, 0, 0, 0, 0}, {0, 1, 0, 0, 0}, {0, 0, 1, 0, 0}, {0, 0, 0, 1, 0}}};

void expectConv(const std::vector<NamedTensor> &obs, const SessionConfig &c, const std::string &p) {
  int L = c.maxLoops;
  EXPECT_EQ(values<float>(obs, p + "op_type"), oneHot(env::OpFamily::Conv));
  EXPECT_EQ(values<int64_t>(obs, p + "loop_bounds"), padded<int64_t>({1, 8, 8, 8, 3, 3, 3}, L));
  EXPECT_EQ(values<int32_t>(obs, p + "iterator_types"), padded<int32_t>({1, 1, 1, 1, 2, 2, 2}, L));
  EXPECT_EQ(values<int32_t>(obs, p + "load_access"), accessTensor(c, kConvLoads));
  EXPECT_EQ(values<int32_t>(obs, p + "store_access"), accessTensor(c, kConvStores));
  EXPECT_EQ(values<int32_t>(obs, p + "access_ranks"),
            padded<int32_t>({4, 4, -1, -1, -1, -1, -1, 4}, 2 * c.maxAccesses, -1));
  EXPECT_EQ(values<int32_t>(obs, p + "op_counts"), counts({1, 0, 1, 0, 0, 0, 0}, {0, 0, 0, 0, 0, 0, 0}));
}

// vectorizable is the mask's VECTORIZATION entry (whose legality rules belong to transforms/).
void expectVectorizableIsTheMask(const std::vector<NamedTensor> &obs) {
  EXPECT_EQ(values<uint8_t>(obs, "vectorizable"),
            std::vector<uint8_t>{values<uint8_t>(obs, "mask_type")[static_cast<int>(ActionType::Vectorization)]});
}

// ---- tests -----------------------------------------------------------------------------------------------------

TEST(Features, SpaceMatchesObservationInNameShapeAndDtype) {
  SessionConfig small;
  small.maxLoops = 5;
  small.maxAccesses = 2;
  for (const SessionConfig &c : {SessionConfig{}, small}) {
    auto s = openModule(kContraction, "contraction", c);
    ASSERT_TRUE(s);
    auto obs = s->observe();
    auto space = env::observationSpace(c);
    ASSERT_EQ(obs.size(), space.size());
    for (size_t i = 0; i < obs.size(); ++i) {
      EXPECT_EQ(obs[i].name, space[i].name);
      EXPECT_EQ(obs[i].shape, space[i].shape) << obs[i].name;
      EXPECT_EQ(obs[i].dtype, space[i].dtype) << obs[i].name;
      EXPECT_FALSE(space[i].description.empty()) << obs[i].name;
    }
  }
  // The names clients rely on keep their places; the new ones follow.
  std::vector<std::string> names;
  for (const env::BoxSpec &b : env::observationSpace(small)) names.push_back(b.name);
  EXPECT_EQ(names, (std::vector<std::string>{"op_type",
                                             "loop_bounds",
                                             "loop_bounds_log2",
                                             "iterator_types",
                                             "progress",
                                             "action_history",
                                             "interchange_partial",
                                             "mask_type",
                                             "mask_tiles",
                                             "mask_interchange",
                                             "load_access",
                                             "store_access",
                                             "access_ranks",
                                             "op_counts",
                                             "vectorizable",
                                             "producer_op_type",
                                             "producer_loop_bounds",
                                             "producer_loop_bounds_log2",
                                             "producer_iterator_types",
                                             "producer_load_access",
                                             "producer_store_access",
                                             "producer_access_ranks",
                                             "producer_op_counts",
                                             "producer_vectorizable",
                                             "mask_unroll",
                                             "mask_tiles_peeled"}));
  auto space = env::observationSpace(small);
  EXPECT_EQ(space[10].shape, (std::vector<int64_t>{2, 5, 6}));  // load_access: [max_accesses, L, L + 1]
  EXPECT_EQ(space[12].shape, (std::vector<int64_t>{2, 2}));     // access_ranks
  EXPECT_EQ(space[13].shape, (std::vector<int64_t>{2, 7}));     // op_counts
}

TEST(Features, Matmul) {
  SessionConfig c;
  auto s = openModule(kMatmul, "matmul", c);
  ASSERT_TRUE(s);
  auto obs = s->observe();
  EXPECT_EQ(values<float>(obs, "op_type"), oneHot(env::OpFamily::Matmul));
  EXPECT_EQ(values<int64_t>(obs, "loop_bounds"), padded<int64_t>({32, 8, 16}, 12));
  std::vector<float> log2 = values<float>(obs, "loop_bounds_log2");
  EXPECT_FLOAT_EQ(log2[0], std::log2(33.f));
  EXPECT_FLOAT_EQ(log2[2], std::log2(17.f));
  EXPECT_EQ(log2[3], 0.f);
  EXPECT_EQ(values<int32_t>(obs, "iterator_types"), padded<int32_t>({1, 1, 2}, 12));
  EXPECT_EQ(values<int32_t>(obs, "load_access"), accessTensor(c, kMatmulLoads));
  EXPECT_EQ(values<int32_t>(obs, "store_access"), accessTensor(c, kMatmulStores));
  EXPECT_EQ(values<int32_t>(obs, "access_ranks"), padded<int32_t>({2, 2, -1, -1, -1, -1, -1, 2}, 14, -1));
  EXPECT_EQ(values<int32_t>(obs, "op_counts"), counts({1, 0, 1, 0, 0, 0, 0}, {0, 0, 0, 0, 0, 0, 0}));
  expectVectorizableIsTheMask(obs);
  EXPECT_EQ(values<int64_t>(obs, "progress"), (std::vector<int64_t>{0, 1, 0, 0}));
  expectNoProducer(obs, c);  // its only other operand comes from linalg.fill

  // Vectorizable follows the mask: after tiling to 4x8x1 the op is small enough.
  step(*s, act(*s, ActionType::Tiling, {4, 8, 1}));
  obs = s->observe();
  EXPECT_EQ(values<int64_t>(obs, "loop_bounds"), padded<int64_t>({4, 8, 1}, 12));
  EXPECT_EQ(values<int32_t>(obs, "load_access"), accessTensor(c, kMatmulLoads));  // the maps do not change
  EXPECT_EQ(values<uint8_t>(obs, "vectorizable"), std::vector<uint8_t>{1});
  expectVectorizableIsTheMask(obs);

  // An interchange permutes the loops, hence the columns of the access matrices: order (k, i, j).
  step(*s, act(*s, ActionType::Interchange, {}, 2));
  step(*s, act(*s, ActionType::Interchange, {}, 0));
  obs = s->observe();
  EXPECT_EQ(values<float>(obs, "op_type"), oneHot(env::OpFamily::Matmul));  // still the benchmark's family
  EXPECT_EQ(values<int64_t>(obs, "loop_bounds"), padded<int64_t>({1, 4, 8}, 12));
  EXPECT_EQ(values<int32_t>(obs, "iterator_types"), padded<int32_t>({2, 1, 1}, 12));
  EXPECT_EQ(values<int32_t>(obs, "load_access"),
            accessTensor(c, {{{0, 1, 0, 0}, {1, 0, 0, 0}}, {{1, 0, 0, 0}, {0, 0, 1, 0}}}));
  EXPECT_EQ(values<int32_t>(obs, "store_access"), accessTensor(c, {{{0, 1, 0, 0}, {0, 0, 1, 0}}}));
  EXPECT_EQ(values<int32_t>(obs, "op_counts"), counts({1, 0, 1, 0, 0, 0, 0}, {0, 0, 0, 0, 0, 0, 0}));
}

TEST(Features, ConvAndItsReluConsumer) {
  SessionConfig c;
  auto s = openModule(kConvRelu, "conv_relu", c);
  ASSERT_TRUE(s);
  // The relu (consumer) comes first; its producer is the convolution.
  auto obs = s->observe();
  EXPECT_EQ(values<float>(obs, "op_type"), oneHot(env::OpFamily::Elementwise));
  EXPECT_EQ(values<int64_t>(obs, "loop_bounds"), padded<int64_t>({1, 8, 8, 8}, 12));
  EXPECT_EQ(values<int32_t>(obs, "iterator_types"), padded<int32_t>({1, 1, 1, 1}, 12));
  EXPECT_EQ(values<int32_t>(obs, "load_access"), accessTensor(c, kIdentity4));
  EXPECT_EQ(values<int32_t>(obs, "store_access"), accessTensor(c, kIdentity4));
  EXPECT_EQ(values<int32_t>(obs, "access_ranks"), padded<int32_t>({4, -1, -1, -1, -1, -1, -1, 4}, 14, -1));
  EXPECT_EQ(values<int32_t>(obs, "op_counts"), counts({0, 0, 0, 0, 0, 1, 0}, {0, 0, 0, 0, 0, 0, 0}));
  expectConv(obs, c, "producer_");
  EXPECT_EQ(values<float>(obs, "producer_loop_bounds_log2")[4], std::log2(4.f));
  uint8_t producerVectorizable = values<uint8_t>(obs, "producer_vectorizable")[0];

  // The producer is still found once the consumer is tiled (through extract_slice and the loop's iter_args) ...
  step(*s, act(*s, ActionType::Tiling, {0, 4, 0, 0}));
  obs = s->observe();
  EXPECT_EQ(values<int64_t>(obs, "loop_bounds"), padded<int64_t>({1, 4, 8, 8}, 12));
  expectConv(obs, c, "producer_");
  // ... tiled in parallel (scf.forall shared outputs) ...
  step(*s, act(*s, ActionType::TiledParallelization, {0, 2, 0, 0}));
  obs = s->observe();
  EXPECT_EQ(values<int64_t>(obs, "loop_bounds"), padded<int64_t>({1, 2, 8, 8}, 12));
  expectConv(obs, c, "producer_");
  // ... and interchanged (generalized).
  step(*s, act(*s, ActionType::Interchange, {}, 3));
  step(*s, act(*s, ActionType::Interchange, {}, 2));
  step(*s, act(*s, ActionType::Interchange, {}, 1));
  obs = s->observe();
  EXPECT_EQ(values<int64_t>(obs, "loop_bounds"), padded<int64_t>({8, 8, 2, 1}, 12));
  expectConv(obs, c, "producer_");

  // Next op: the convolution itself, whose inputs are arguments and whose init is a fill: no producer.
  step(*s, act(*s, ActionType::NoTransformation));
  obs = s->observe();
  EXPECT_EQ(values<int64_t>(obs, "progress")[0], 1);
  expectConv(obs, c, "");
  expectNoProducer(obs, c);
  // The convolution was never transformed: what its consumer saw is what its own mask says now.
  expectVectorizableIsTheMask(obs);
  EXPECT_EQ(values<uint8_t>(obs, "vectorizable")[0], producerVectorizable);
}

TEST(Features, Pooling) {
  SessionConfig c;
  auto s = openModule(kPooling, "pool", c);
  ASSERT_TRUE(s);
  auto obs = s->observe();
  EXPECT_EQ(values<float>(obs, "op_type"), oneHot(env::OpFamily::Pooling));
  EXPECT_EQ(values<int64_t>(obs, "loop_bounds"), padded<int64_t>({1, 4, 8, 8, 2, 2}, 12));
  EXPECT_EQ(values<int32_t>(obs, "iterator_types"), padded<int32_t>({1, 1, 1, 1, 2, 2}, 12));
  EXPECT_EQ(
      values<int32_t>(obs, "load_access"),
      accessTensor(c, {
                          // I[n, c, 2 * oh + kh, 2 * ow + kw]
                          {{1, 0, 0, 0, 0, 0, 0}, {0, 1, 0, 0, 0, 0, 0}, {0, 0, 2, 0, 1, 0, 0}, {0, 0, 0, 2, 0, 1, 0}},
                          // window[kh, kw]
                          {{0, 0, 0, 0, 1, 0, 0}, {0, 0, 0, 0, 0, 1, 0}},
                      }));
  EXPECT_EQ(
      values<int32_t>(obs, "store_access"),
      accessTensor(c, {{{1, 0, 0, 0, 0, 0, 0}, {0, 1, 0, 0, 0, 0, 0}, {0, 0, 1, 0, 0, 0, 0}, {0, 0, 0, 1, 0, 0, 0}}}));
  EXPECT_EQ(values<int32_t>(obs, "access_ranks"), padded<int32_t>({4, 2, -1, -1, -1, -1, -1, 4}, 14, -1));
  EXPECT_EQ(values<int32_t>(obs, "op_counts"), counts({0, 0, 0, 0, 0, 1, 0}, {0, 0, 0, 0, 0, 0, 0}));
  expectVectorizableIsTheMask(obs);
  expectNoProducer(obs, c);
}

TEST(Features, GenericContraction) {
  SessionConfig c;
  auto s = openModule(kContraction, "contraction", c);
  ASSERT_TRUE(s);
  auto obs = s->observe();
  EXPECT_EQ(values<float>(obs, "op_type"), oneHot(env::OpFamily::Generic));
  EXPECT_EQ(values<int64_t>(obs, "loop_bounds"), padded<int64_t>({2, 4, 6, 5}, 12));
  EXPECT_EQ(values<int32_t>(obs, "iterator_types"), padded<int32_t>({1, 1, 1, 2}, 12));
  const std::vector<Matrix> loads = {
      {{1, 0, 0, 0, 0}, {0, 0, 0, 1, 0}, {0, 1, 0, 0, 0}},  // A[b, k, i]
      {{0, 0, 0, 1, 1}, {0, 0, 1, 0, 0}},                   // B[k + 1, j]
      {{0, 0, 1, 0, 0}},                                    // W[j]
  };
  EXPECT_EQ(values<int32_t>(obs, "load_access"), accessTensor(c, loads));
  EXPECT_EQ(values<int32_t>(obs, "store_access"),
            accessTensor(c, {{{1, 0, 0, 0, 0}, {0, 1, 0, 0, 0}, {0, 0, 1, 0, 0}}}));
  EXPECT_EQ(values<int32_t>(obs, "access_ranks"), padded<int32_t>({3, 2, 1, -1, -1, -1, -1, 3}, 14, -1));
  // float: add, sub, mul x2, div, exp, other (sitofp); int: mul, other (index_cast). Constants are not counted.
  EXPECT_EQ(values<int32_t>(obs, "op_counts"), counts({1, 1, 2, 1, 1, 0, 1}, {0, 0, 1, 0, 0, 0, 1}));
  expectVectorizableIsTheMask(obs);
  expectNoProducer(obs, c);

  // Smaller sizes per session: 5 loops, 2 accesses (the third load, W, is left out).
  SessionConfig small;
  small.maxLoops = 5;
  small.maxAccesses = 2;
  auto t = openModule(kContraction, "contraction", small);
  ASSERT_TRUE(t);
  obs = t->observe();
  EXPECT_EQ(values<int64_t>(obs, "loop_bounds"), (std::vector<int64_t>{2, 4, 6, 5, 0}));
  EXPECT_EQ(values<int32_t>(obs, "load_access"), accessTensor(small, {loads[0], loads[1]}));
  EXPECT_EQ(values<int32_t>(obs, "access_ranks"), (std::vector<int32_t>{3, 2, 3, -1}));
}

// Producers are found through what tiling leaves between ops: a producer tiled with scf.for (its tile inserted
// into the iter_arg) or with scf.forall (parallel_insert_slice into the shared output); fills and untagged ops are
// never producers; inputs come before inits.
TEST(Features, ProducerIsTracedThroughTiledLoops) {
  const char *text = R"mlir(
  func.func @f(%A: tensor<8x8xf32>, %B: tensor<8x8xf32>) -> (tensor<8x8xf32>, tensor<8x8xf32>, tensor<8x8xf32>, tensor<8x8xf32>) {
    %zero = arith.constant 0.0 : f32
    %c0 = arith.constant 0 : index
    %c4 = arith.constant 4 : index
    %c8 = arith.constant 8 : index
    %e = tensor.empty() : tensor<8x8xf32>
    %p = scf.for %i = %c0 to %c8 step %c4 iter_args(%acc = %e) -> (tensor<8x8xf32>) {
      %a = tensor.extract_slice %A[%i, 0] [4, 8] [1, 1] : tensor<8x8xf32> to tensor<4x8xf32>
      %o = tensor.extract_slice %acc[%i, 0] [4, 8] [1, 1] : tensor<8x8xf32> to tensor<4x8xf32>
      %r = linalg.exp {rl.op = 0 : i64} ins(%a : tensor<4x8xf32>) outs(%o : tensor<4x8xf32>) -> tensor<4x8xf32>
      %ins = tensor.insert_slice %r into %acc[%i, 0] [4, 8] [1, 1] : tensor<4x8xf32> into tensor<8x8xf32>
      scf.yield %ins : tensor<8x8xf32>
    }
    %q = scf.forall (%j) in (2) shared_outs(%s = %e) -> (tensor<8x8xf32>) {
      %off = affine.apply affine_map<(d0) -> (d0 * 4)>(%j)
      %b = tensor.extract_slice %B[%off, 0] [4, 8] [1, 1] : tensor<8x8xf32> to tensor<4x8xf32>
      %o = tensor.extract_slice %s[%off, 0] [4, 8] [1, 1] : tensor<8x8xf32> to tensor<4x8xf32>
      %r = linalg.negf {rl.op = 1 : i64} ins(%b : tensor<4x8xf32>) outs(%o : tensor<4x8xf32>) -> tensor<4x8xf32>
      scf.forall.in_parallel {
        tensor.parallel_insert_slice %r into %s[%off, 0] [4, 8] [1, 1] : tensor<4x8xf32> into tensor<8x8xf32>
      }
    }
    %x = linalg.add {rl.op = 2 : i64} ins(%p, %q : tensor<8x8xf32>, tensor<8x8xf32>) outs(%e : tensor<8x8xf32>) -> tensor<8x8xf32>
    %y = linalg.add {rl.op = 3 : i64} ins(%A, %q : tensor<8x8xf32>, tensor<8x8xf32>) outs(%e : tensor<8x8xf32>) -> tensor<8x8xf32>
    %f = linalg.fill ins(%zero : f32) outs(%e : tensor<8x8xf32>) -> tensor<8x8xf32>
    %z = linalg.add {rl.op = 4 : i64} ins(%A, %B : tensor<8x8xf32>, tensor<8x8xf32>) outs(%f : tensor<8x8xf32>) -> tensor<8x8xf32>
    %w = linalg.add {rl.op = 5 : i64} ins(%A, %B : tensor<8x8xf32>, tensor<8x8xf32>) outs(%x : tensor<8x8xf32>) -> tensor<8x8xf32>
    %u = linalg.exp ins(%A : tensor<8x8xf32>) outs(%e : tensor<8x8xf32>) -> tensor<8x8xf32>
    %v = linalg.add {rl.op = 6 : i64} ins(%u, %B : tensor<8x8xf32>, tensor<8x8xf32>) outs(%e : tensor<8x8xf32>) -> tensor<8x8xf32>
    return %y, %z, %w, %v : tensor<8x8xf32>, tensor<8x8xf32>, tensor<8x8xf32>, tensor<8x8xf32>
  })mlir";
  auto module = mlir::parseSourceString<mlir::ModuleOp>(text, testing::context());
  ASSERT_TRUE(module);
  std::map<int64_t, mlir::linalg::LinalgOp> byTag;
  module->walk([&](mlir::linalg::LinalgOp op) {
    if (auto tag = op->getAttrOfType<mlir::IntegerAttr>("rl.op")) byTag[tag.getInt()] = op;
  });
  ASSERT_EQ(byTag.size(), 7u);
  auto producerTag = [&](int64_t tag) -> int64_t {
    mlir::linalg::LinalgOp p = env::findProducer(byTag[tag]);
    return p ? p->getAttrOfType<mlir::IntegerAttr>("rl.op").getInt() : -1;
  };
  EXPECT_EQ(producerTag(2), 0);   // first input: the exp tiled with scf.for
  EXPECT_EQ(producerTag(3), 1);   // second input: the negf tiled with scf.forall
  EXPECT_EQ(producerTag(4), -1);  // arguments and a fill
  EXPECT_EQ(producerTag(5), 2);   // no input has one: the init's
  EXPECT_EQ(producerTag(6), -1);  // an untagged (unscheduled) op is no producer
  EXPECT_EQ(producerTag(0), -1);  // inside the loop: the argument and the loop's init (tensor.empty)
  // The tiled producer's features are those of the op in the loop.
  env::OpFeatures f(4, 2);
  env::extractOpFeatures(env::findProducer(byTag[2]), f);
  EXPECT_EQ(f.bounds, (std::vector<int64_t>{4, 8, 0, 0}));
  EXPECT_EQ(f.opCounts, counts({0, 0, 0, 0, 1, 0, 0}, {0, 0, 0, 0, 0, 0, 0}));
}

// Facts keep features with sparse access matrices; expanding them gives back every field.
TEST(Features, CompactFeaturesExpandToTheSameFeatures) {
  auto b = testing::benchmark("matmul_64x64x64_f32");
  mlir::linalg::LinalgOp matmul;
  b->module()->walk([&](mlir::linalg::MatmulOp op) { matmul = op; });
  ASSERT_TRUE(matmul);
  env::OpFeatures f(12, 7);
  env::extractOpFeatures(matmul, f);
  f.opType[1] = 1.f;
  f.vectorizable[0] = 1;
  ASSERT_NE(std::count(f.loads.begin(), f.loads.end(), 0), static_cast<long>(f.loads.size()));  // non-zero entries
  env::OpFeatures back = env::CompactFeatures(f).expand();
  EXPECT_EQ(back.maxLoops, f.maxLoops);
  EXPECT_EQ(back.maxAccesses, f.maxAccesses);
  EXPECT_EQ(back.opType, f.opType);
  EXPECT_EQ(back.bounds, f.bounds);
  EXPECT_EQ(back.boundsLog2, f.boundsLog2);
  EXPECT_EQ(back.iterators, f.iterators);
  EXPECT_EQ(back.loads, f.loads);
  EXPECT_EQ(back.stores, f.stores);
  EXPECT_EQ(back.accessRanks, f.accessRanks);
  EXPECT_EQ(back.opCounts, f.opCounts);
  EXPECT_EQ(back.vectorizable, f.vectorizable);
  // No op: zero matrices of the full size.
  env::OpFeatures none = env::CompactFeatures(12, 7).expand();
  EXPECT_EQ(none.loads, env::OpFeatures(12, 7).loads);
  EXPECT_EQ(none.stores, env::OpFeatures(12, 7).stores);
}

TEST(Features, LinearCoefficientsAndArithKinds) {
  mlir::MLIRContext *ctx = testing::context();
  mlir::AffineExpr d0 = mlir::getAffineDimExpr(0, ctx), d1 = mlir::getAffineDimExpr(1, ctx);
  std::vector<int64_t> coefficients(3, 0);
  int64_t constant = 0;
  EXPECT_TRUE(env::linearCoefficients(3 * d0 - 2 * d1 + 7, coefficients, constant));
  EXPECT_EQ(coefficients, (std::vector<int64_t>{3, -2, 0}));
  EXPECT_EQ(constant, 7);
  EXPECT_FALSE(env::linearCoefficients(d0.floorDiv(2), coefficients, constant));
  EXPECT_FALSE(env::linearCoefficients(d0 % 4, coefficients, constant));
  env::ArithKind kind;
  EXPECT_TRUE(env::classifyArith("arith.minimumf", kind));
  EXPECT_EQ(kind, env::ArithKind::Max);
  EXPECT_TRUE(env::classifyArith("arith.remsi", kind));
  EXPECT_EQ(kind, env::ArithKind::Div);
  EXPECT_TRUE(env::classifyArith("math.tanh", kind));
  EXPECT_EQ(kind, env::ArithKind::Other);
  EXPECT_FALSE(env::classifyArith("arith.constant", kind));
  EXPECT_FALSE(env::classifyArith("linalg.yield", kind));
}

TEST(Features, MaxAccessesIsValidated) {
  SessionConfig c;
  c.maxAccesses = 0;
  auto b = env::Benchmark::parse(testing::context(), "benchmark://golden/matmul", kMatmul);
  ASSERT_TRUE(b.ok()) << b.status();
  auto s = Session::create(*b, c, 0, &testing::evaluator());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("max_accesses"), std::string::npos) << s.status();
}

// observe() runs on every step: keep it well under the step's own cost. Printed, loosely bounded.
TEST(Features, ObserveIsCheap) {
  auto s = openModule(kConvRelu, "conv_relu");
  ASSERT_TRUE(s);
  const int n = 200;
  auto start = std::chrono::steady_clock::now();
  size_t bytes = 0;
  for (int i = 0; i < n; ++i)
    for (const NamedTensor &t : s->observe()) bytes += t.bytes.size();
  double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count() / n;
  std::printf("[observe] %.1f us per observation (%zu bytes of tensors)\n", us, bytes / n);
  EXPECT_LT(us, 5000.0);
}

}  // namespace
}  // namespace mlir_rl
