// Interchange: permutes the op's loops. Named ops cannot be interchanged directly, so the op is generalized to
// linalg.generic first (a no-op for generics). Generalization drops discardable attributes, so the tag is re-attached.
#include "transforms/Transform.h"

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

}  // namespace mlir_rl::transforms
