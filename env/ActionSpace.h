// The multi-discrete action space (MLIR RL's): a transformation-type head, one tile-size head per loop, and a
// level-pointer head for interchange.
//
// Layout of an action vector: [type, tile_0, ..., tile_{L-1}, interchange], L = SessionConfig::maxLoops.
//   type         — ActionType below.
//   tile_i       — 0: loop i is not tiled; k >= 1: tile size tileSizes[k - 1]. Used by TILING and
//                  TILED_PARALLELIZATION.
//   interchange  — level pointer: the loop that goes to the next position of the new loop order. An interchange
//                  stays open (the mask allows only INTERCHANGE) until the permutation is complete.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

#include "env/Config.h"

namespace mlir_rl::env {

enum class ActionType { NoTransformation = 0, Tiling, TiledParallelization, Interchange, Vectorization };
inline constexpr int kNumActionTypes = 5;
const char *actionTypeName(ActionType type);

struct DecodedAction {
  ActionType type = ActionType::NoTransformation;
  std::vector<int64_t> tileChoices;  // per loop, the raw head value
  std::vector<int64_t> tileSizes;    // per loop, decoded (0 = not tiled)
  int64_t pointer = 0;
};

// Legal values per head for the current state. tiles is maxLoops x (1 + tileSizes.size()).
struct ActionMask {
  std::vector<uint8_t> type;
  std::vector<std::vector<uint8_t>> tiles;
  std::vector<uint8_t> interchange;
  std::vector<std::string> typeReasons;  // why a masked type is masked (empty when legal)
};

class ActionSpace {
 public:
  explicit ActionSpace(const SessionConfig &config);
  int numHeads() const { return 2 + config_.maxLoops; }
  std::vector<int64_t> nvec() const;
  std::vector<std::string> headNames() const;
  std::vector<std::string> typeNames() const;
  int numTileChoices() const { return 1 + static_cast<int>(config_.tileSizes.size()); }

  // Checks length and ranges (INVALID_ARGUMENT naming the head) and decodes.
  absl::StatusOr<DecodedAction> decode(const std::vector<int64_t> &values) const;
  // Checks the heads the action's type uses against the mask (INVALID_ARGUMENT naming the head and the reason).
  absl::Status checkMask(const DecodedAction &action, const ActionMask &mask) const;

 private:
  SessionConfig config_;
};

}  // namespace mlir_rl::env
