// Interchange: permutes the op's loops. Named ops cannot be interchanged directly, so the op is generalized to
// linalg.generic first (a no-op for generics). Generalization drops discardable attributes, so the tag is re-attached.
// The permutation comes from level pointers (env/ActionSpace.h) or, in the enumerated-swaps mode, from one swap of two
// loops 1-3 apart.
#include "transforms/Transformation.h"

#include <algorithm>
#include <vector>

#include "mlir/Dialect/Utils/IndexingUtils.h"

namespace mlir_rl::transforms {

Fragment interchangeFragment(int64_t tag, llvm::ArrayRef<int64_t> permutation, llvm::StringRef prefix) {
  std::string p = prefix.str();
  std::string text = matchTaggedOp(tag, prefix);
  text +=
      "    %" + p + "_gen = transform.structured.generalize %" + p + "_op : (!transform.any_op) -> !transform.any_op\n";
  text += "    %" + p + "_ich = transform.structured.interchange %" + p +
          "_gen iterator_interchange = " + formatList(permutation) + " : (!transform.any_op) -> !transform.any_op\n";
  text += retag(p + "_ich", tag, prefix);
  return {text};
}

int64_t numSwaps(int64_t maxLoops) {
  int64_t n = 0;
  for (int64_t d = 1; d <= 3; ++d) n += std::max<int64_t>(0, maxLoops - d);
  return n;
}

std::optional<std::pair<int64_t, int64_t>> swapLoops(int64_t index, int64_t maxLoops) {
  if (index < 0) return std::nullopt;
  for (int64_t d = 1; d <= 3; ++d) {
    int64_t count = std::max<int64_t>(0, maxLoops - d);
    if (index < count) return std::pair(index, index + d);
    index -= count;
  }
  return std::nullopt;
}

std::optional<std::vector<int64_t>> swapPermutation(int64_t index, int64_t maxLoops, int64_t numLoops) {
  std::optional<std::pair<int64_t, int64_t>> loops = swapLoops(index, maxLoops);
  if (!loops || loops->second >= numLoops) return std::nullopt;
  std::vector<int64_t> permutation(numLoops);
  for (int64_t i = 0; i < numLoops; ++i) permutation[i] = i;
  std::swap(permutation[loops->first], permutation[loops->second]);
  return permutation;
}

namespace {

class Interchange final : public Transformation {
 public:
  llvm::StringRef name() const override { return "INTERCHANGE"; }
  Heads heads() const override { return Heads::Interchange; }
  Refusal refusal(const OpView &view, const TileLegality &) const override {
    if (view.numLoops() < 2) return "the op has fewer than 2 loops";
    return std::nullopt;
  }
  mlir::FailureOr<std::optional<Fragment>> plan(const OpView &view, const ActionArgs &args,
                                                llvm::StringRef prefix) const override {
    if (mlir::isIdentityPermutation(args.permutation)) return std::optional<Fragment>();
    return std::optional<Fragment>(interchangeFragment(view.tag, args.permutation, prefix));
  }
  std::string describeArgs(const OpView &, const ActionArgs &args) const override {
    if (!args.permutation.empty()) return " permutation " + formatList(args.permutation);
    if (args.swap)
      return " swap loops " + std::to_string(args.swap->first) + " and " + std::to_string(args.swap->second);
    return " next loop " + std::to_string(args.nextLoop);
  }
};

}  // namespace

const Transformation &makeInterchange() {
  static const Interchange t;
  return t;
}

}  // namespace mlir_rl::transforms
