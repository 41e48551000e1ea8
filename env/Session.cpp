#include "env/Session.h"

#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "llvm/Support/raw_ostream.h"

namespace mlir_rl::env {

namespace {
double reward(double beforeNs, double afterNs) { return std::log10(beforeNs / afterNs); }
}  // namespace

std::vector<BoxSpec> observationSpace(const SessionConfig &c) {
  int64_t L = c.maxLoops, K = 1 + static_cast<int64_t>(c.tileSizes.size());
  const double big = 9.2e18;
  return {
      {"op_type", "one-hot op family: generic, matmul, conv, pooling, elementwise, other", {kNumOpFamilies},
       DType::Float32, 0, 1},
      {"loop_bounds", "static bound of each loop of the op under the cursor (0 past the last loop)", {L},
       DType::Int64, 0, big},
      {"loop_bounds_log2", "log2(1 + bound) of each loop", {L}, DType::Float32, 0, 64},
      {"iterator_types", "per loop: 0 none, 1 parallel, 2 reduction", {L}, DType::Int32, 0, 2},
      {"progress", "op index, number of ops, steps taken, transformations on the current op", {4}, DType::Int64, 0,
       big},
      {"action_history", "one-hot types of the transformations applied to the current op, in order",
       {c.actionsPerOp, kNumActionTypes}, DType::Float32, 0, 1},
      {"interchange_partial", "loops placed so far by an open interchange (-1: position free)", {L}, DType::Int64,
       -1, static_cast<double>(L - 1)},
      {"mask_type", "legal values of head 'type'", {kNumActionTypes}, DType::Bool, 0, 1},
      {"mask_tiles", "legal values of heads tile_0..tile_{L-1}", {L, K}, DType::Bool, 0, 1},
      {"mask_interchange", "legal values of head 'interchange'", {L}, DType::Bool, 0, 1},
  };
}

Session::Session(std::shared_ptr<const Benchmark> benchmark, SessionConfig config, uint64_t seed,
                 EvaluationService *evaluator)
    : benchmark_(std::move(benchmark)), config_(std::move(config)), space_(config_), seed_(seed),
      evaluator_(evaluator) {}

absl::StatusOr<std::unique_ptr<Session>> Session::create(std::shared_ptr<const Benchmark> benchmark,
                                                         SessionConfig config, uint64_t seed,
                                                         EvaluationService *evaluator) {
  if (absl::Status s = config.validate(); !s.ok()) return s;
  std::unique_ptr<Session> session(new Session(std::move(benchmark), std::move(config), seed, evaluator));
  session->module_ = session->benchmark_->module().clone();
  if (session->benchmark_->schedule().empty()) session->terminated_ = true;
  return session;
}

std::unique_ptr<Session> Session::fork() const {
  std::unique_ptr<Session> copy(new Session(benchmark_, config_, seed_, evaluator_));
  copy->module_ = module_.get().clone();
  copy->cursor_ = cursor_;
  copy->actionsOnOp_ = actionsOnOp_;
  copy->historyOnOp_ = historyOnOp_;
  copy->pendingPermutation_ = pendingPermutation_;
  copy->fragments_ = fragments_;
  copy->actions_ = actions_;
  copy->steps_ = steps_;
  copy->terminated_ = terminated_;
  copy->truncated_ = truncated_;
  copy->lastTimeNs_ = lastTimeNs_;
  return copy;
}

const ScheduledOp *Session::currentOp() const {
  const auto &schedule = benchmark_->schedule();
  return cursor_ < schedule.size() ? &schedule[cursor_] : nullptr;
}

mlir::linalg::LinalgOp Session::currentLinalgOp() const {
  const ScheduledOp *op = currentOp();
  return op ? transforms::findTaggedOp(*module_, op->tag) : mlir::linalg::LinalgOp();
}

void Session::advanceCursor() {
  ++cursor_;
  actionsOnOp_ = 0;
  historyOnOp_.clear();
  pendingPermutation_.clear();
  if (cursor_ >= benchmark_->schedule().size()) terminated_ = true;
}

ActionMask Session::mask() const {
  int L = config_.maxLoops, K = space_.numTileChoices();
  ActionMask m;
  m.type.assign(kNumActionTypes, 0);
  m.typeReasons.assign(kNumActionTypes, "");
  m.tiles.assign(L, std::vector<uint8_t>(K, 0));
  m.interchange.assign(L, 0);
  for (auto &row : m.tiles) row[0] = 1;  // "no tiling" is always a legal value
  auto block = [&](ActionType t, std::string why) {
    m.type[static_cast<int>(t)] = 0;
    m.typeReasons[static_cast<int>(t)] = std::move(why);
  };
  if (done()) {
    for (int t = 0; t < kNumActionTypes; ++t) block(static_cast<ActionType>(t), "the episode is over");
    return m;
  }
  if (!pendingPermutation_.empty()) {
    for (int t = 0; t < kNumActionTypes; ++t) block(static_cast<ActionType>(t), "an interchange is open: choose its next loop");
    m.type[static_cast<int>(ActionType::Interchange)] = 1;
    m.typeReasons[static_cast<int>(ActionType::Interchange)].clear();
  } else {
    m.type.assign(kNumActionTypes, 1);
  }
  mlir::linalg::LinalgOp op = currentLinalgOp();
  if (!op) {
    for (int t = 1; t < kNumActionTypes; ++t) block(static_cast<ActionType>(t), "the op under the cursor is gone");
    return m;
  }
  llvm::SmallVector<int64_t> bounds = op.getStaticLoopRanges();
  auto iterators = op.getIteratorTypesArray();
  int numLoops = static_cast<int>(bounds.size());
  bool anyTiling = false, anyParallelTiling = false;
  for (int i = 0; i < std::min(numLoops, L); ++i) {
    for (int k = 1; k < K; ++k) {
      int64_t size = config_.tileSizes[k - 1];
      if (mlir::ShapedType::isDynamic(bounds[i]) || !transforms::isLegalTileSize(bounds[i], size)) continue;
      m.tiles[i][k] = 1;
      if (size < bounds[i]) {
        anyTiling = true;
        if (iterators[i] == mlir::utils::IteratorType::parallel) anyParallelTiling = true;
      }
    }
  }
  if (!pendingPermutation_.empty()) {
    for (int i = 0; i < std::min(numLoops, L); ++i)
      m.interchange[i] =
          std::find(pendingPermutation_.begin(), pendingPermutation_.end(), i) == pendingPermutation_.end();
    return m;
  }
  for (int i = 0; i < std::min(numLoops, L); ++i) m.interchange[i] = 1;
  if (numLoops > L) {
    for (int t = 1; t < kNumActionTypes; ++t)
      block(static_cast<ActionType>(t), absl::StrCat("the op has ", numLoops, " loops, more than max_loops = ", L));
    return m;
  }
  if (!anyTiling) block(ActionType::Tiling, "no loop has a tile size smaller than its bound that divides it");
  if (!anyParallelTiling)
    block(ActionType::TiledParallelization, "no parallel loop has a tile size smaller than its bound");
  else if (transforms::isInsideForall(op))
    block(ActionType::TiledParallelization, "the op is already inside a parallel loop");
  if (numLoops < 2) block(ActionType::Interchange, "the op has fewer than 2 loops");
  std::string vectorBlocker = transforms::vectorizationBlocker(op, config_.maxVectorElements);
  if (!vectorBlocker.empty()) block(ActionType::Vectorization, vectorBlocker);
  return m;
}

std::vector<NamedTensor> Session::observe() const {
  int L = config_.maxLoops;
  std::vector<float> opType(kNumOpFamilies, 0.f);
  std::vector<int64_t> bounds(L, 0);
  std::vector<float> boundsLog2(L, 0.f);
  std::vector<int32_t> iterators(L, 0);
  if (const ScheduledOp *sop = currentOp()) opType[static_cast<int>(sop->family)] = 1.f;
  if (mlir::linalg::LinalgOp op = currentLinalgOp()) {
    llvm::SmallVector<int64_t> ranges = op.getStaticLoopRanges();
    auto its = op.getIteratorTypesArray();
    for (int i = 0; i < std::min<int>(L, ranges.size()); ++i) {
      bounds[i] = mlir::ShapedType::isDynamic(ranges[i]) ? 0 : ranges[i];
      boundsLog2[i] = static_cast<float>(std::log2(1.0 + static_cast<double>(bounds[i])));
      iterators[i] = its[i] == mlir::utils::IteratorType::parallel ? 1 : 2;
    }
  }
  std::vector<int64_t> progress{static_cast<int64_t>(cursor_), static_cast<int64_t>(benchmark_->schedule().size()),
                                steps_, actionsOnOp_};
  std::vector<float> history(static_cast<size_t>(config_.actionsPerOp) * kNumActionTypes, 0.f);
  for (size_t i = 0; i < historyOnOp_.size() && i < static_cast<size_t>(config_.actionsPerOp); ++i)
    history[i * kNumActionTypes + historyOnOp_[i]] = 1.f;
  std::vector<int64_t> partial(L, -1);
  for (size_t i = 0; i < pendingPermutation_.size() && i < static_cast<size_t>(L); ++i)
    partial[i] = pendingPermutation_[i];

  ActionMask m = mask();
  std::vector<uint8_t> tiles;
  for (const auto &row : m.tiles) tiles.insert(tiles.end(), row.begin(), row.end());
  int64_t K = space_.numTileChoices();
  return {
      NamedTensor::of("op_type", DType::Float32, {kNumOpFamilies}, opType),
      NamedTensor::of("loop_bounds", DType::Int64, {L}, bounds),
      NamedTensor::of("loop_bounds_log2", DType::Float32, {L}, boundsLog2),
      NamedTensor::of("iterator_types", DType::Int32, {L}, iterators),
      NamedTensor::of("progress", DType::Int64, {4}, progress),
      NamedTensor::of("action_history", DType::Float32, {config_.actionsPerOp, kNumActionTypes}, history),
      NamedTensor::of("interchange_partial", DType::Int64, {L}, partial),
      NamedTensor::of("mask_type", DType::Bool, {kNumActionTypes}, m.type),
      NamedTensor::of("mask_tiles", DType::Bool, {L, K}, tiles),
      NamedTensor::of("mask_interchange", DType::Bool, {L}, m.interchange),
  };
}

EpisodeStatus Session::status() const {
  EpisodeStatus s;
  s.opIndex = static_cast<int>(cursor_);
  s.numOps = static_cast<int>(benchmark_->schedule().size());
  s.step = steps_;
  if (const ScheduledOp *op = currentOp(); op && !done()) s.currentOp = op->name;
  s.interchangePending = !pendingPermutation_.empty();
  s.terminated = terminated_;
  s.truncated = truncated_;
  return s;
}

bool Session::apply(transforms::Fragment fragment, std::string &failure) {
  mlir::OwningOpRef<mlir::ModuleOp> candidate(module_->clone());
  if (mlir::failed(transforms::applyFragments(*candidate, {fragment}, failure))) return false;
  module_ = std::move(candidate);
  fragments_.push_back(std::move(fragment));
  return true;
}

std::string Session::describe(const DecodedAction &a) const {
  const ScheduledOp *op = currentOp();
  std::string target = op ? absl::StrCat(" op ", op->tag, " (", op->name, ")") : "";
  int numLoops = 0;
  if (mlir::linalg::LinalgOp lop = currentLinalgOp()) numLoops = static_cast<int>(lop.getNumLoops());
  std::vector<int64_t> sizes(a.tileSizes.begin(), a.tileSizes.begin() + std::min<size_t>(numLoops, a.tileSizes.size()));
  switch (a.type) {
    case ActionType::Tiling:
    case ActionType::TiledParallelization:
      return absl::StrCat(actionTypeName(a.type), target, " sizes ", transforms::formatList(sizes));
    case ActionType::Interchange:
      return absl::StrCat("INTERCHANGE", target, " next loop ", a.pointer);
    default:
      return absl::StrCat(actionTypeName(a.type), target);
  }
}

double Session::evaluateState(StepResult &result) {
  EvaluationRecord record = evaluator_->evaluate(*benchmark_, *module_, seed_, config_.numThreads);
  result.evaluation = record;
  if (!record.ok) return config_.executionPenalty;
  double before = config_.rewardMode == RewardMode::Immediate && lastTimeNs_ > 0 ? lastTimeNs_ : record.referenceNs;
  lastTimeNs_ = record.timing.medianNs;
  return reward(before, record.timing.medianNs);
}

absl::StatusOr<StepResult> Session::step(const std::vector<int64_t> &values) {
  if (done())
    return absl::FailedPreconditionError(
        absl::StrCat("the episode is over (", terminated_ ? "terminated" : "truncated",
                     " after ", steps_, " steps): call Reset to start a new one"));
  absl::StatusOr<DecodedAction> decoded = space_.decode(values);
  if (!decoded.ok()) return decoded.status();
  const DecodedAction &a = *decoded;
  ActionMask m = mask();
  absl::Status legal = space_.checkMask(a, m);
  if (!legal.ok() && !config_.penalizeMaskedActions) return legal;

  auto start = std::chrono::steady_clock::now();
  StepResult result;
  result.action = values;
  result.description = describe(a);
  result.applied = true;
  if (!legal.ok()) return penalizeMaskedAction(a, std::string(legal.message()), std::move(result));
  const ScheduledOp *op = currentOp();
  mlir::linalg::LinalgOp lop = currentLinalgOp();
  int numLoops = lop ? static_cast<int>(lop.getNumLoops()) : 0;
  std::string prefix = absl::StrCat("s", steps_);
  bool completedTransformation = true;  // counts against the op's budget
  bool transformed = false;             // the module changed
  std::string failure;

  switch (a.type) {
    case ActionType::NoTransformation:
      completedTransformation = false;
      break;
    case ActionType::Tiling: {
      std::vector<int64_t> sizes(a.tileSizes.begin(), a.tileSizes.begin() + numLoops);
      bool any = std::any_of(sizes.begin(), sizes.end(), [](int64_t s) { return s != 0; });
      transformed = any && apply(transforms::tilingFragment(op->tag, sizes, prefix), failure);
      result.applied = !any || transformed;
      break;
    }
    case ActionType::TiledParallelization: {
      std::vector<int64_t> sizes(a.tileSizes.begin(), a.tileSizes.begin() + numLoops);
      llvm::SmallVector<bool> isReduction;
      for (auto it : lop.getIteratorTypesArray()) isReduction.push_back(it == mlir::utils::IteratorType::reduction);
      bool any = std::any_of(sizes.begin(), sizes.end(), [](int64_t s) { return s != 0; });
      transformed = any && apply(transforms::parallelTilingFragment(op->tag, sizes, isReduction, prefix), failure);
      result.applied = !any || transformed;
      break;
    }
    case ActionType::Interchange: {
      pendingPermutation_.push_back(a.pointer);
      if (static_cast<int>(pendingPermutation_.size()) + 1 < numLoops) {
        completedTransformation = false;  // the interchange stays open
        break;
      }
      std::vector<int64_t> permutation = pendingPermutation_;
      for (int i = 0; i < numLoops; ++i)
        if (std::find(permutation.begin(), permutation.end(), i) == permutation.end()) permutation.push_back(i);
      pendingPermutation_.clear();
      result.description = absl::StrCat("INTERCHANGE op ", op->tag, " (", op->name, ") permutation ",
                                        transforms::formatList(permutation));
      bool identity = true;
      for (int i = 0; i < numLoops; ++i) identity &= permutation[i] == i;
      transformed = !identity && apply(transforms::interchangeFragment(op->tag, permutation, prefix), failure);
      result.applied = identity || transformed;
      break;
    }
    case ActionType::Vectorization:
      transformed = apply(transforms::vectorizationFragment(op->tag, prefix), failure);
      result.applied = transformed;
      break;
  }

  result.applyMs = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  actions_.push_back(values);
  ++steps_;
  if (!result.applied) {
    result.failureReason = failure;
    result.reward = config_.transformPenalty;
  }
  if (completedTransformation) {
    historyOnOp_.push_back(static_cast<int>(a.type));
    ++actionsOnOp_;
  }
  // Cursor rules: NO_TRANSFORMATION and (successful) vectorization end the op; so does an exhausted budget.
  if (a.type == ActionType::NoTransformation || (a.type == ActionType::Vectorization && result.applied) ||
      actionsOnOp_ >= config_.actionsPerOp)
    advanceCursor();
  if (!terminated_ && config_.maxSteps > 0 && steps_ >= config_.maxSteps) truncated_ = true;

  addEvaluationReward(result, transformed);
  return result;
}

void Session::addEvaluationReward(StepResult &result, bool transformed) {
  if (config_.rewardMode == RewardMode::Immediate && transformed) {
    result.reward += evaluateState(result);
  } else if (config_.rewardMode == RewardMode::Final && done()) {
    result.reward += evaluateState(result);
  } else if (config_.rewardMode == RewardMode::Immediate && done() && lastTimeNs_ == 0) {
    // Nothing was transformed in the whole episode: the final state is the reference (reward 0), but report it.
    result.reward += evaluateState(result);
  }
}

absl::StatusOr<StepResult> Session::penalizeMaskedAction(const DecodedAction &a, std::string reason,
                                                         StepResult result) {
  // The state is unchanged, but the step counts (like a failed transformation) so that every episode ends.
  result.applied = false;
  result.failureReason = "masked action: " + reason;
  result.reward = config_.transformPenalty;
  actions_.push_back(result.action);
  ++steps_;
  pendingPermutation_.clear();  // a masked step also abandons an open interchange
  historyOnOp_.push_back(static_cast<int>(a.type));
  if (++actionsOnOp_ >= config_.actionsPerOp) advanceCursor();
  if (!terminated_ && config_.maxSteps > 0 && steps_ >= config_.maxSteps) truncated_ = true;
  addEvaluationReward(result, /*transformed=*/false);
  return result;
}

std::string Session::currentIR() const {
  std::string out;
  llvm::raw_string_ostream os(out);
  module_.get()->print(os);
  return out;
}

std::string Session::schedule() const { return transforms::buildScript(fragments_); }

}  // namespace mlir_rl::env
