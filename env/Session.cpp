#include "env/Session.h"

#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "llvm/Support/raw_ostream.h"

#include "env/Features.h"

namespace mlir_rl::env {

namespace {
double reward(double beforeNs, double afterNs) { return std::log10(beforeNs / afterNs); }

// The family the benchmark gave a tagged op (it survives generalization, which turns named ops into generics).
std::optional<OpFamily> familyOfTag(const std::vector<ScheduledOp> &schedule, mlir::Operation *op) {
  auto attr = op->getAttrOfType<mlir::IntegerAttr>(transforms::kOpTagAttr);
  if (!attr) return std::nullopt;
  for (const ScheduledOp &s : schedule)
    if (s.tag == attr.getInt()) return s.family;
  return std::nullopt;
}
}  // namespace

std::vector<BoxSpec> observationSpace(const SessionConfig &c) {
  int64_t L = c.maxLoops, K = 1 + static_cast<int64_t>(c.tileSizes.size());
  const double big = 9.2e18;
  // The current op's structure first (op_type, loop_bounds, loop_bounds_log2, iterator_types), then the episode
  // state and masks, then the current op's accesses and body, then the same features of its producer.
  std::vector<BoxSpec> specs = structureSpecs(c, /*producer=*/false);
  std::vector<BoxSpec> rest = {
      {"progress", "op index, number of ops, steps taken, transformations on the current op", {4}, DType::Int64, 0,
       big},
      {"action_history", "one-hot types of the transformations applied to the current op, in order",
       {c.actionsPerOp, kNumActionTypes}, DType::Float32, 0, 1},
      {"interchange_partial", "loops placed so far by an open interchange (-1: position free)", {L}, DType::Int64,
       -1, static_cast<double>(L - 1)},
      {"mask_type", "legal values of head 'type'", {kNumActionTypes}, DType::Bool, 0, 1},
      {"mask_tiles", "legal values of heads tile_0..tile_{L-1}", {L, K}, DType::Bool, 0, 1},
      {"mask_interchange", "legal values of head 'interchange'", {ActionSpace(c).nvec().back()}, DType::Bool, 0, 1},
  };
  auto append = [&specs](std::vector<BoxSpec> group) {
    for (BoxSpec &spec : group) specs.push_back(std::move(spec));
  };
  append(std::move(rest));
  append(accessSpecs(c, /*producer=*/false));
  append(structureSpecs(c, /*producer=*/true));
  append(accessSpecs(c, /*producer=*/true));
  return specs;
}

Session::Session(std::shared_ptr<const Benchmark> benchmark, SessionConfig config, uint64_t seed,
                 EvaluationService *evaluator)
    : benchmark_(std::move(benchmark)), config_(std::move(config)), space_(config_), seed_(seed),
      evaluator_(evaluator),
      factsKey_(absl::StrCat(config_.maxLoops, ",", config_.maxAccesses, ",", config_.maxVectorElements, ",",
                             static_cast<int>(config_.interchangeMode), ",", absl::StrJoin(config_.tileSizes, ","))) {}

absl::StatusOr<std::unique_ptr<Session>> Session::create(std::shared_ptr<const Benchmark> benchmark,
                                                         SessionConfig config, uint64_t seed,
                                                         EvaluationService *evaluator) {
  if (absl::Status s = config.validate(); !s.ok()) return s;
  std::unique_ptr<Session> session(new Session(std::move(benchmark), std::move(config), seed, evaluator));
  session->state_ = PayloadState::root(*session->benchmark_);
  if (session->benchmark_->schedule().empty()) session->terminated_ = true;
  return session;
}

std::unique_ptr<Session> Session::fork() const {
  std::unique_ptr<Session> copy(new Session(benchmark_, config_, seed_, evaluator_));
  copy->state_ = state_;  // states are immutable: shared, not copied
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
  const std::vector<mlir::linalg::LinalgOp> &ops = currentLinalgOps();
  return ops.empty() ? mlir::linalg::LinalgOp() : ops.front();
}

void Session::advanceCursor() {
  invalidate();
  ++cursor_;
  actionsOnOp_ = 0;
  historyOnOp_.clear();
  pendingPermutation_.clear();
  if (cursor_ >= benchmark_->schedule().size()) terminated_ = true;
}

namespace {

// UNROLL factors (candidate tile sizes) legal for the innermost scf.for loops around `ops`, in candidate order.
std::vector<int64_t> legalUnrollFactors(const std::vector<mlir::linalg::LinalgOp> &ops, const SessionConfig &config,
                                        transforms::LoopRanges &ranges) {
  std::vector<int64_t> factors;
  std::vector<int64_t> tripCounts = transforms::innermostLoopTripCounts(ops);
  int64_t elements = transforms::totalIterationElements(ops, ranges);
  for (int64_t f : config.tileSizes)
    if (transforms::isLegalUnrollFactor(tripCounts, static_cast<int64_t>(ops.size()), elements, f))
      factors.push_back(f);
  return factors;
}

// UNROLL's factor: the chosen one, or for head value 0 the smallest legal one (0 when there is none).
int64_t resolveUnrollFactor(const DecodedAction &a, const std::vector<mlir::linalg::LinalgOp> &ops,
                            const SessionConfig &config, transforms::LoopRanges &ranges) {
  if (a.unrollFactor != 0) return a.unrollFactor;
  std::vector<int64_t> legal = legalUnrollFactors(ops, config, ranges);
  return legal.empty() ? 0 : *std::min_element(legal.begin(), legal.end());
}

}  // namespace

const std::vector<mlir::linalg::LinalgOp> &Session::currentLinalgOps() const {
  if (!derived_.ops) {
    const ScheduledOp *op = currentOp();
    derived_.ops = op ? transforms::findTaggedOps(state_->module(), op->tag) : std::vector<mlir::linalg::LinalgOp>();
  }
  return *derived_.ops;
}

const ActionMask &Session::mask() const {
  if (!derived_.mask) derived_.mask = computeMask();
  return *derived_.mask;
}

std::shared_ptr<const OpFacts> Session::facts() const {
  if (!derived_.facts) {
    const ScheduledOp *op = currentOp();
    derived_.facts = state_->facts(absl::StrCat(op ? op->tag : -1, ";", factsKey_), [this] { return computeFacts(); });
  }
  return derived_.facts;
}

std::shared_ptr<const OpFacts> Session::computeFacts() const {
  auto f = std::make_shared<OpFacts>(config_.maxLoops, config_.maxAccesses);
  const std::vector<mlir::linalg::LinalgOp> &ops = currentLinalgOps();
  if (!ops.empty()) f->fusion = transforms::planFusion(ops.front(), f->fusionBlocker);
  f->open = computeOpenMask(ops, *f);
  if (ops.empty()) return f;
  mlir::linalg::LinalgOp op = ops.front();
  f->found = true;
  for (auto it : op.getIteratorTypesArray()) f->isReduction.push_back(it == mlir::utils::IteratorType::reduction);
  OpFeatures current(config_.maxLoops, config_.maxAccesses);
  extractOpFeatures(op, current, derived_.ranges);
  f->current = CompactFeatures(current);
  if (mlir::linalg::LinalgOp p = findProducer(op)) {
    OpFeatures producer(config_.maxLoops, config_.maxAccesses);
    extractOpFeatures(p, producer, derived_.ranges);
    OpFamily family = familyOfTag(benchmark_->schedule(), p).value_or(classifyOp(p));
    producer.opType[static_cast<int>(family)] = 1.f;
    producer.vectorizable[0] = static_cast<int>(p.getNumLoops()) <= config_.maxLoops &&
                               transforms::vectorizationBlocker(p, config_.maxVectorElements, derived_.ranges).empty();
    f->producer = CompactFeatures(producer);
  }
  return f;
}

ActionMask Session::blankMask() const {
  int L = config_.maxLoops, K = space_.numTileChoices();
  ActionMask m;
  m.type.assign(kNumActionTypes, 0);
  m.typeReasons.assign(kNumActionTypes, "");
  m.tiles.assign(L, std::vector<uint8_t>(K, 0));
  m.interchange.assign(space_.numInterchangeChoices(), 0);
  for (auto &row : m.tiles) row[0] = 1;  // "no tiling" is always a legal value
  return m;
}

ActionMask Session::computeMask() const {
  int L = config_.maxLoops;
  if (!done() && pendingPermutation_.empty()) return facts()->open;
  ActionMask m = blankMask();
  if (done()) {
    m.typeReasons.assign(kNumActionTypes, "the episode is over");
    return m;
  }
  // An open interchange: only its next loop may be chosen, among the loops not placed yet.
  m.typeReasons.assign(kNumActionTypes, "an interchange is open: choose its next loop");
  std::shared_ptr<const OpFacts> f = facts();
  if (!f->found) {
    for (int t = 1; t < kNumActionTypes; ++t) m.typeReasons[t] = "the op under the cursor is gone";
    return m;
  }
  m.type[static_cast<int>(ActionType::Interchange)] = 1;
  m.typeReasons[static_cast<int>(ActionType::Interchange)].clear();
  m.tiles = f->tiles;
  for (int i = 0; i < std::min(f->numLoops(), L); ++i)
    m.interchange[i] =
        std::find(pendingPermutation_.begin(), pendingPermutation_.end(), i) == pendingPermutation_.end();
  return m;
}

// Legality is checked against every op carrying the current tag (unrolled copies, a fused copy and an original with
// other users): an action is legal only when it is legal for all of them, since fragments transform all of them.
ActionMask Session::computeOpenMask(const std::vector<mlir::linalg::LinalgOp> &ops, OpFacts &facts) const {
  int L = config_.maxLoops, K = space_.numTileChoices();
  bool swaps = config_.interchangeMode == InterchangeMode::Swaps;
  ActionMask m = blankMask();
  auto block = [&](ActionType t, std::string why) {
    m.type[static_cast<int>(t)] = 0;
    m.typeReasons[static_cast<int>(t)] = std::move(why);
  };
  m.type.assign(kNumActionTypes, 1);
  if (ops.empty()) {
    for (int t = 1; t < kNumActionTypes; ++t) block(static_cast<ActionType>(t), "the op under the cursor is gone");
    facts.tiles = m.tiles;
    return m;
  }
  mlir::linalg::LinalgOp op = ops.front();
  transforms::LoopRanges &ranges = derived_.ranges;
  llvm::ArrayRef<int64_t> bounds = ranges.of(op);
  auto iterators = op.getIteratorTypesArray();
  int numLoops = static_cast<int>(bounds.size());
  std::vector<llvm::ArrayRef<int64_t>> allBounds;
  for (mlir::linalg::LinalgOp o : ops) allBounds.push_back(ranges.of(o));
  // Loop levels left before bufferization gets slow (transforms::kMaxLoopDepth): each loop tiled to a size below its
  // bound adds one (parallelization adds one scf.forall for all its parallel loops, but the tile heads are shared).
  // When fewer levels are left than loops could be tiled, only the first loops that can shrink keep sizes below
  // their bound.
  int depth = 0;
  for (mlir::linalg::LinalgOp o : ops) depth = std::max(depth, transforms::loopDepth(o));
  int levelsLeft = transforms::kMaxLoopDepth - depth;
  bool anyTiling = false, anyParallelTiling = false, depthLimited = false, parallelDepthLimited = false;
  for (int i = 0; i < std::min(numLoops, L); ++i) {
    bool loopShrinks = false;
    for (int k = 1; k < K; ++k) {
      int64_t size = config_.tileSizes[k - 1];
      bool legal = true, shrinks = false;
      for (const auto &b : allBounds) {
        if (i >= static_cast<int>(b.size()) || mlir::ShapedType::isDynamic(b[i]) ||
            !transforms::isLegalTileSize(b[i], size)) {
          legal = false;
          break;
        }
        shrinks |= size < b[i];
      }
      if (!legal) continue;
      if (shrinks && levelsLeft <= 0) {
        depthLimited = true;
        parallelDepthLimited |= iterators[i] == mlir::utils::IteratorType::parallel;
        continue;
      }
      m.tiles[i][k] = 1;
      if (shrinks) {
        loopShrinks = true;
        anyTiling = true;
        if (iterators[i] == mlir::utils::IteratorType::parallel) anyParallelTiling = true;
      }
    }
    levelsLeft -= loopShrinks;
  }
  facts.tiles = m.tiles;
  if (swaps) {
    for (int s = 0; s < static_cast<int>(m.interchange.size()); ++s)
      m.interchange[s] = !transforms::swapPermutation(s, L, numLoops).empty();
  } else {
    for (int i = 0; i < std::min(numLoops, L); ++i) m.interchange[i] = 1;
  }
  if (numLoops > L) {
    for (int t = 1; t < kNumActionTypes; ++t)
      block(static_cast<ActionType>(t), absl::StrCat("the op has ", numLoops, " loops, more than max_loops = ", L));
    return m;
  }
  const std::string tooDeep = absl::StrCat(
      "the op is inside ", depth, " loop levels; MLIR 19's bufferization doubles its time with each level, so "
      "transformations may not take it past ", transforms::kMaxLoopDepth);
  if (!anyTiling)
    block(ActionType::Tiling, depthLimited ? tooDeep : "no loop has a tile size smaller than its bound that divides it");
  bool insideForall = std::any_of(ops.begin(), ops.end(), [](mlir::linalg::LinalgOp o) {
    return transforms::isInsideForall(o);
  });
  for (ActionType t : {ActionType::TiledParallelization, ActionType::TiledFusion}) {
    if (!anyParallelTiling)
      block(t, parallelDepthLimited ? tooDeep : "no parallel loop has a tile size smaller than its bound");
    else if (insideForall)
      block(t, "the op is already inside a parallel loop");
  }
  if (m.type[static_cast<int>(ActionType::TiledFusion)]) {
    if (ops.size() != 1)
      block(ActionType::TiledFusion, absl::StrCat("the tag marks ", ops.size(), " ops (unrolled or fused copies): "
                                                  "fusion needs exactly one consumer"));
    else if (facts.fusion.empty())
      block(ActionType::TiledFusion, facts.fusionBlocker);
  }
  if (numLoops < 2) block(ActionType::Interchange, "the op has fewer than 2 loops");
  for (mlir::linalg::LinalgOp o : ops) {
    std::string vectorBlocker = transforms::vectorizationBlocker(o, config_.maxVectorElements, ranges);
    if (!vectorBlocker.empty()) {
      block(ActionType::Vectorization, vectorBlocker);
      break;
    }
  }
  // Unrolled copies side by side in a loop body must not get loops of their own (TILED_FUSION is refused for
  // copies above). Vectorizing a convolution tiles its output-height and kernel-height loops to 1 unless they are 1
  // already: two levels at most, allowed for a pair of copies.
  if (int copies = transforms::maxCopiesPerLoopBody(ops); copies > 1) {
    for (ActionType t : {ActionType::Tiling, ActionType::TiledParallelization})
      if (m.type[static_cast<int>(t)]) block(t, transforms::unrolledCopiesReason(copies));
    std::pair<int, int> convLoops = transforms::decomposableConvLoops(op);  // (output height, kernel height)
    if (convLoops.first >= 0 && copies > transforms::kMaxCopiesForConvVectorization &&
        m.type[static_cast<int>(ActionType::Vectorization)] &&
        std::any_of(allBounds.begin(), allBounds.end(), [&](const auto &b) {
          return b[convLoops.first] != 1 || b[convLoops.second] != 1;
        }))
      block(ActionType::Vectorization,
            absl::StrCat(transforms::unrolledCopiesReason(copies), "; vectorizing a convolution tiles its "
                         "output-height and kernel-height loops to 1 first (allowed for up to ",
                         transforms::kMaxCopiesForConvVectorization, " copies)"));
  }
  // Vectorizing a convolution adds up to two loops (output height and kernel height tiled to 1).
  if (auto [ohLoop, khLoop] = transforms::decomposableConvLoops(op);
      ohLoop >= 0 && m.type[static_cast<int>(ActionType::Vectorization)]) {
    int addedLoops = 0;
    for (int loop : {ohLoop, khLoop})
      addedLoops += std::any_of(allBounds.begin(), allBounds.end(), [&](const auto &b) { return b[loop] != 1; });
    if (depth + addedLoops > transforms::kMaxLoopDepth)
      block(ActionType::Vectorization, tooDeep + " (vectorizing a convolution tiles its output-height and "
                                                 "kernel-height loops to 1 first)");
  }
  for (mlir::linalg::LinalgOp o : ops) {
    std::string img2colBlocker = transforms::img2colBlocker(o);
    if (!img2colBlocker.empty()) {
      block(ActionType::Img2Col, img2colBlocker);
      break;
    }
  }
  int unrollHead = space_.unrollHead();
  if (numLoops > unrollHead) {
    block(ActionType::Unroll, absl::StrCat("the op has ", numLoops, " loops: head tile_", unrollHead,
                                           " tiles its last loop and cannot carry an unroll factor"));
  } else if (transforms::innermostLoopTripCounts(ops).empty()) {
    block(ActionType::Unroll, "no scf.for with a constant trip count around the op (tile it first)");
  } else if (std::string nest = transforms::unrollLoopNestBlocker(ops); !nest.empty()) {
    block(ActionType::Unroll, nest);
  } else {
    std::vector<int64_t> factors = legalUnrollFactors(ops, config_, ranges);
    if (factors.empty())
      block(ActionType::Unroll, absl::StrCat("no candidate factor > 1 divides the trip count of the innermost loop "
                                             "(or the op would exceed ", transforms::kMaxUnrolledCopies, " copies or ",
                                             transforms::kMaxUnrolledElements,
                                             " iteration-space elements over all copies: tile it smaller first)"));
    for (int k = 1; k < K; ++k)
      if (std::find(factors.begin(), factors.end(), config_.tileSizes[k - 1]) != factors.end())
        m.tiles[unrollHead][k] = 1;
  }
  return m;
}


std::vector<NamedTensor> Session::observe() const {
  int L = config_.maxLoops;
  const ActionMask &m = mask();
  std::shared_ptr<const OpFacts> f = facts();
  OpFeatures current = f->current.expand();
  if (const ScheduledOp *sop = currentOp()) current.opType[static_cast<int>(sop->family)] = 1.f;
  current.vectorizable[0] = m.type[static_cast<int>(ActionType::Vectorization)];
  OpFeatures producer = f->producer.expand();
  std::vector<int64_t> progress{static_cast<int64_t>(cursor_), static_cast<int64_t>(benchmark_->schedule().size()),
                                steps_, actionsOnOp_};
  std::vector<float> history(static_cast<size_t>(config_.actionsPerOp) * kNumActionTypes, 0.f);
  for (size_t i = 0; i < historyOnOp_.size() && i < static_cast<size_t>(config_.actionsPerOp); ++i)
    history[i * kNumActionTypes + historyOnOp_[i]] = 1.f;
  std::vector<int64_t> partial(L, -1);
  for (size_t i = 0; i < pendingPermutation_.size() && i < static_cast<size_t>(L); ++i)
    partial[i] = pendingPermutation_[i];

  std::vector<uint8_t> tiles;
  for (const auto &row : m.tiles) tiles.insert(tiles.end(), row.begin(), row.end());
  int64_t K = space_.numTileChoices();
  // Same order as observationSpace().
  std::vector<NamedTensor> out;
  out.reserve(24);
  appendStructureTensors(current, /*producer=*/false, out);
  out.push_back(NamedTensor::of("progress", DType::Int64, {4}, progress));
  out.push_back(NamedTensor::of("action_history", DType::Float32, {config_.actionsPerOp, kNumActionTypes}, history));
  out.push_back(NamedTensor::of("interchange_partial", DType::Int64, {L}, partial));
  out.push_back(NamedTensor::of("mask_type", DType::Bool, {kNumActionTypes}, m.type));
  out.push_back(NamedTensor::of("mask_tiles", DType::Bool, {L, K}, tiles));
  out.push_back(NamedTensor::of("mask_interchange", DType::Bool, {static_cast<int64_t>(m.interchange.size())},
                                m.interchange));
  appendAccessTensors(current, false, out);
  appendStructureTensors(producer, true, out);
  appendAccessTensors(producer, true, out);
  return out;
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

bool Session::apply(const std::function<transforms::Fragment(llvm::StringRef)> &make, std::string &failure) {
  // The transition is keyed by the fragment with a fixed prefix (value names do not change what it does); the
  // schedule keeps the step's own prefix so that fragments of one script never clash.
  std::string key = make("t").text;
  // Made from the state the action applies to (vectorization reads the ops it transforms); renaming the values is
  // all that distinguishes the scheduled copy.
  transforms::Fragment scheduled = transforms::renamePrefix({key}, "t", absl::StrCat("s", steps_));
  std::optional<Transition> known = transitions_->find(state_->id(), key);
  if (!known) {
    Transition t;
    mlir::OwningOpRef<mlir::ModuleOp> candidate(state_->module().clone());
    if (mlir::succeeded(transforms::applyFragments(*candidate, {transforms::Fragment{key}}, t.failure)))
      t.state = PayloadState::derived(std::move(candidate));
    transitions_->insert(state_->id(), key, t);
    known = std::move(t);
  }
  if (!known->state) {
    failure = known->failure;
    return false;
  }
  invalidate();  // the cached ops live in the state being left
  state_ = std::move(known->state);
  fragments_.push_back(std::move(scheduled));
  return true;
}

std::string Session::describe(const DecodedAction &a) const {
  const ScheduledOp *op = currentOp();
  std::string target = op ? absl::StrCat(" op ", op->tag, " (", op->name, ")") : "";
  int numLoops = facts()->numLoops();
  std::vector<int64_t> sizes(a.tileSizes.begin(), a.tileSizes.begin() + std::min<size_t>(numLoops, a.tileSizes.size()));
  switch (a.type) {
    case ActionType::Tiling:
    case ActionType::TiledParallelization:
      return absl::StrCat(actionTypeName(a.type), target, " sizes ", transforms::formatList(sizes));
    case ActionType::TiledFusion: {
      std::shared_ptr<const OpFacts> f = facts();
      const transforms::FusionPlan &plan = f->fusion;
      bool anyParallel = false;
      for (size_t i = 0; i < sizes.size() && i < f->isReduction.size(); ++i)
        anyParallel |= sizes[i] != 0 && !f->isReduction[i];
      return absl::StrCat("TILED_FUSION", target, " sizes ", transforms::formatList(sizes),
                          !anyParallel ? " (no parallel tile: nothing fused)"
                          : plan.empty() ? ""
                                         : absl::StrCat(" fusing ", absl::StrJoin(plan.producers, ", ")));
    }
    case ActionType::Unroll:
      return absl::StrCat("UNROLL", target, " innermost loop by ", resolveUnrollFactor(a, currentLinalgOps(), config_, derived_.ranges));
    case ActionType::Interchange:
      if (config_.interchangeMode == InterchangeMode::Swaps) {
        auto [first, second] = transforms::swapLoops(a.pointer, config_.maxLoops);
        return absl::StrCat("INTERCHANGE", target, " swap loops ", first, " and ", second);
      }
      return absl::StrCat("INTERCHANGE", target, " next loop ", a.pointer);
    default:
      return absl::StrCat(actionTypeName(a.type), target);
  }
}

Session::Snapshot Session::snapshot() const {
  return Snapshot{state_,      cursor_, fragments_.size(), actions_.size(), actionsOnOp_, steps_, historyOnOp_,
                  pendingPermutation_, terminated_, truncated_, lastTimeNs_};
}

void Session::restore(Snapshot s) {
  invalidate();
  state_ = std::move(s.state);
  cursor_ = s.cursor;
  fragments_.resize(s.fragments);
  actions_.resize(s.actions);
  actionsOnOp_ = s.actionsOnOp;
  steps_ = s.steps;
  historyOnOp_ = std::move(s.historyOnOp);
  pendingPermutation_ = std::move(s.pendingPermutation);
  terminated_ = s.terminated;
  truncated_ = s.truncated;
  lastTimeNs_ = s.lastTimeNs;
}

absl::StatusOr<double> Session::evaluateState(StepResult &result, const StepContext &context) {
  EvaluateOptions options;
  options.callerDeadline = context.deadline;
  options.readCache = config_.cacheMode == CacheMode::Use;
  options.writeCache = config_.cacheMode != CacheMode::Bypass;
  EvaluationRecord record = evaluator_->evaluate(*benchmark_, state_->text(), seed_, config_.numThreads, options);
  if (!record.error.ok()) return record.error;
  result.evaluation = record;
  if (!record.ok) return config_.executionPenalty;
  double before = config_.rewardMode == RewardMode::Immediate && lastTimeNs_ > 0 ? lastTimeNs_ : record.referenceNs;
  lastTimeNs_ = record.timing.medianNs;
  return reward(before, record.timing.medianNs);
}

absl::StatusOr<StepResult> Session::step(const std::vector<int64_t> &values, const StepContext &context) {
  if (done())
    return absl::FailedPreconditionError(
        absl::StrCat("the episode is over (", terminated_ ? "terminated" : "truncated",
                     " after ", steps_, " steps): call Reset to start a new one"));
  absl::StatusOr<DecodedAction> decoded = space_.decode(values);
  if (!decoded.ok()) return decoded.status();
  const DecodedAction &a = *decoded;
  absl::Status legal = space_.checkMask(a, mask());
  if (!legal.ok() && !config_.penalizeMaskedActions) return legal;

  auto start = std::chrono::steady_clock::now();
  StepResult result;
  result.action = values;
  result.description = describe(a);
  result.applied = true;
  Snapshot before = snapshot();
  if (!legal.ok()) {
    auto penalized = penalizeMaskedAction(a, std::string(legal.message()), std::move(result), context);
    if (!penalized.ok()) restore(std::move(before));
    return penalized;
  }
  const ScheduledOp *op = currentOp();
  // The state's facts answer what TILING, TILED_PARALLELIZATION and INTERCHANGE need, with no walk of the IR.
  std::shared_ptr<const OpFacts> facts = this->facts();
  int numLoops = facts->numLoops();
  llvm::SmallVector<bool> isReduction(facts->isReduction.begin(), facts->isReduction.end());
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
      transformed = any && apply([&](llvm::StringRef p) { return transforms::tilingFragment(op->tag, sizes, p); }, failure);
      result.applied = !any || transformed;
      break;
    }
    case ActionType::TiledParallelization: {
      std::vector<int64_t> sizes(a.tileSizes.begin(), a.tileSizes.begin() + numLoops);
      bool any = std::any_of(sizes.begin(), sizes.end(), [](int64_t s) { return s != 0; });
      transformed = any && apply([&](llvm::StringRef p) { return transforms::parallelTilingFragment(op->tag, sizes, isReduction, p); }, failure);
      result.applied = !any || transformed;
      break;
    }
    case ActionType::TiledFusion: {
      std::vector<int64_t> sizes(a.tileSizes.begin(), a.tileSizes.begin() + numLoops);
      const transforms::FusionPlan &plan = facts->fusion;
      bool any = std::any_of(sizes.begin(), sizes.end(), [](int64_t s) { return s != 0; });
      transformed =
          any && apply([&](llvm::StringRef p) { return transforms::tiledFusionFragment(op->tag, sizes, isReduction, plan, p); }, failure);
      result.applied = !any || transformed;
      break;
    }
    case ActionType::Img2Col: {
      bool depthwise = mlir::isa<mlir::linalg::DepthwiseConv2DNhwcHwcOp>(currentLinalgOp().getOperation());
      transformed = apply([&](llvm::StringRef p) { return transforms::img2colFragment(op->tag, depthwise, p); }, failure);
      result.applied = transformed;
      break;
    }
    case ActionType::Unroll: {
      int64_t factor = resolveUnrollFactor(a, currentLinalgOps(), config_, derived_.ranges);
      if (factor > 1) transformed = apply([&](llvm::StringRef p) { return transforms::unrollFragment(op->tag, factor, p); }, failure);
      else failure = "no legal unroll factor";
      result.applied = transformed;
      break;
    }
    case ActionType::Interchange: {
      if (config_.interchangeMode == InterchangeMode::Swaps) {
        // One swap is a complete interchange: no open state.
        std::vector<int64_t> permutation = transforms::swapPermutation(a.pointer, config_.maxLoops, numLoops);
        result.description = absl::StrCat("INTERCHANGE op ", op->tag, " (", op->name, ") permutation ",
                                          transforms::formatList(permutation));
        transformed = apply([&](llvm::StringRef p) { return transforms::interchangeFragment(op->tag, permutation, p); }, failure);
        result.applied = transformed;
        break;
      }
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
      transformed = !identity && apply([&](llvm::StringRef p) { return transforms::interchangeFragment(op->tag, permutation, p); }, failure);
      result.applied = identity || transformed;
      break;
    }
    case ActionType::Vectorization:
      transformed = apply([&](llvm::StringRef p) { return transforms::vectorizationFragmentFor(currentLinalgOps(), op->tag, p); }, failure);
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
  invalidate();

  if (absl::Status s = addEvaluationReward(result, transformed, context); !s.ok()) {
    restore(std::move(before));
    return s;
  }
  return result;
}

absl::Status Session::addEvaluationReward(StepResult &result, bool transformed, const StepContext &context) {
  bool evaluate = (config_.rewardMode == RewardMode::Immediate && transformed) ||
                  (config_.rewardMode == RewardMode::Final && done()) ||
                  // IMMEDIATE with nothing transformed in the whole episode: the final state is the reference
                  // (reward 0), but report it.
                  (config_.rewardMode == RewardMode::Immediate && done() && lastTimeNs_ == 0);
  if (!evaluate) return absl::OkStatus();
  absl::StatusOr<double> reward = evaluateState(result, context);
  if (!reward.ok()) return reward.status();
  result.reward += *reward;
  // FINAL pays the whole return on the step that ends the episode, also when max_steps ends it: nothing is left to
  // earn, so the episode is terminated (an agent must not bootstrap a value onto a complete return).
  if (config_.rewardMode == RewardMode::Final && truncated_) {
    truncated_ = false;
    terminated_ = true;
  }
  return absl::OkStatus();
}

absl::StatusOr<StepResult> Session::penalizeMaskedAction(const DecodedAction &a, std::string reason,
                                                         StepResult result, const StepContext &context) {
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
  invalidate();
  if (absl::Status s = addEvaluationReward(result, /*transformed=*/false, context); !s.ok()) return s;
  return result;
}

std::string Session::currentIR() const {
  std::string out;
  llvm::raw_string_ostream os(out);
  state_->module()->print(os);
  return out;
}

std::string Session::schedule() const { return transforms::buildScript(fragments_); }

}  // namespace mlir_rl::env
