#include "env/Config.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"

namespace mlir_rl::env {

absl::Status SessionConfig::validate() const {
  if (maxLoops < 1 || maxLoops > 16)
    return absl::InvalidArgumentError(absl::StrCat("options.max_loops = ", maxLoops, " is outside [1, 16]"));
  if (maxAccesses < 1 || maxAccesses > 32)
    return absl::InvalidArgumentError(absl::StrCat("options.max_accesses = ", maxAccesses, " is outside [1, 32]"));
  if (actionsPerOp < 1 || actionsPerOp > 64)
    return absl::InvalidArgumentError(absl::StrCat("options.actions_per_op = ", actionsPerOp, " is outside [1, 64]"));
  if (maxSteps < 0) return absl::InvalidArgumentError(absl::StrCat("options.max_steps = ", maxSteps, " is negative"));
  if (tileSizes.empty() || tileSizes.size() > 32)
    return absl::InvalidArgumentError("options.tile_sizes must hold between 1 and 32 sizes");
  for (size_t i = 0; i < tileSizes.size(); ++i) {
    if (tileSizes[i] < 1 || tileSizes[i] > (1 << 20))
      return absl::InvalidArgumentError(
          absl::StrCat("options.tile_sizes[", i, "] = ", tileSizes[i], " is outside [1, 1048576]"));
    for (size_t j = 0; j < i; ++j)
      if (tileSizes[j] == tileSizes[i])
        return absl::InvalidArgumentError(absl::StrCat("options.tile_sizes[", i, "] = ", tileSizes[i], " repeats"));
  }
  if (numThreads < 0 || numThreads > 256)
    return absl::InvalidArgumentError(absl::StrCat("options.num_threads = ", numThreads, " is outside [0, 256]"));
  if (maxVectorElements < 1 || maxVectorElements > (1 << 16))
    return absl::InvalidArgumentError(
        absl::StrCat("options.max_vector_elements = ", maxVectorElements, " is outside [1, 65536]"));
  for (auto [name, value] : {std::pair<const char *, double>{"transform_penalty", transformPenalty},
                             {"execution_penalty", executionPenalty}})
    if (!std::isfinite(value) || value > 0.0 || value < -1e6)
      return absl::InvalidArgumentError(
          absl::StrCat("options.", name, " = ", value, " must be a finite number in [-1e6, 0]"));
  return absl::OkStatus();
}

}  // namespace mlir_rl::env
