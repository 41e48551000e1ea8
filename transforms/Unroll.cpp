// Unroll: the innermost scf.for around the op (the closest enclosing one, e.g. a reduction loop made by tiling) is
// unrolled by a factor with transform.loop.unroll. The op's copies in the unrolled body keep its tag, so later
// transformations of the op (vectorization above all) apply to every copy. Factors must divide the trip count, so no
// remainder loop is generated; a factor equal to the trip count removes the loop.
#include "transforms/Transformation.h"

#include <algorithm>
#include <map>
#include <set>

#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Utils/StaticValueUtils.h"
#include "mlir/IR/BuiltinTypes.h"

namespace mlir_rl::transforms {

std::vector<int64_t> innermostLoopTripCounts(llvm::ArrayRef<mlir::linalg::LinalgOp> ops) {
  std::vector<int64_t> tripCounts;
  std::set<mlir::Operation *> loops;
  for (mlir::linalg::LinalgOp op : ops) {
    auto loop = op ? op->getParentOfType<mlir::scf::ForOp>() : mlir::scf::ForOp();
    if (!loop) return {};
    if (!loops.insert(loop.getOperation()).second) continue;
    std::optional<int64_t> trips = mlir::constantTripCount(loop.getLowerBound(), loop.getUpperBound(), loop.getStep());
    if (!trips) return {};
    tripCounts.push_back(*trips);
  }
  return tripCounts;
}

int64_t totalIterationElements(llvm::ArrayRef<mlir::linalg::LinalgOp> ops) {
  LoopRanges ranges;
  return totalIterationElements(ops, ranges);
}

int64_t totalIterationElements(llvm::ArrayRef<mlir::linalg::LinalgOp> ops, LoopRanges &loopRanges) {
  constexpr int64_t kSaturated = int64_t{1} << 40;
  int64_t total = 0;
  for (mlir::linalg::LinalgOp op : ops) {
    if (!op) continue;
    // Convolutions vectorize through their 1-D form, whose output-height and kernel-height loops stay loops.
    auto [ohLoop, khLoop] = decomposableConvLoops(op).value_or(std::pair(-1, -1));
    llvm::ArrayRef<int64_t> ranges = loopRanges.of(op);
    int64_t elements = 1;
    for (int i = 0; i < static_cast<int>(ranges.size()); ++i) {
      if (i == ohLoop || i == khLoop) continue;
      bool saturates = mlir::ShapedType::isDynamic(ranges[i]) || ranges[i] > kSaturated / elements;
      elements = saturates ? kSaturated : elements * ranges[i];
    }
    total = std::min(kSaturated, total + elements);
  }
  return total;
}

bool isLegalUnrollFactor(llvm::ArrayRef<int64_t> tripCounts, int64_t copies, int64_t elements, int64_t factor) {
  if (tripCounts.empty() || factor < 2 || copies * factor > kMaxUnrolledCopies) return false;
  if (elements > kMaxUnrolledElements / factor) return false;
  for (int64_t trips : tripCounts)
    if (factor > trips || trips % factor != 0) return false;
  return true;
}

int maxCopiesPerLoopBody(llvm::ArrayRef<mlir::linalg::LinalgOp> ops) {
  std::map<mlir::Block *, int> perBody;
  int most = 0;
  for (mlir::linalg::LinalgOp op : ops)
    if (op && mlir::isa_and_nonnull<mlir::scf::ForOp>(op->getParentOp()))
      most = std::max(most, ++perBody[op->getBlock()]);
  return most;
}

std::string unrolledCopiesReason(int copies) {
  return "the op has " + std::to_string(copies) +
         " unrolled copies in one scf.for body: giving each copy loops of "
         "its own would chain sibling loops through the enclosing loop, which MLIR 19's bufferization analyses in "
         "exponential time (tile before unrolling)";
}

Refusal unrollLoopNestBlocker(llvm::ArrayRef<mlir::linalg::LinalgOp> ops) {
  for (mlir::linalg::LinalgOp op : ops) {
    auto loop = op ? op->getParentOfType<mlir::scf::ForOp>() : mlir::scf::ForOp();
    if (!loop) continue;
    bool nested = false;
    loop.getBody()->walk([&](mlir::scf::ForOp) {
      nested = true;
      return mlir::WalkResult::interrupt();
    });
    if (nested)
      return "the innermost scf.for around the op holds other scf.for loops: unrolling it would chain copies of them "
             "through the loop, which MLIR 19's bufferization analyses in exponential time";
  }
  return std::nullopt;
}

Fragment unrollFragment(int64_t tag, int64_t factor, llvm::StringRef prefix) {
  std::string p = prefix.str();
  std::string text = matchTaggedOp(tag, prefix);
  // deduplicate: copies of the op made by an earlier unroll share their loop, which must be unrolled once.
  text += "    %" + p + "_loop = transform.get_parent_op %" + p +
          "_op {deduplicate, op_name = \"scf.for\"} : (!transform.any_op) -> !transform.any_op\n";
  text +=
      "    transform.loop.unroll %" + p + "_loop {factor = " + std::to_string(factor) + " : i64} : !transform.any_op\n";
  return {text};
}

namespace {

// The factors (candidate tile sizes) legal for the innermost scf.for loops around the ops, in candidate order.
std::vector<int64_t> legalUnrollFactors(const OpView &view) {
  std::vector<int64_t> factors;
  std::vector<int64_t> tripCounts = innermostLoopTripCounts(view.ops);
  int64_t elements = totalIterationElements(view.ops, *view.ranges);
  for (int64_t f : view.tileSizes)
    if (isLegalUnrollFactor(tripCounts, static_cast<int64_t>(view.ops.size()), elements, f)) factors.push_back(f);
  return factors;
}

// The factor UNROLL applies: the chosen one, or the smallest legal one (0 when there is none).
int64_t resolveFactor(const OpView &view, const ActionArgs &args) {
  if (args.unrollFactor != 0) return args.unrollFactor;
  std::vector<int64_t> legal = legalUnrollFactors(view);
  return legal.empty() ? 0 : *std::min_element(legal.begin(), legal.end());
}

class Unroll final : public Transformation {
 public:
  llvm::StringRef name() const override { return "UNROLL"; }
  Heads heads() const override { return Heads::UnrollFactor; }
  Refusal refusal(const OpView &view, const TileLegality &) const override {
    int unrollHead = view.maxLoops - 1;
    if (view.numLoops() > unrollHead)
      return "the op has " + std::to_string(view.numLoops()) + " loops: head tile_" + std::to_string(unrollHead) +
             " tiles its last loop and cannot carry an unroll factor";
    if (innermostLoopTripCounts(view.ops).empty())
      return "no scf.for with a constant trip count around the op (tile it first)";
    if (Refusal nest = unrollLoopNestBlocker(view.ops)) return nest;
    if (legalUnrollFactors(view).empty())
      return "no candidate factor > 1 divides the trip count of the innermost loop (or the op would exceed " +
             std::to_string(kMaxUnrolledCopies) + " copies or " + std::to_string(kMaxUnrolledElements) +
             " iteration-space elements over all copies: tile it smaller first)";
    return std::nullopt;
  }
  void addHeadValues(const OpView &view, std::vector<uint8_t> &row) const override {
    std::vector<int64_t> factors = legalUnrollFactors(view);
    row[0] = 1;  // the smallest legal factor
    for (size_t k = 1; k < row.size(); ++k)
      if (std::find(factors.begin(), factors.end(), view.tileSizes[k - 1]) != factors.end()) row[k] = 1;
  }
  mlir::FailureOr<std::optional<Fragment>> plan(const OpView &view, const ActionArgs &args,
                                                llvm::StringRef prefix) const override {
    int64_t factor = resolveFactor(view, args);
    if (factor <= 1) {
      view.op()->emitError("no legal unroll factor");
      return mlir::failure();
    }
    return std::optional<Fragment>(unrollFragment(view.tag, factor, prefix));
  }
  std::string describeArgs(const OpView &view, const ActionArgs &args) const override {
    return " innermost loop by " + std::to_string(resolveFactor(view, args));
  }
};

}  // namespace

const Transformation &makeUnroll() {
  static const Unroll t;
  return t;
}

}  // namespace mlir_rl::transforms
