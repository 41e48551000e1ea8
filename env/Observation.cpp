#include "env/Observation.h"

#include <functional>
#include <limits>

namespace mlir_rl::env {

namespace {

constexpr double kBigInt64 = 9.2e18;
constexpr double kBigInt32 = std::numeric_limits<int32_t>::max();

// The producer, as descriptions name it.
const std::string kProducer =
    "the producer of the op under the cursor (the scheduled op defining its first operand that has one, inputs "
    "before inits)";

using Shape = std::vector<int64_t>;

struct Declaration {
  std::string name, description;
  DType dtype;
  std::function<Shape(const SessionConfig &)> shape;
  double low, high;
  // The values, laid out row-major in the declared shape.
  std::function<NamedTensor(const ObservationSource &, std::string name, Shape shape)> fill;
  std::function<double(const SessionConfig &)> highOf = nullptr;  // when the upper bound depends on the options
};

template <typename T>
std::function<NamedTensor(const ObservationSource &, std::string, Shape)> values(
    DType dtype, std::function<const std::vector<T> &(const ObservationSource &)> get) {
  return [dtype, get](const ObservationSource &s, std::string name, Shape shape) {
    return NamedTensor::of(std::move(name), dtype, std::move(shape), get(s));
  };
}

// The per-op feature tensors of the op under the cursor, or of its producer.
template <typename T>
Declaration feature(bool producer, const char *name, std::string current, std::string ofProducer, DType dtype,
                    std::function<Shape(const SessionConfig &)> shape, double low, double high,
                    std::vector<T> OpFeatures::*member) {
  return {(producer ? std::string("producer_") : "") + name,
          producer ? ofProducer : current,
          dtype,
          std::move(shape),
          low,
          high,
          values<T>(dtype, [producer, member](const ObservationSource &s) -> const std::vector<T> & {
            return (producer ? s.producer : s.current).*member;
          })};
}

Shape loops(const SessionConfig &c) { return {c.maxLoops}; }

std::vector<Declaration> structure(bool p) {
  const std::string none = "; zeros when there is no producer";
  return {
      feature(
          p, "op_type", "one-hot op family: generic, matmul, conv, pooling, elementwise, other",
          "one-hot op family of " + kProducer + ": generic, matmul, conv, pooling, elementwise, other" + none,
          DType::Float32, [](const SessionConfig &) { return Shape{kNumOpFamilies}; }, 0, 1, &OpFeatures::opType),
      feature(p, "loop_bounds", "static bound of each loop of the op under the cursor (0 past the last loop)",
              "static bound of each loop of " + kProducer + " (0 past the last loop" + none + ")", DType::Int64, loops,
              0, kBigInt64, &OpFeatures::bounds),
      feature(p, "loop_bounds_log2", "log2(1 + bound) of each loop",
              "log2(1 + bound) of each loop of " + kProducer + none, DType::Float32, loops, 0, 64,
              &OpFeatures::boundsLog2),
      feature(p, "iterator_types", "per loop: 0 none, 1 parallel, 2 reduction",
              "per loop of " + kProducer + ": 0 none, 1 parallel, 2 reduction" + none, DType::Int32, loops, 0, 2,
              &OpFeatures::iterators),
  };
}

std::vector<Declaration> access(bool p) {
  const std::string who = p ? kProducer : "the op under the cursor";
  const std::string none = p ? "; all zeros when there is no producer" : "";
  const std::string layout =
      ": [access, tensor dim, loop] affine coefficient of loop l in the index of dim r (the indexing map's result "
      "r), last column the constant term; zeros past the last access or dim, and for a result that is not linear "
      "(mod, floordiv)";
  auto matrices = [](const SessionConfig &c) { return Shape{c.maxAccesses, c.maxLoops, c.maxLoops + 1}; };
  std::string load =
      "load access matrices of " + who + ", one per input operand in order (the first max_accesses)" + layout + none;
  std::string store =
      "store access matrices of " + who + ", one per output (init) operand (the first max_accesses)" + layout + none;
  std::string ranks = "rank of each load (row 0) and store (row 1) access of " + who +
                      " (its rows in the access matrix); -1: no such access" +
                      (p ? " (all -1 when there is no producer)" : "");
  std::string counts = "arithmetic ops in the body of " + who +
                       ", row 0 floating point, row 1 integer; columns add, sub, mul, div (and rem), exp, max (and "
                       "min), other" +
                       none;
  std::string vectorizable =
      p ? "1 when " + who +
              " could be vectorized as it is (the legality behind mask_type's VECTORIZATION); 0 when "
              "there is no producer"
        : std::string("1 when VECTORIZATION is legal now (mask_type's VECTORIZATION entry)");
  return {
      feature(p, "load_access", load, load, DType::Int32, matrices, -kBigInt32, kBigInt32, &OpFeatures::loads),
      feature(p, "store_access", store, store, DType::Int32, matrices, -kBigInt32, kBigInt32, &OpFeatures::stores),
      feature(
          p, "access_ranks", ranks, ranks, DType::Int32,
          [](const SessionConfig &c) {
            return Shape{2, c.maxAccesses};
          },
          -1, kBigInt32, &OpFeatures::accessRanks),
      feature(
          p, "op_counts", counts, counts, DType::Int32,
          [](const SessionConfig &) {
            return Shape{2, kNumArithKinds};
          },
          0, kBigInt32, &OpFeatures::opCounts),
      feature(
          p, "vectorizable", vectorizable, vectorizable, DType::Bool, [](const SessionConfig &) { return Shape{1}; }, 0,
          1, &OpFeatures::vectorizable),
  };
}

std::vector<Declaration> episode() {
  auto flatTiles = [](const ObservationSource &s, std::string name, Shape shape) {
    std::vector<uint8_t> rows;
    for (const auto &row : s.mask.tiles) rows.insert(rows.end(), row.begin(), row.end());
    return NamedTensor::of(std::move(name), DType::Bool, std::move(shape), rows);
  };
  return {
      {"progress", "op index, number of ops, steps taken, transformations on the current op", DType::Int64,
       [](const SessionConfig &) { return Shape{4}; }, 0, kBigInt64,
       values<int64_t>(
           DType::Int64, [](const ObservationSource &s) -> const auto & { return s.progress; })},
      {"action_history", "one-hot types of the transformations applied to the current op, in order", DType::Float32,
       [](const SessionConfig &c) {
         return Shape{c.actionsPerOp, numActionTypes()};
       },
       0, 1,
       values<float>(
           DType::Float32, [](const ObservationSource &s) -> const auto & { return s.history; })},
      {"interchange_partial", "loops placed so far by an open interchange (-1: position free)", DType::Int64, loops, -1,
       0,
       values<int64_t>(
           DType::Int64, [](const ObservationSource &s) -> const auto & { return s.partial; }),
       [](const SessionConfig &c) { return static_cast<double>(c.maxLoops - 1); }},
      {"mask_type", "legal values of head 'type'", DType::Bool,
       [](const SessionConfig &) { return Shape{numActionTypes()}; }, 0, 1,
       values<uint8_t>(
           DType::Bool, [](const ObservationSource &s) -> const auto & { return s.mask.type; })},
      {"mask_tiles", "legal values of heads tile_0..tile_{L-1} for TILING, TILED_PARALLELIZATION and TILED_FUSION",
       DType::Bool,
       [](const SessionConfig &c) {
         return Shape{c.maxLoops, 1 + static_cast<int64_t>(c.tileSizes.size())};
       },
       0, 1, flatTiles},
      {"mask_interchange", "legal values of head 'interchange'", DType::Bool,
       [](const SessionConfig &c) { return Shape{ActionSpace(c).nvec().back()}; }, 0, 1,
       values<uint8_t>(
           DType::Bool, [](const ObservationSource &s) -> const auto & { return s.mask.interchange; })},
  };
}

// Tensors added after the first release go last, so the others keep their places.
std::vector<Declaration> later() {
  return {
      {"mask_unroll", "legal values of head tile_{L-1} as UNROLL's factor (0: the smallest legal factor)", DType::Bool,
       [](const SessionConfig &c) { return Shape{1 + static_cast<int64_t>(c.tileSizes.size())}; }, 0, 1,
       values<uint8_t>(
           DType::Bool, [](const ObservationSource &s) -> const auto & { return s.mask.unroll; })},
      {"mask_tiles_peeled", "legal values of heads tile_0..tile_{L-1} for PEELED_TILING (sizes need not divide)",
       DType::Bool,
       [](const SessionConfig &c) {
         return Shape{c.maxLoops, 1 + static_cast<int64_t>(c.tileSizes.size())};
       },
       0, 1,
       [](const ObservationSource &s, std::string name, Shape shape) {
         std::vector<uint8_t> rows;
         for (const auto &row : s.mask.tilesPeeled) rows.insert(rows.end(), row.begin(), row.end());
         return NamedTensor::of(std::move(name), DType::Bool, std::move(shape), rows);
       }},
  };
}

// Every tensor, in observation order: the current op's structure, the episode state and masks, the current op's
// accesses and body, the same features of its producer, then later additions.
const std::vector<Declaration> &declarations() {
  static const std::vector<Declaration> all = [] {
    std::vector<Declaration> out;
    for (auto group : {structure(false), episode(), access(false), structure(true), access(true), later()})
      for (Declaration &d : group) out.push_back(std::move(d));
    return out;
  }();
  return all;
}

}  // namespace

std::vector<BoxSpec> observationSpace(const SessionConfig &config) {
  std::vector<BoxSpec> specs;
  for (const Declaration &d : declarations()) {
    specs.push_back({d.name, d.description, d.shape(config), d.dtype, d.low, d.highOf ? d.highOf(config) : d.high});
  }
  return specs;
}

std::vector<NamedTensor> observationTensors(const SessionConfig &config, const ObservationSource &source) {
  std::vector<NamedTensor> out;
  out.reserve(declarations().size());
  for (const Declaration &d : declarations()) out.push_back(d.fill(source, d.name, d.shape(config)));
  return out;
}

}  // namespace mlir_rl::env
