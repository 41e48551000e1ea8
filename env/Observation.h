// The observation: every tensor declared once — name, description, dtype, shape from the session's options, bounds
// and how it is filled — so the space GetSpaces describes and the tensors observe() returns cannot drift apart
// (EnvPool's lesson). Adding a feature: one entry in Observation.cpp's table (and its values in ObservationSource).
#pragma once

#include <string>
#include <vector>

#include "env/ActionSpace.h"
#include "env/Config.h"
#include "env/Features.h"
#include "env/Tensor.h"

namespace mlir_rl::env {

// What one observation is made of: the op's and its producer's features, the episode's progress and the mask.
struct ObservationSource {
  const OpFeatures &current;      // op_type and vectorizable as the session sees them
  const OpFeatures &producer;     // zeros (access ranks -1) when there is none
  std::vector<int64_t> progress;  // [4] op index, number of ops, steps taken, transformations on the op
  std::vector<float> history;     // [actions_per_op, types] one-hot types applied to the op, in order
  std::vector<int64_t> partial;   // [L] loops placed by an open interchange, -1 elsewhere
  const ActionMask &mask;
};

// The space: one Box per tensor, in observation order.
std::vector<BoxSpec> observationSpace(const SessionConfig &config);
// The tensors, in the same order and shapes.
std::vector<NamedTensor> observationTensors(const SessionConfig &config, const ObservationSource &source);

}  // namespace mlir_rl::env
