// Unroll: the innermost scf.for around the op (the closest enclosing one, e.g. a reduction loop made by tiling) is
// unrolled by a factor with transform.loop.unroll. The op's copies in the unrolled body keep its tag, so later
// transformations of the op (vectorization above all) apply to every copy. Factors must divide the trip count, so no
// remainder loop is generated; a factor equal to the trip count removes the loop.
#include "transforms/Transform.h"

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
    std::optional<int64_t> trips =
        mlir::constantTripCount(loop.getLowerBound(), loop.getUpperBound(), loop.getStep());
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
    auto [ohLoop, khLoop] = decomposableConvLoops(op);
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
  return "the op has " + std::to_string(copies) + " unrolled copies in one scf.for body: giving each copy loops of "
         "its own would chain sibling loops through the enclosing loop, which MLIR 19's bufferization analyses in "
         "exponential time (tile before unrolling)";
}

std::string unrollLoopNestBlocker(llvm::ArrayRef<mlir::linalg::LinalgOp> ops) {
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
  return "";
}

Fragment unrollFragment(int64_t tag, int64_t factor, llvm::StringRef prefix) {
  std::string p = prefix.str();
  std::string text = matchTaggedOp(tag, prefix);
  // deduplicate: copies of the op made by an earlier unroll share their loop, which must be unrolled once.
  text += "    %" + p + "_loop = transform.get_parent_op %" + p +
          "_op {deduplicate, op_name = \"scf.for\"} : (!transform.any_op) -> !transform.any_op\n";
  text += "    transform.loop.unroll %" + p + "_loop {factor = " + std::to_string(factor) +
          " : i64} : !transform.any_op\n";
  return {text};
}

}  // namespace mlir_rl::transforms
