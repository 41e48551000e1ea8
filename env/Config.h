// Per-session settings (what a client may set in SessionOptions) with the server's defaults.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace mlir_rl::env {

enum class RewardMode { Final, Immediate };

// How the interchange head encodes a permutation: level pointers (default; one loop per sub-step, the interchange
// stays open until the permutation is complete) or one of the enumerated swaps of two loops 1-3 apart (3L-6 values,
// one step per interchange; MLIR RL's alternative).
enum class InterchangeMode { LevelPointers, Swaps };

// How a session's evaluations use the evaluation cache: Use (a candidate measured before, by any session, is not
// measured again), Refresh (always measure; the result replaces the cached one) or Bypass (always measure; the cache
// is neither read nor written).
enum class CacheMode { Use, Refresh, Bypass };

struct SessionConfig {
  int maxLoops = 12;     // loops described by observations and tile heads
  int maxAccesses = 7;   // loads (and stores) per op described by the observation's access matrices
  int actionsPerOp = 5;  // transformations per op before the cursor moves on
  int maxSteps = 0;      // steps before the episode is truncated (0: no limit)
  RewardMode rewardMode = RewardMode::Final;
  double transformPenalty = -5.0;
  double executionPenalty = -20.0;
  std::vector<int64_t> tileSizes = {1, 2, 4, 8, 16, 32, 64};
  int numThreads = 1;  // OpenMP threads per evaluation
  int64_t maxVectorElements = 512;
  bool penalizeMaskedActions = false;  // false: a masked action is INVALID_ARGUMENT
  InterchangeMode interchangeMode = InterchangeMode::LevelPointers;
  CacheMode cacheMode = CacheMode::Use;

  // INVALID_ARGUMENT naming the offending field when a value is out of its allowed range.
  absl::Status validate() const;
};

}  // namespace mlir_rl::env
