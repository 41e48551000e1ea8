// The action mask: which value of each head is legal for the op under a session's cursor. Assembled from the
// transformations' registry (transforms/Transformation.h): each refuses or allows its action type with a reason,
// the tile heads come from the tiling legality, the interchange head from the interchange mode. The session
// overlays its own history (an open interchange, the end of the episode; env/Session.cpp).
#pragma once

#include <cstdint>
#include <vector>

#include "env/ActionSpace.h"
#include "env/Config.h"
#include "transforms/Transformation.h"

namespace mlir_rl::env {

// Every type masked (with no reason yet), no tile size but "no tiling", no interchange value.
ActionMask blankMask(const SessionConfig &config);

struct OpenMask {
  ActionMask mask;                          // while no interchange is open and the episode runs
  std::vector<std::vector<uint8_t>> tiles;  // the tile rows without UNROLL's factors (an open interchange's mask)
};
OpenMask assembleMask(const transforms::OpView &op, const SessionConfig &config);

}  // namespace mlir_rl::env
