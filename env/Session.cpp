#include "env/Session.h"

#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "llvm/Support/raw_ostream.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"

#include "env/Features.h"
#include "env/Masks.h"
#include "env/Observation.h"
#include "support/Diagnostics.h"

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

Session::Session(std::shared_ptr<const Benchmark> benchmark, SessionConfig config, uint64_t seed,
                 EvaluationService *evaluator)
    : benchmark_(std::move(benchmark)),
      config_(std::move(config)),
      space_(config_),
      seed_(seed),
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

transforms::OpView Session::view() const {
  transforms::OpView v;
  const ScheduledOp *op = currentOp();
  v.tag = op ? op->tag : -1;
  v.ops = currentLinalgOps();
  v.ranges = &derived_.ranges;
  v.maxLoops = config_.maxLoops;
  v.tileSizes = config_.tileSizes;
  v.maxVectorElements = config_.maxVectorElements;
  return v;
}

std::shared_ptr<const OpFacts> Session::computeFacts() const {
  auto f = std::make_shared<OpFacts>(config_.maxLoops, config_.maxAccesses);
  transforms::OpView v = view();
  if (!v.ops.empty()) f->fusion = transforms::planFusion(v.op());
  v.fusion = &f->fusion;
  OpenMask open = assembleMask(v, config_);
  f->open = std::move(open.mask);
  f->tiles = std::move(open.tiles);
  if (v.ops.empty()) return f;
  mlir::linalg::LinalgOp op = v.op();
  f->found = true;
  f->isReduction = v.isReduction();
  OpFeatures current(config_.maxLoops, config_.maxAccesses);
  extractOpFeatures(op, current, derived_.ranges);
  f->current = CompactFeatures(current);
  if (mlir::linalg::LinalgOp p = findProducer(op)) {
    OpFeatures producer(config_.maxLoops, config_.maxAccesses);
    extractOpFeatures(p, producer, derived_.ranges);
    OpFamily family = familyOfTag(benchmark_->schedule(), p).value_or(classifyOp(p));
    producer.opType[static_cast<int>(family)] = 1.f;
    producer.vectorizable[0] = static_cast<int>(p.getNumLoops()) <= config_.maxLoops &&
                               !transforms::vectorizationBlocker(p, config_.maxVectorElements, derived_.ranges);
    f->producer = CompactFeatures(producer);
  }
  return f;
}

ActionMask Session::computeMask() const {
  int L = config_.maxLoops, T = numActionTypes();
  if (!done() && pendingPermutation_.empty()) return facts()->open;
  ActionMask m = blankMask(config_);
  if (done()) {
    m.typeReasons.assign(T, "the episode is over");
    return m;
  }
  // An open interchange: only its next loop may be chosen, among the loops not placed yet.
  m.typeReasons.assign(T, "an interchange is open: choose its next loop");
  std::shared_ptr<const OpFacts> f = facts();
  if (!f->found) {
    for (int t = 1; t < T; ++t) m.typeReasons[t] = "the op under the cursor is gone";
    return m;
  }
  m.type[static_cast<int>(ActionType::Interchange)] = 1;
  m.typeReasons[static_cast<int>(ActionType::Interchange)].clear();
  m.tiles = f->tiles;
  m.numLoops = f->numLoops();
  for (int i = 0; i < std::min(f->numLoops(), L); ++i)
    m.interchange[i] =
        std::find(pendingPermutation_.begin(), pendingPermutation_.end(), i) == pendingPermutation_.end();
  return m;
}

std::vector<NamedTensor> Session::observe() const {
  int L = config_.maxLoops, T = numActionTypes();
  const ActionMask &m = mask();
  std::shared_ptr<const OpFacts> f = facts();
  OpFeatures current = f->current.expand();
  if (const ScheduledOp *sop = currentOp()) current.opType[static_cast<int>(sop->family)] = 1.f;
  current.vectorizable[0] = m.type[static_cast<int>(ActionType::Vectorization)];
  OpFeatures producer = f->producer.expand();
  ObservationSource source{current, producer, {}, {}, {}, m};
  source.progress = {static_cast<int64_t>(cursor_), static_cast<int64_t>(benchmark_->schedule().size()), steps_,
                     actionsOnOp_};
  source.history.assign(static_cast<size_t>(config_.actionsPerOp) * T, 0.f);
  for (size_t i = 0; i < historyOnOp_.size() && i < static_cast<size_t>(config_.actionsPerOp); ++i)
    source.history[i * T + historyOnOp_[i]] = 1.f;
  source.partial.assign(L, -1);
  for (size_t i = 0; i < pendingPermutation_.size() && i < static_cast<size_t>(L); ++i)
    source.partial[i] = pendingPermutation_[i];
  return observationTensors(config_, source);
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

bool Session::apply(const transforms::Fragment &fragment, std::string &failure) {
  // The transition is keyed by the fragment with a fixed prefix (value names do not change what it does); the
  // schedule keeps the step's own prefix so that fragments of one script never clash.
  const std::string &key = fragment.text;
  transforms::Fragment scheduled = transforms::renamePrefix(fragment, kFragmentPrefix, absl::StrCat("s", steps_));
  std::optional<Transition> known = transitions_->find(state_->id(), key);
  if (!known) {
    Transition t;
    mlir::OwningOpRef<mlir::ModuleOp> candidate(state_->module().clone());
    support::DiagnosticCapture capture;
    if (mlir::succeeded(transforms::applyFragments(*candidate, {fragment}))) {
      t.state = PayloadState::derived(std::move(candidate));
    } else {
      t.failure = capture.take();
      if (t.failure.empty()) t.failure = "transformation failed";
    }
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

transforms::ActionArgs Session::argsOf(const DecodedAction &a) const {
  transforms::ActionArgs args;
  size_t numLoops = static_cast<size_t>(facts()->numLoops());
  args.tileSizes.assign(a.tileSizes.begin(), a.tileSizes.begin() + std::min(numLoops, a.tileSizes.size()));
  args.unrollFactor = a.unrollFactor;
  args.nextLoop = a.pointer;
  if (config_.interchangeMode == InterchangeMode::Swaps) args.swap = transforms::swapLoops(a.pointer, config_.maxLoops);
  return args;
}

std::string Session::describe(const DecodedAction &a, const transforms::ActionArgs &args) const {
  const ScheduledOp *op = currentOp();
  std::string target = op ? absl::StrCat(" op ", op->tag, " (", op->name, ")") : "";
  const transforms::Transformation &t = *transforms::registry()[static_cast<int>(a.type)];
  transforms::OpView v = view();
  v.fusion = &facts()->fusion;
  return absl::StrCat(t.name().str(), target, t.describeArgs(v, args));
}

Session::Snapshot Session::snapshot() const {
  return Snapshot{state_,       cursor_,    fragments_.size(), actions_.size(),
                  actionsOnOp_, steps_,     historyOnOp_,      pendingPermutation_,
                  terminated_,  truncated_, lastTimeNs_};
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
    return absl::FailedPreconditionError(absl::StrCat("the episode is over (", terminated_ ? "terminated" : "truncated",
                                                      " after ", steps_, " steps): call Reset to start a new one"));
  absl::StatusOr<DecodedAction> decoded = space_.decode(values);
  if (!decoded.ok()) return decoded.status();
  const DecodedAction &a = *decoded;
  absl::Status legal = space_.checkMask(a, mask());
  if (!legal.ok() && !config_.penalizeMaskedActions) return legal;

  auto start = std::chrono::steady_clock::now();
  transforms::ActionArgs args = argsOf(a);
  StepResult result;
  result.action = values;
  result.description = describe(a, args);
  result.applied = true;
  Snapshot before = snapshot();
  if (!legal.ok()) {
    auto penalized = penalizeMaskedAction(a, std::string(legal.message()), std::move(result), context);
    if (!penalized.ok()) restore(std::move(before));
    return penalized;
  }
  std::shared_ptr<const OpFacts> facts = this->facts();
  int numLoops = facts->numLoops();
  const transforms::Transformation &t = *transforms::registry()[static_cast<int>(a.type)];
  // Episode rules: NO_TRANSFORMATION moves to the next op; an interchange by level pointers stays open (one loop
  // per step, not counted against the op's budget) until its permutation is complete.
  bool completedTransformation = a.type != ActionType::NoTransformation;  // counts against the op's budget
  bool attempt = completedTransformation;
  if (a.type == ActionType::Interchange) {
    if (config_.interchangeMode == InterchangeMode::Swaps) {
      args.permutation =
          transforms::swapPermutation(a.pointer, config_.maxLoops, numLoops).value_or(std::vector<int64_t>());
    } else {
      pendingPermutation_.push_back(a.pointer);
      if (static_cast<int>(pendingPermutation_.size()) + 1 < numLoops) {
        completedTransformation = attempt = false;  // the interchange stays open
      } else {
        args.permutation = pendingPermutation_;
        for (int i = 0; i < numLoops; ++i)
          if (std::find(args.permutation.begin(), args.permutation.end(), i) == args.permutation.end())
            args.permutation.push_back(i);
        pendingPermutation_.clear();
      }
    }
    if (!args.permutation.empty()) result.description = describe(a, args);
  }
  bool transformed = false;  // the module changed
  std::string failure;
  if (attempt) {
    transforms::OpView v = view();
    v.fusion = &facts->fusion;
    support::DiagnosticCapture capture;
    mlir::FailureOr<std::optional<transforms::Fragment>> plan = t.plan(v, args, kFragmentPrefix);
    if (mlir::failed(plan)) {
      failure = capture.take();
      result.applied = false;
    } else if (*plan) {
      transformed = apply(**plan, failure);
      result.applied = transformed;
    }  // else nothing to do (e.g. every tile size 0): applied
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
  // Cursor rules: NO_TRANSFORMATION and transformations that end the op (vectorization) once applied, and an
  // exhausted budget, move to the next op.
  if (a.type == ActionType::NoTransformation || (t.endsOp() && result.applied) || actionsOnOp_ >= config_.actionsPerOp)
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

absl::StatusOr<StepResult> Session::penalizeMaskedAction(const DecodedAction &a, std::string reason, StepResult result,
                                                         const StepContext &context) {
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
