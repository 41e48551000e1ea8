// An episode: a benchmark, the current module, the op cursor, the schedule so far and the rewards.
//
// Every action is applied to a clone of the module; a failing action leaves the session as it was and returns the
// transform penalty with MLIR's reason. State is deterministic given (benchmark, config, seed, actions).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "mlir/Dialect/Linalg/IR/LinalgInterfaces.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

#include "env/ActionSpace.h"
#include "env/Benchmark.h"
#include "env/Config.h"
#include "env/Evaluation.h"
#include "env/Observation.h"
#include "env/OpFacts.h"
#include "env/StateCache.h"
#include "env/Tensor.h"
#include "transforms/Transformation.h"

namespace mlir_rl::env {

struct StepResult {
  std::vector<int64_t> action;
  std::string description;
  bool applied = false;
  std::string failureReason;
  double reward = 0;
  std::optional<EvaluationRecord> evaluation;
  double applyMs = 0;
};

struct EpisodeStatus {
  int opIndex = 0, numOps = 0, step = 0;
  std::string currentOp;
  bool interchangePending = false;
  bool terminated = false, truncated = false;
};

// What a step's caller allows it: the time by which it must be done (its RPC's deadline). An evaluation still
// running then is abandoned and the step undone.
struct StepContext {
  runners::Deadline deadline = runners::Deadline::max();
};

class Session {
 public:
  static absl::StatusOr<std::unique_ptr<Session>> create(std::shared_ptr<const Benchmark> benchmark,
                                                         SessionConfig config, uint64_t seed,
                                                         EvaluationService *evaluator);

  // INVALID_ARGUMENT for malformed or masked actions, FAILED_PRECONDITION after the end of the episode. A
  // transformation that fails to apply is not an error: it is a StepResult with applied = false. A step whose
  // evaluation could not take place for reasons that are not the candidate's (shutdown, the caller's deadline, a
  // benchmark whose reference does not run) is undone and returns that error (UNAVAILABLE, FAILED_PRECONDITION).
  absl::StatusOr<StepResult> step(const std::vector<int64_t> &action, const StepContext &context = {});

  std::vector<NamedTensor> observe() const;
  // Computed once per state (cached until the next step).
  const ActionMask &mask() const;
  EpisodeStatus status() const;
  std::unique_ptr<Session> fork() const;

  std::string currentIR() const;
  std::string schedule() const;  // Transform-dialect script of the applied transformations
  const std::vector<std::vector<int64_t>> &actions() const { return actions_; }
  const Benchmark &benchmark() const { return *benchmark_; }
  const SessionConfig &config() const { return config_; }
  const ActionSpace &actionSpace() const { return space_; }
  bool done() const { return terminated_ || truncated_; }

 private:
  Session(std::shared_ptr<const Benchmark> benchmark, SessionConfig config, uint64_t seed,
          EvaluationService *evaluator);

  const ScheduledOp *currentOp() const;
  mlir::linalg::LinalgOp currentLinalgOp() const;
  // Every op carrying the current op's tag (unrolled and fused copies included); currentLinalgOp() is the first.
  // Found by one module walk per state (cached).
  const std::vector<mlir::linalg::LinalgOp> &currentLinalgOps() const;
  // The state's facts about the op under the cursor, memoized in the state (shared with every session there).
  std::shared_ptr<const OpFacts> facts() const;
  std::shared_ptr<const OpFacts> computeFacts() const;
  // What transformations see of the op under the cursor (no fusion plan: set it from facts() where needed).
  transforms::OpView view() const;
  // The arguments transformations read from a decoded action (no permutation yet).
  transforms::ActionArgs argsOf(const DecodedAction &action) const;
  // The session's mask: the state's, overlaid with the end of the episode or an open interchange.
  ActionMask computeMask() const;
  // Drops what was derived from the state; called whenever the module, the cursor or the open interchange changes.
  void invalidate() const { derived_ = Derived(); }
  void advanceCursor();
  // Moves to the state `fragment` (made with kFragmentPrefix) gives, found in the transition cache or made by applying
  // it to a clone; on failure the state is unchanged and `failure` says why.
  bool apply(const transforms::Fragment &fragment, std::string &failure);
  static constexpr const char kFragmentPrefix[] = "t";
  // The reward of the current state's evaluation; an error when none could take place.
  absl::StatusOr<double> evaluateState(StepResult &result, const StepContext &context);
  // Evaluates the state when the reward mode asks for it after this step, adding the reward to `result`.
  absl::Status addEvaluationReward(StepResult &result, bool transformed, const StepContext &context);
  absl::StatusOr<StepResult> penalizeMaskedAction(const DecodedAction &action, std::string reason, StepResult result,
                                                  const StepContext &context);
  // What a step changes, to undo a step whose evaluation could not take place.
  struct Snapshot {
    std::shared_ptr<const PayloadState> state;
    size_t cursor, fragments, actions;
    int actionsOnOp, steps;
    std::vector<int> historyOnOp;
    std::vector<int64_t> pendingPermutation;
    bool terminated, truncated;
    double lastTimeNs;
  };
  Snapshot snapshot() const;
  void restore(Snapshot snapshot);
  std::string describe(const DecodedAction &action, const transforms::ActionArgs &args) const;

  std::shared_ptr<const Benchmark> benchmark_;
  SessionConfig config_;
  ActionSpace space_;
  uint64_t seed_;
  EvaluationService *evaluator_;

  std::shared_ptr<const PayloadState> state_;  // immutable, possibly shared with other sessions; after benchmark_,
                                               // so destroyed first (a root state does not keep its benchmark)
  TransitionCache *transitions_ = &TransitionCache::shared();
  size_t cursor_ = 0;  // index into benchmark_->schedule()
  int actionsOnOp_ = 0;
  std::vector<int> historyOnOp_;             // action types applied to the current op
  std::vector<int64_t> pendingPermutation_;  // level pointers chosen so far
  std::vector<transforms::Fragment> fragments_;
  std::vector<std::vector<int64_t>> actions_;
  int steps_ = 0;
  bool terminated_ = false, truncated_ = false;
  double lastTimeNs_ = 0;  // IMMEDIATE mode: time of the last evaluated state
  std::string factsKey_;   // the configuration fields OpFacts depend on (set at construction)

  // What is derived from (state, cursor, open interchange), computed on demand.
  struct Derived {
    std::optional<std::vector<mlir::linalg::LinalgOp>> ops;
    std::optional<ActionMask> mask;
    std::shared_ptr<const OpFacts> facts;
    transforms::LoopRanges ranges;  // loop ranges of the state's ops, computed once each
  };
  mutable Derived derived_;
};

}  // namespace mlir_rl::env
