// Interchange: permutes the op's loops. Named ops cannot be interchanged directly, so the op is generalized to
// linalg.generic first (a no-op for generics). Generalization drops discardable attributes, so the tag is re-attached.
// The permutation comes from level pointers (env/ActionSpace.h) or, in the enumerated-swaps mode, from one swap of two
// loops 1-3 apart.
#include "transforms/Transform.h"

#include <algorithm>
#include <vector>

namespace mlir_rl::transforms {

bool isPermutation(llvm::ArrayRef<int64_t> permutation) {
  std::vector<bool> seen(permutation.size(), false);
  for (int64_t v : permutation) {
    if (v < 0 || v >= static_cast<int64_t>(permutation.size()) || seen[v]) return false;
    seen[v] = true;
  }
  return true;
}

Fragment interchangeFragment(int64_t tag, llvm::ArrayRef<int64_t> permutation, llvm::StringRef prefix) {
  std::string p = prefix.str();
  std::string text = matchTaggedOp(tag, prefix);
  text += "    %" + p + "_gen = transform.structured.generalize %" + p +
          "_op : (!transform.any_op) -> !transform.any_op\n";
  text += "    %" + p + "_ich = transform.structured.interchange %" + p + "_gen iterator_interchange = " +
          formatList(permutation) + " : (!transform.any_op) -> !transform.any_op\n";
  text += retag(p + "_ich", tag, prefix);
  return {text};
}

int64_t numSwaps(int64_t maxLoops) {
  int64_t n = 0;
  for (int64_t d = 1; d <= 3; ++d) n += std::max<int64_t>(0, maxLoops - d);
  return n;
}

std::pair<int64_t, int64_t> swapLoops(int64_t index, int64_t maxLoops) {
  if (index < 0) return {-1, -1};
  for (int64_t d = 1; d <= 3; ++d) {
    int64_t count = std::max<int64_t>(0, maxLoops - d);
    if (index < count) return {index, index + d};
    index -= count;
  }
  return {-1, -1};
}

std::vector<int64_t> swapPermutation(int64_t index, int64_t maxLoops, int64_t numLoops) {
  auto [first, second] = swapLoops(index, maxLoops);
  if (first < 0 || second >= numLoops) return {};
  std::vector<int64_t> permutation(numLoops);
  for (int64_t i = 0; i < numLoops; ++i) permutation[i] = i;
  std::swap(permutation[first], permutation[second]);
  return permutation;
}

}  // namespace mlir_rl::transforms
