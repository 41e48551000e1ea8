// generator://<family>/<seed>: random but valid single-op (or small chain) benchmarks with seeded shapes, for
// unlimited training diversity. The same URI always yields the same module text.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace mlir_rl::env {

std::vector<std::string> generatorFamilies();

// The module text of `family` for `seed`, drawing attempt `attempt` of the seed's shape sequence (the registry
// draws again when a shape collides with the evaluation split). NOT_FOUND for an unknown family.
absl::StatusOr<std::string> generateBenchmark(const std::string &family, uint64_t seed, int attempt);

}  // namespace mlir_rl::env
