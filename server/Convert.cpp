#include "server/Convert.h"

#include <atomic>
#include <random>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"

namespace mlir_rl::server {

namespace {

v1::DType toProto(env::DType d) {
  switch (d) {
    case env::DType::Float32: return v1::DTYPE_FLOAT32;
    case env::DType::Float64: return v1::DTYPE_FLOAT64;
    case env::DType::Int64: return v1::DTYPE_INT64;
    case env::DType::Int32: return v1::DTYPE_INT32;
    case env::DType::Bool: return v1::DTYPE_BOOL;
  }
  return v1::DTYPE_UNSPECIFIED;
}

v1::FailureKind toProto(runners::FailureKind k) {
  switch (k) {
    case runners::FailureKind::None: return v1::FAILURE_KIND_NONE;
    case runners::FailureKind::Compile: return v1::FAILURE_KIND_COMPILE_ERROR;
    case runners::FailureKind::Crash: return v1::FAILURE_KIND_CRASHED;
    case runners::FailureKind::Timeout: return v1::FAILURE_KIND_TIMED_OUT;
    case runners::FailureKind::OutOfMemory: return v1::FAILURE_KIND_OUT_OF_MEMORY;
    case runners::FailureKind::WrongResult: return v1::FAILURE_KIND_WRONG_RESULT;
    case runners::FailureKind::Internal: break;  // never a candidate's evaluation (EvaluationRecord::error)
  }
  return v1::FAILURE_KIND_NONE;
}

// Observation ids are unique in the server process and start at a random point, so that an id a client kept from
// another session, or from before a server restart, never matches by accident.
uint64_t nextObservationId() {
  static std::atomic<uint64_t> next{[] {
    std::random_device device;
    // Below 2^52, so ids stay exact in a double (JavaScript clients read int64 as Number) for 2^52 observations.
    return ((static_cast<uint64_t>(device()) << 32) | device()) >> 12 | 1;
  }()};
  return next.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace

grpc::Status toGrpc(const absl::Status &status) {
  if (status.ok()) return grpc::Status::OK;
  // absl and gRPC share the canonical code numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::StatusOr<env::SessionConfig> toConfig(const v1::SessionOptions &o) {
  env::SessionConfig c;
  if (o.has_max_loops()) c.maxLoops = o.max_loops();
  if (o.has_actions_per_op()) c.actionsPerOp = o.actions_per_op();
  if (o.has_max_steps()) c.maxSteps = o.max_steps();
  switch (o.reward_mode()) {
    case v1::REWARD_MODE_UNSPECIFIED:
    case v1::REWARD_MODE_FINAL: c.rewardMode = env::RewardMode::Final; break;
    case v1::REWARD_MODE_IMMEDIATE: c.rewardMode = env::RewardMode::Immediate; break;
    default: return absl::InvalidArgumentError(absl::StrCat("options.reward_mode = ", o.reward_mode(), " is unknown"));
  }
  if (o.has_transform_penalty()) c.transformPenalty = o.transform_penalty();
  if (o.has_execution_penalty()) c.executionPenalty = o.execution_penalty();
  if (o.tile_sizes_size() > 0) c.tileSizes.assign(o.tile_sizes().begin(), o.tile_sizes().end());
  if (o.has_num_threads()) c.numThreads = o.num_threads();
  if (o.has_max_vector_elements()) c.maxVectorElements = o.max_vector_elements();
  switch (o.masked_actions()) {
    case v1::MASKED_ACTIONS_UNSPECIFIED:
    case v1::MASKED_ACTIONS_REJECT: c.penalizeMaskedActions = false; break;
    case v1::MASKED_ACTIONS_PENALIZE: c.penalizeMaskedActions = true; break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("options.masked_actions = ", o.masked_actions(), " is unknown"));
  }
  if (o.has_max_accesses()) c.maxAccesses = o.max_accesses();
  switch (o.interchange_mode()) {
    case v1::INTERCHANGE_MODE_UNSPECIFIED:
    case v1::INTERCHANGE_MODE_LEVEL_POINTERS: c.interchangeMode = env::InterchangeMode::LevelPointers; break;
    case v1::INTERCHANGE_MODE_SWAPS: c.interchangeMode = env::InterchangeMode::Swaps; break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("options.interchange_mode = ", o.interchange_mode(), " is unknown"));
  }
  switch (o.evaluation_cache()) {
    case v1::EVALUATION_CACHE_UNSPECIFIED:
    case v1::EVALUATION_CACHE_USE: c.cacheMode = env::CacheMode::Use; break;
    case v1::EVALUATION_CACHE_REFRESH: c.cacheMode = env::CacheMode::Refresh; break;
    case v1::EVALUATION_CACHE_BYPASS: c.cacheMode = env::CacheMode::Bypass; break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("options.evaluation_cache = ", o.evaluation_cache(), " is unknown"));
  }
  if (absl::Status s = c.validate(); !s.ok()) return s;
  return c;
}

void fillSpaces(const env::SessionConfig &config, v1::GetSpacesReply &reply) {
  env::ActionSpace space(config);
  v1::Space *action = reply.mutable_action_space();
  action->set_name("action");
  action->set_description(
      config.interchangeMode == env::InterchangeMode::Swaps
          ? "multi-discrete: [type, tile_0..tile_{L-1}, interchange]; tile value 0 = no tiling, k = tile_sizes[k]; "
            "UNROLL's factor is head tile_{L-1} (0 = smallest legal); interchange = one of the 3L-6 swaps of two "
            "loops 1-3 apart"
          : "multi-discrete: [type, tile_0..tile_{L-1}, interchange]; tile value 0 = no tiling, k = tile_sizes[k]; "
            "UNROLL's factor is head tile_{L-1} (0 = smallest legal); interchange = level pointer (the loop placed "
            "next)");
  v1::MultiDiscreteSpace *md = action->mutable_multi_discrete();
  for (int64_t n : space.nvec()) md->add_nvec(n);
  for (const std::string &h : space.headNames()) md->add_head_names(h);
  for (const std::string &t : space.typeNames()) md->add_type_names(t);
  md->add_tile_sizes(0);
  for (int64_t s : config.tileSizes) md->add_tile_sizes(s);
  for (const env::HeadMaskInfo &info : space.headMasks()) {
    v1::HeadMask *m = md->add_head_masks();
    m->set_head(info.head);
    m->set_tensor(info.tensor);
    m->set_row(info.row);
    for (int t : info.types) m->add_types(t);
  }
  for (const env::BoxSpec &box : env::observationSpace(config)) {
    v1::Space *s = reply.add_observation_space();
    s->set_name(box.name);
    s->set_description(box.description);
    v1::BoxSpace *b = s->mutable_box();
    for (int64_t d : box.shape) b->add_shape(d);
    b->set_dtype(toProto(box.dtype));
    b->set_low(box.low);
    b->set_high(box.high);
  }
}

void fillBenchmarkInfo(const env::BenchmarkInfo &info, v1::BenchmarkInfo &out) {
  out.set_uri(info.uri);
  out.set_dataset(info.dataset);
  out.set_name(info.name);
  out.set_description(info.description);
  out.set_num_ops(info.numOps);
  for (const std::string &f : info.opFamilies) out.add_op_families(f);
  out.set_dtype(info.dtype);
  out.set_flops(info.flops);
  out.set_bytes(info.bytes);
  out.set_arithmetic_intensity(info.bytes > 0 ? static_cast<double>(info.flops) / static_cast<double>(info.bytes) : 0);
  out.set_split(info.split);
}

void fillEvaluation(const env::EvaluationRecord &r, v1::Evaluation &out) {
  out.set_median_ns(r.timing.medianNs);
  out.set_min_ns(r.timing.minNs);
  out.set_spread(r.timing.spread);
  out.set_repetitions(r.timing.repetitions);
  out.set_raced(r.timing.raced);
  out.set_reference_ns(r.referenceNs);
  out.set_speedup(r.speedup);
  out.set_correct(r.correct);
  out.set_max_abs_error(r.maxAbsError);
  out.set_lower_ms(r.lowerMs);
  out.set_jit_ms(r.jitMs);
  out.set_cached(r.cached);
  out.set_failure(r.failure);
  out.set_failure_kind(toProto(r.failureKind));
}

void fillOutcome(const env::StepResult &r, v1::StepOutcome &out) {
  for (int64_t v : r.action) out.mutable_action()->add_values(v);
  out.set_description(r.description);
  out.set_applied(r.applied);
  out.set_failure_reason(r.failureReason);
  out.set_reward(r.reward);
  out.set_apply_ms(r.applyMs);
  if (r.evaluation) {
    fillEvaluation(*r.evaluation, *out.mutable_evaluation());
  }
}

void fillEpisodeInfo(const env::EpisodeStatus &s, v1::EpisodeInfo &out) {
  out.set_op_index(s.opIndex);
  out.set_num_ops(s.numOps);
  out.set_step(s.step);
  out.set_current_op(s.currentOp);
  out.set_interchange_pending(s.interchangePending);
}

absl::Status fillObservation(const env::Session &session, const v1::ObservationRequest &request, ObservationLog &log,
                             v1::Observation &out) {
  std::vector<env::NamedTensor> tensors = session.observe();
  for (const std::string &name : request.names()) {
    bool known = std::any_of(tensors.begin(), tensors.end(), [&](const env::NamedTensor &t) { return t.name == name; });
    if (!known) return absl::InvalidArgumentError(absl::StrCat("observation.names: unknown tensor '", name, "'"));
  }
  bool delta = request.since() != 0 && request.since() == log.lastId && request.names_size() == 0 &&
               log.tensorHashes.size() == tensors.size();
  std::vector<uint64_t> hashes(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    env::NamedTensor &t = tensors[i];
    hashes[i] = absl::HashOf(t.name, t.bytes);
    if (delta && hashes[i] == log.tensorHashes[i]) continue;
    if (request.names_size() > 0 &&
        std::find(request.names().begin(), request.names().end(), t.name) == request.names().end())
      continue;
    v1::Tensor *p = out.add_tensors();
    p->set_name(t.name);
    p->set_dtype(toProto(t.dtype));
    for (int64_t d : t.shape) p->add_shape(d);
    p->set_data(std::move(t.bytes));
  }
  // A subset (names) is not a full observation: later deltas are relative to full ones only.
  log.lastId = nextObservationId();
  out.set_id(log.lastId);
  out.set_delta(delta);
  if (request.names_size() == 0)
    log.tensorHashes = std::move(hashes);
  else
    log.tensorHashes.clear();
  if (request.include_ir()) out.set_ir(session.currentIR());
  if (request.include_schedule()) out.set_schedule(session.schedule());
  return absl::OkStatus();
}

std::vector<int64_t> toValues(const v1::Action &action) {
  return std::vector<int64_t>(action.values().begin(), action.values().end());
}

}  // namespace mlir_rl::server
