// The multi-discrete action space (MLIR RL's): a transformation-type head, one tile-size head per loop, and an
// interchange head.
//
// Layout of an action vector: [type, tile_0, ..., tile_{L-1}, interchange], L = SessionConfig::maxLoops.
//   type         — ActionType below. Values 0-4 are the original five (clients written for them keep working);
//                  5 TILED_FUSION, 6 IMG2COL, 7 UNROLL came later.
//   tile_i       — 0: loop i is not tiled; k >= 1: tile size tileSizes[k - 1]. Used by TILING,
//                  TILED_PARALLELIZATION and TILED_FUSION.
//   tile_{L-1}   — also the unroll factor of UNROLL: k >= 1 unrolls by tileSizes[k - 1], 0 by the smallest legal
//                  factor. Its values for UNROLL have a mask of their own (ActionMask::unroll, observation
//                  mask_unroll); mask_tiles' last row is what tiling accepts there. UNROLL is masked for ops with L
//                  loops (their last loop needs the head for its tile size).
//   interchange  — level pointers (default): the loop that goes to the next position of the new loop order; an
//                  interchange stays open (the mask allows only INTERCHANGE) until the permutation is complete.
//                  Enumerated swaps (InterchangeMode::Swaps): one of the 3L-6 swaps of two loops 1-3 apart
//                  (transforms::swapLoops), applied at once.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

#include "env/Config.h"

namespace mlir_rl::env {

// The action types the episode rules name (env/Session.cpp). The list of types, their names and the heads they
// read is the transformations' registry (transforms/Transformation.h): a new transformation needs no entry here.
enum class ActionType {
  NoTransformation = 0,
  Tiling = 1,
  TiledParallelization = 2,
  Interchange = 3,
  Vectorization = 4,
  TiledFusion = 5,   // tiled parallelization + the op's producers fused into its scf.forall (MLIR RL's TPF)
  Img2Col = 6,       // 2-D convolution -> img2col packing + contraction
  Unroll = 7,        // unrolling of the innermost scf.for around the op
  PeeledTiling = 8,  // tiling by sizes that need not divide the loops; the partial tiles are peeled off
  Pack = 9,          // a contraction packed along its output's contiguous loop (the strided input transposed in blocks)
  SplitReduction = 10,  // a reduction read contiguously split into vector lanes of partial sums, combined at the end
};
// The values of head 'type': the registry's size.
int numActionTypes();
std::string actionTypeName(int type);

struct DecodedAction {
  ActionType type = ActionType::NoTransformation;
  std::vector<int64_t> tileChoices;  // per loop, the raw head value
  std::vector<int64_t> tileSizes;    // per loop, decoded (0 = not tiled)
  int64_t pointer = 0;               // value of the interchange head (level pointer or swap index)
  int64_t unrollChoice = 0;          // value of head tile_{L-1}
  int64_t unrollFactor = 0;          // decoded (0 = the smallest legal factor)
};

// Legal values per head for the current state, by the action types that read them. tiles is maxLoops x
// (1 + tileSizes.size()); unroll has 1 + tileSizes.size() values; interchange ActionSpace::numInterchangeChoices().
struct ActionMask {
  std::vector<uint8_t> type;
  std::vector<std::vector<uint8_t>> tiles;        // tile heads as TILING, TILED_PARALLELIZATION, TILED_FUSION read them
  std::vector<uint8_t> unroll;                    // head tile_{L-1} as UNROLL reads it (value 0: the smallest factor)
  std::vector<std::vector<uint8_t>> tilesPeeled;  // tile heads as PEELED_TILING reads them
  std::vector<uint8_t> interchange;
  std::vector<std::string> typeReasons;  // why a masked type is masked (empty when legal)
  int numLoops = 0;  // loops of the op under the cursor: tiling reads (and checks) the tile heads of those only
};

// Which observation tensor (and row: -1 for the whole tensor) masks a head for which action types.
struct HeadMaskInfo {
  std::string head, tensor;
  int row = -1;
  std::vector<int> types;
};

class ActionSpace {
 public:
  explicit ActionSpace(const SessionConfig &config);
  int numHeads() const { return 2 + config_.maxLoops; }
  std::vector<int64_t> nvec() const;
  std::vector<std::string> headNames() const;
  std::vector<std::string> typeNames() const;
  int numTileChoices() const { return 1 + static_cast<int>(config_.tileSizes.size()); }
  // Values of the interchange head: maxLoops (level pointers) or the number of enumerated swaps (at least 1).
  int numInterchangeChoices() const;
  // The tile head (index into DecodedAction::tileChoices and ActionMask::tiles) that carries UNROLL's factor.
  int unrollHead() const { return config_.maxLoops - 1; }

  // Every head's masks, from the registry's heads (GetSpaces describes them).
  std::vector<HeadMaskInfo> headMasks() const;

  // Checks length and ranges (INVALID_ARGUMENT naming the head) and decodes.
  absl::StatusOr<DecodedAction> decode(const std::vector<int64_t> &values) const;
  // Checks the heads the action's type uses against the mask (INVALID_ARGUMENT naming the head and the reason).
  absl::Status checkMask(const DecodedAction &action, const ActionMask &mask) const;

 private:
  SessionConfig config_;
};

}  // namespace mlir_rl::env
