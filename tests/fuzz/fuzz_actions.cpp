// Action decoding against masks: arbitrary action vectors (in range and out of range, masked and legal) on episodes
// of every op family and both interchange modes. A masked or malformed action must be refused with
// INVALID_ARGUMENT (or penalized), a legal one applied or failed with a reason; observations always match the
// declared observation space.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "env/Session.h"
#include "tests/fuzz/FuzzSupport.h"

using namespace mlir_rl;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz::World &world = fuzz::World::get();
  fuzz::Bytes in(data, size);
  auto benchmark = world.benchmarks.get(fuzz::kBenchmarks[in.below(std::size(fuzz::kBenchmarks))]);
  if (!benchmark.ok()) std::abort();
  env::SessionConfig config;
  config.maxLoops = 6 + static_cast<int>(in.below(7));
  config.interchangeMode = in.below(2) ? env::InterchangeMode::Swaps : env::InterchangeMode::LevelPointers;
  config.penalizeMaskedActions = in.below(2);
  config.rewardMode = env::RewardMode::Final;
  auto session = env::Session::create(*benchmark, config, 0, &world.evaluator);
  if (!session.ok()) std::abort();
  env::Session &s = **session;
  std::vector<env::BoxSpec> space = env::observationSpace(config);
  std::vector<int64_t> nvec = s.actionSpace().nvec();
  for (int step = 0; step < 24 && !in.empty() && !s.done(); ++step) {
    std::vector<int64_t> action(nvec.size());
    bool legalOnly = in.below(4) != 0;  // mostly legal actions (to reach deep states), sometimes anything
    const env::ActionMask &m = s.mask();
    for (size_t h = 0; h < nvec.size(); ++h) {
      int64_t v = static_cast<int64_t>(in.next()) - (legalOnly ? 0 : 8);  // some negative and past-the-end values
      if (legalOnly) {
        const std::vector<uint8_t> &row = h == 0 ? m.type : h + 1 == nvec.size() ? m.interchange : m.tiles[h - 1];
        std::vector<int64_t> legal;
        for (size_t k = 0; k < row.size(); ++k)
          if (row[k]) legal.push_back(static_cast<int64_t>(k));
        v = legal.empty() ? 0 : legal[static_cast<size_t>(v) % legal.size()];
      }
      action[h] = v;
    }
    auto result = s.step(action);
    if (!result.ok()) {
      absl::StatusCode code = result.status().code();
      // Refusals say why; an evaluation that could not run (no executor here) undoes the step.
      if (code != absl::StatusCode::kInvalidArgument && code != absl::StatusCode::kUnavailable &&
          code != absl::StatusCode::kFailedPrecondition)
        std::abort();
      if (result.status().message().empty()) std::abort();
    }
    std::vector<env::NamedTensor> obs = s.observe();
    if (obs.size() != space.size()) std::abort();
    for (size_t i = 0; i < obs.size(); ++i)
      if (obs[i].name != space[i].name || obs[i].shape != space[i].shape) std::abort();
  }
  return 0;
}
