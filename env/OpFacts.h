// What a state says about the op under a session's cursor: the legality behind the action mask and the op's
// observation features. Everything in it is read from MLIR; nothing depends on the session's own history (an open
// interchange, the steps taken, the end of the episode), which Session overlays. So it is computed once per (state,
// op tag, configuration) and shared by every session at that state (PayloadState::facts): a step to a state that
// any session has observed before reads no IR.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "env/ActionSpace.h"
#include "env/Features.h"
#include "transforms/Transform.h"

namespace mlir_rl::env {

struct OpFacts {
  OpFacts(int maxLoops, int maxAccesses) : current(maxLoops, maxAccesses), producer(maxLoops, maxAccesses) {}

  bool found = false;                       // some op in the state carries the tag
  std::vector<bool> isReduction;            // the iterator types of the first op carrying it, one per loop
  std::vector<std::vector<uint8_t>> tiles;  // legal tile-head values per loop (UNROLL's factors not added)
  ActionMask open;                          // the whole mask while no interchange is open and the episode runs
  transforms::FusionPlan fusion;            // what TILED_FUSION would fuse into the op
  CompactFeatures current;                  // the op's features; op_type and vectorizable are the session's
  CompactFeatures producer;                 // its producer's, complete (zeros when it has none)

  int numLoops() const { return static_cast<int>(isReduction.size()); }
};

}  // namespace mlir_rl::env
