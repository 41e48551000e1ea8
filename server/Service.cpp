#include "server/Service.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>

#include <google/protobuf/unknown_field_set.h>
#include <grpcpp/impl/codegen/method_handler.h>
#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/support/proto_buffer_reader.h>
#include <grpcpp/support/proto_buffer_writer.h>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "llvm/Config/llvm-config.h"
#include "llvm/Support/ConvertUTF.h"
#include "spdlog/spdlog.h"

#include "env/Generators.h"
#include "env/StateCache.h"
#include "mlir_rl/v1/env.grpc.pb.h"
#include "server/Convert.h"
#include "support/Affinity.h"
#include "support/Target.h"
#include "support/Version.h"

namespace mlir_rl::server {

namespace {

// Finds the session and locks it for the duration of the call; marks it used when the call is done.
struct LockedSession {
  std::shared_ptr<SessionSlot> slot;
  std::unique_lock<std::mutex> lock;
  LockedSession(std::shared_ptr<SessionSlot> s) : slot(std::move(s)), lock(slot->mutex) {}
  LockedSession(LockedSession &&) = default;
  ~LockedSession() {
    if (slot) slot->touch();
  }
  env::Session *operator->() const { return slot->session.get(); }
  env::Session &operator*() const { return *slot->session; }
};

absl::StatusOr<LockedSession> lockSession(const SessionRegistry &registry, const std::string &id) {
  if (id.empty()) return absl::InvalidArgumentError("session_id is empty");
  auto slot = registry.find(id);
  if (!slot.ok()) return slot.status();
  LockedSession locked(*slot);
  if (!locked.slot->session)
    return absl::NotFoundError(absl::StrCat("unknown session '", id, "' (never created, or closed)"));
  return locked;
}

// The first string field (path from the request, e.g. "steps.session_id") of `bytes` that is not valid UTF-8,
// reading them as a `descriptor` message field by field; empty when there is none (or the bytes are not protobuf).
std::string invalidUtf8Field(const std::string &bytes, const google::protobuf::Descriptor *descriptor,
                             const std::string &prefix = "") {
  google::protobuf::UnknownFieldSet fields;
  if (!fields.ParseFromString(bytes)) return "";
  for (int i = 0; i < fields.field_count(); ++i) {
    const google::protobuf::UnknownField &field = fields.field(i);
    if (field.type() != google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED) continue;
    const google::protobuf::FieldDescriptor *fd = descriptor->FindFieldByNumber(field.number());
    if (!fd) continue;
    const std::string &value = field.length_delimited();
    std::string path = prefix + fd->name();
    if (fd->type() == google::protobuf::FieldDescriptor::TYPE_STRING) {
      const auto *begin = reinterpret_cast<const llvm::UTF8 *>(value.data());
      if (!llvm::isLegalUTF8String(&begin, begin + value.size())) return path;
    } else if (fd->type() == google::protobuf::FieldDescriptor::TYPE_MESSAGE) {
      if (std::string inner = invalidUtf8Field(value, fd->message_type(), path + "."); !inner.empty()) return inner;
    }
  }
  return "";
}

// Parses a request; INVALID_ARGUMENT saying what is wrong with it otherwise.
template <class Request>
grpc::Status parseRequest(const grpc::ByteBuffer &bytes, Request &request) {
  grpc::ByteBuffer copy(bytes);  // shares the slices
  {
    grpc::ProtoBufferReader reader(&copy);
    if (reader.status().ok() && request.ParseFromZeroCopyStream(&reader)) return grpc::Status::OK;
  }
  std::vector<grpc::Slice> slices;
  std::string raw;
  if (bytes.Dump(&slices).ok())
    for (const grpc::Slice &s : slices) raw.append(reinterpret_cast<const char *>(s.begin()), s.size());
  const std::string &type = Request::descriptor()->full_name();
  if (std::string field = invalidUtf8Field(raw, Request::descriptor()); !field.empty())
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("field '", field, "' of the ", type,
                                     " is not valid UTF-8 (protobuf string "
                                     "fields must be; send bytes as text, e.g. MLIR in UTF-8)"));
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                      absl::StrCat("the request is not a valid ", type, " (", raw.size(),
                                   " bytes of malformed "
                                   "protobuf)"));
}

// A sync unary method whose request and reply cross as bytes: parsing is ours (parseRequest).
using RawHandler = grpc::internal::RpcMethodHandler<EnvService, grpc::ByteBuffer, grpc::ByteBuffer>;

}  // namespace

template <class Request, class Reply>
void EnvService::addMethod(const char *name, Handler<Request, Reply> handler, bool startsSomething) {
  size_t index = methodNames_.size();
  methodNames_.push_back(name);
  dispatch_.push_back([this, handler, index, startsSomething](grpc::ServerContext *context, const grpc::ByteBuffer &in,
                                                              grpc::ByteBuffer *out) {
    auto start = Clock::now();
    inFlight_.fetch_add(1);
    Call call{context, "", {}};
    grpc::Status status = admit(context, startsSomething, call);
    if (status.ok()) {
      Request request;
      status = parseRequest(in, request);
      if (status.ok()) {
        Reply reply;
        status = (this->*handler)(call, request, reply);
        bool own = false;
        if (status.ok()) status = grpc::GenericSerialize<grpc::ProtoBufferWriter, Reply>(reply, out, &own);
      }
    }
    calls_->record(index, static_cast<int>(status.error_code()),
                   std::chrono::duration<double>(Clock::now() - start).count());
    inFlight_.fetch_sub(1);
    return status;
  });
  static std::vector<std::unique_ptr<std::string>> paths;  // RpcMethod keeps a pointer to its path
  paths.push_back(std::make_unique<std::string>(absl::StrCat("/", v1::MlirRlEnv::service_full_name(), "/", name)));
  AddMethod(new grpc::internal::RpcServiceMethod(
      paths.back()->c_str(), grpc::internal::RpcMethod::NORMAL_RPC,
      new RawHandler([index](EnvService *self, grpc::ServerContext *context, const grpc::ByteBuffer *in,
                             grpc::ByteBuffer *out) { return self->dispatch_[index](context, *in, out); },
                     this)));
}

grpc::Status EnvService::callForTesting(const std::string &name, const std::string &request, std::string &reply) {
  auto it = std::find(methodNames_.begin(), methodNames_.end(), name);
  if (it == methodNames_.end()) return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, name);
  grpc::Slice slice(request);
  grpc::ByteBuffer in(&slice, 1), out;
  grpc::ServerContext context;
  grpc::Status status = dispatch_[static_cast<size_t>(it - methodNames_.begin())](&context, in, &out);
  reply.clear();
  std::vector<grpc::Slice> slices;
  if (status.ok() && out.Dump(&slices).ok())
    for (const grpc::Slice &s : slices) reply.append(reinterpret_cast<const char *>(s.begin()), s.size());
  return status;
}

grpc::Status EnvService::admit(grpc::ServerContext *context, bool startsSomething, Call &call) const {
  absl::StatusOr<std::string> client = auth_.identify(*context);
  if (!client.ok()) return toGrpc(client.status());
  call.client = std::move(*client);
  if (startsSomething && draining_)
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "the server is shutting down (draining): start new sessions on another server");
  if (context->deadline() != std::chrono::system_clock::time_point::max()) {
    auto left = context->deadline() - std::chrono::system_clock::now();
    call.step.deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(left);
  }
  return grpc::Status::OK;
}

EnvService::EnvService(env::BenchmarkRegistry *benchmarks, env::EvaluationService *evaluator, ServiceLimits limits,
                       Authenticator auth, const runners::WorkerPool *pool)
    : benchmarks_(benchmarks),
      evaluator_(evaluator),
      limits_(limits),
      auth_(std::move(auth)),
      pool_(pool),
      sessions_(limits.sessions) {
  addMethod("GetVersion", &EnvService::GetVersion, false);
  addMethod("GetSpaces", &EnvService::GetSpaces, false);
  addMethod("ListBenchmarks", &EnvService::ListBenchmarks, false);
  addMethod("Reset", &EnvService::Reset, true);
  addMethod("Step", &EnvService::Step, false);
  addMethod("StepMany", &EnvService::StepMany, false);
  addMethod("Observe", &EnvService::Observe, false);
  addMethod("Fork", &EnvService::Fork, true);
  addMethod("EndSession", &EnvService::EndSession, false);
  addMethod("Close", &EnvService::EndSession, false);
  addMethod("ExportSchedule", &EnvService::ExportSchedule, false);
  addMethod("AddBenchmark", &EnvService::AddBenchmark, true);
  addMethod("GetMetrics", &EnvService::GetMetrics, false);
  calls_ = std::make_unique<CallMetrics>(methodNames_);
  // StepMany's helpers: one per CPU this process may use (--rpc_cpus narrows it) beside the calling RPC thread.
  int usable = static_cast<int>(support::allowedCpus().size());
  if (usable > 1) batchPool_ = std::make_unique<llvm::StdThreadPool>(llvm::hardware_concurrency(usable - 1));
  housekeeper_ = std::thread([this] { housekeeping(); });
}

EnvService::~EnvService() {
  {
    std::lock_guard<std::mutex> lock(housekeepingMutex_);
    stopping_ = true;
  }
  housekeepingCv_.notify_all();
  housekeeper_.join();
}

void EnvService::startDraining() { draining_ = true; }

void EnvService::housekeeping() {
  auto nextLog = Clock::now() + limits_.logInterval;
  std::unique_lock<std::mutex> lock(housekeepingMutex_);
  while (!housekeepingCv_.wait_for(lock, limits_.housekeepingInterval, [&] { return stopping_; })) {
    lock.unlock();
    if (size_t n = sessions_.expireIdle(); n > 0) spdlog::info("{} idle session(s) expired", n);
    if (limits_.uploadIdleTimeout > Clock::duration::zero())
      if (size_t n = benchmarks_->expireUploads(limits_.uploadIdleTimeout); n > 0)
        spdlog::info("{} unused upload(s) expired", n);
    if (limits_.logInterval > Clock::duration::zero() && Clock::now() >= nextLog) {
      spdlog::info("{}", summary());
      nextLog = Clock::now() + limits_.logInterval;
    }
    lock.lock();
  }
}

std::string EnvService::summary() const {
  RegistryStats r = sessions_.stats();
  env::EvaluationStats e = evaluator_->stats();
  std::string workers;
  if (pool_) {
    runners::WorkerPoolStats w = pool_->stats();
    workers = absl::StrFormat(", workers %d/%d busy (crashes %d, time-outs %d, out of memory %d, external %d)", w.busy,
                              w.live, w.crashes, w.timeouts, w.outOfMemory, w.external);
  }
  return absl::StrFormat(
      "%d sessions (%d clients; %d started, %d expired, %d evicted), %d uploads, %d episodes and %d steps so far, "
      "%d evaluations (%d from the cache, %d failed: %d compile, %d crash, %d time-out, %d wrong), RSS %.0f MiB%s",
      r.sessions, r.clients, r.created, r.expired, r.evicted, benchmarks_->numUploads(), episodesStarted_.load(),
      stepsTaken_.load(), e.evaluations, e.cacheHits,
      e.compileFailures + e.crashes + e.outOfMemory + e.timeouts + e.wrongResults, e.compileFailures, e.crashes,
      e.timeouts, e.wrongResults, residentBytes() / (1 << 20), workers);
}

MetricsText EnvService::metrics() const {
  MetricsText m;
  RegistryStats r = sessions_.stats();
  m.gauge("mlir_rl_sessions", "sessions open", static_cast<double>(r.sessions));
  m.gauge("mlir_rl_session_clients", "clients holding sessions", static_cast<double>(r.clients));
  m.counter("mlir_rl_sessions_started_total", "sessions created (Reset, Fork)", static_cast<double>(r.created));
  m.counter("mlir_rl_sessions_ended_total", "sessions ended, by reason", static_cast<double>(r.closed),
            "reason=\"closed\"");
  m.counter("mlir_rl_sessions_ended_total", "sessions ended, by reason", static_cast<double>(r.expired),
            "reason=\"expired\"");
  m.counter("mlir_rl_sessions_ended_total", "sessions ended, by reason", static_cast<double>(r.evicted),
            "reason=\"evicted\"");
  m.counter("mlir_rl_sessions_refused_total", "sessions refused, by reason", static_cast<double>(r.refusedFull),
            "reason=\"server_full\"");
  m.counter("mlir_rl_sessions_refused_total", "sessions refused, by reason", static_cast<double>(r.refusedQuota),
            "reason=\"client_quota\"");
  m.gauge("mlir_rl_uploads", "uploaded benchmarks held", static_cast<double>(benchmarks_->numUploads()));
  m.counter("mlir_rl_steps_total", "actions applied", static_cast<double>(stepsTaken_.load()));
  m.gauge("mlir_rl_draining", "1 while the server drains for shutdown", draining_ ? 1 : 0);
  m.gauge("mlir_rl_calls_in_flight", "RPCs being served", inFlight_.load());
  env::EvaluationStats e = evaluator_->stats();
  m.counter("mlir_rl_evaluations_total", "evaluations asked for (cache hits included)",
            static_cast<double>(e.evaluations));
  m.counter("mlir_rl_evaluation_cache_hits_total", "evaluations served from the cache",
            static_cast<double>(e.cacheHits));
  m.gauge("mlir_rl_evaluation_cache_entries", "candidates in the evaluation cache",
          static_cast<double>(e.cacheEntries));
  m.gauge("mlir_rl_reference_entries", "reference times known", static_cast<double>(e.references));
  for (auto [kind, n] : {std::pair<const char *, int64_t>{"compile_error", e.compileFailures},
                         {"crashed", e.crashes},
                         {"timed_out", e.timeouts},
                         {"out_of_memory", e.outOfMemory},
                         {"wrong_result", e.wrongResults}})
    m.counter("mlir_rl_evaluation_failures_total", "candidates without a time, by failure kind", static_cast<double>(n),
              absl::StrCat("kind=\"", kind, "\""));
  m.counter("mlir_rl_evaluation_retries_total",
            "evaluations retried on a fresh worker (a worker killed or stopped "
            "from outside)",
            static_cast<double>(e.retries));
  m.counter("mlir_rl_evaluations_not_done_total",
            "evaluations that could not take place (shutdown, deadline, "
            "broken reference); their steps were undone",
            static_cast<double>(e.notEvaluated));
  m.counter("mlir_rl_broken_references_total", "benchmarks whose untransformed reference failed",
            static_cast<double>(e.brokenReferences));
  env::TransitionCache::Stats t = env::TransitionCache::shared().stats();
  m.gauge("mlir_rl_transition_cache_entries", "transitions between states remembered", static_cast<double>(t.entries));
  m.gauge("mlir_rl_transition_cache_bytes", "estimated bytes of IR the transition cache holds",
          static_cast<double>(t.bytes));
  m.counter("mlir_rl_transition_cache_hits_total", "steps served by the transition cache", static_cast<double>(t.hits));
  m.counter("mlir_rl_transition_cache_misses_total", "steps that transformed", static_cast<double>(t.misses));
  if (pool_) {
    runners::WorkerPoolStats w = pool_->stats();
    m.gauge("mlir_rl_workers", "evaluation workers, by state", w.busy, "state=\"busy\"");
    m.gauge("mlir_rl_workers", "evaluation workers, by state", w.live - w.busy, "state=\"idle\"");
    m.counter("mlir_rl_worker_spawns_total", "evaluation workers started", static_cast<double>(w.spawns));
    for (auto [why, n] : {std::pair<const char *, int64_t>{"crash", w.crashes},
                          {"timeout", w.timeouts},
                          {"out_of_memory", w.outOfMemory},
                          {"external", w.external}})
      m.counter("mlir_rl_worker_deaths_total", "evaluation workers lost, by cause", static_cast<double>(n),
                absl::StrCat("cause=\"", why, "\""));
  }
  m.gauge("mlir_rl_resident_bytes", "resident memory of the server process", residentBytes());
  calls_->write(m);
  return m;
}

grpc::Status EnvService::GetVersion(Call &, const v1::GetVersionRequest &, v1::GetVersionReply &reply) {
  reply.set_server_version(support::mlirRlVersion());
  reply.set_protocol_version(support::kProtocolVersion);
  reply.set_mlir_version(LLVM_VERSION_STRING);
  reply.set_host_cpu(support::hostCpuName());
  return grpc::Status::OK;
}

grpc::Status EnvService::GetSpaces(Call &, const v1::GetSpacesRequest &request, v1::GetSpacesReply &reply) {
  auto config = toConfig(request.options());
  if (!config.ok()) return toGrpc(config.status());
  fillSpaces(*config, reply);
  return grpc::Status::OK;
}

grpc::Status EnvService::ListBenchmarks(Call &, const v1::ListBenchmarksRequest &request,
                                        v1::ListBenchmarksReply &reply) {
  for (const std::string &family : env::generatorFamilies()) reply.add_generator_families(family);
  if (request.families_only()) return grpc::Status::OK;
  std::string split = request.split();
  if (!split.empty() && split != "train" && split != "eval" && split != "user")
    return toGrpc(absl::InvalidArgumentError(absl::StrCat("split '", split, "' is unknown (train, eval or user)")));
  if (request.split_filter() != v1::SPLIT_UNSPECIFIED) {
    std::string named = request.split_filter() == v1::SPLIT_TRAIN  ? "train"
                        : request.split_filter() == v1::SPLIT_EVAL ? "eval"
                        : request.split_filter() == v1::SPLIT_USER ? "user"
                                                                   : "";
    if (named.empty())
      return toGrpc(absl::InvalidArgumentError(
          absl::StrCat("split_filter = ", static_cast<int>(request.split_filter()), " is unknown")));
    if (!split.empty() && split != named)
      return toGrpc(absl::InvalidArgumentError(
          absl::StrCat("split '", split, "' and split_filter '", named, "' disagree: give one")));
    split = named;
  }
  for (const env::BenchmarkInfo &info : benchmarks_->list(request.dataset(), split)) {
    v1::BenchmarkInfo *out = reply.add_benchmarks();
    fillBenchmarkInfo(info, *out);
    auto benchmark = benchmarks_->get(info.uri);
    runners::Timing reference;
    if (benchmark.ok() && evaluator_->knownReference(**benchmark, 0, 1, reference))
      out->set_reference_ns(reference.medianNs);
  }
  return grpc::Status::OK;
}

grpc::Status EnvService::Reset(Call &call, const v1::ResetRequest &request, v1::ResetReply &reply) {
  if (request.benchmark().empty() && request.mlir().empty())
    return toGrpc(
        absl::InvalidArgumentError("benchmark is empty: give a URI such as benchmark://nn-ops/matmul_64x64x64_f32 "
                                   "(ListBenchmarks shows them), or the module itself in `mlir`"));
  if (!request.benchmark().empty() && !request.mlir().empty())
    return toGrpc(absl::InvalidArgumentError("give either benchmark (a URI) or mlir (a module), not both"));
  if (request.replay_actions_size() > limits_.maxActionsPerStep)
    return toGrpc(absl::InvalidArgumentError(absl::StrCat("replay_actions holds ", request.replay_actions_size(),
                                                          " actions, more than the limit of ",
                                                          limits_.maxActionsPerStep, " (--max_actions_per_step)")));
  auto config = toConfig(request.options());
  if (!config.ok()) return toGrpc(config.status());
  auto benchmark = request.mlir().empty() ? benchmarks_->get(request.benchmark())
                                          : benchmarks_->addUpload(request.mlir(), "", call.client);
  if (!benchmark.ok()) return toGrpc(benchmark.status());
  const std::string &uri = (*benchmark)->info().uri;
  uint64_t seed = request.has_seed() ? request.seed() : 0;
  auto session = env::Session::create(*benchmark, *config, seed, evaluator_);
  if (!session.ok()) return toGrpc(session.status());
  for (int i = 0; i < request.replay_actions_size(); ++i) {
    auto result = (*session)->step(toValues(request.replay_actions(i)), call.step);
    if (!result.ok())
      return toGrpc(
          absl::Status(result.status().code(), absl::StrCat("replay_actions[", i, "]: ", result.status().message())));
  }
  stepsTaken_ += request.replay_actions_size();
  ObservationLog log;
  if (absl::Status s = fillObservation(**session, request.observation(), log, *reply.mutable_observation()); !s.ok())
    return toGrpc(s);
  env::EpisodeStatus status = (*session)->status();
  fillEpisodeInfo(status, *reply.mutable_info());
  reply.set_terminated(status.terminated);
  reply.set_truncated(status.truncated);
  runners::Timing reference;
  if (evaluator_->knownReference(**benchmark, seed, config->numThreads, reference)) {
    env::EvaluationRecord record;
    record.ok = record.correct = true;
    record.timing = reference;
    record.referenceNs = reference.medianNs;
    record.speedup = 1.0;
    record.cached = true;
    fillEvaluation(record, *reply.mutable_reference());
  }
  if (!request.close_session_id().empty()) {
    // Unknown or already closed is fine: the client only says it is done with it.
    absl::Status closed = sessions_.remove(request.close_session_id());
    if (!closed.ok() && !absl::IsNotFound(closed)) return toGrpc(closed);
  }
  auto id = sessions_.add(std::move(*session), call.client, std::move(log));
  if (!id.ok()) return toGrpc(id.status());
  reply.set_session_id(*id);
  reply.set_benchmark(uri);
  ++episodesStarted_;
  spdlog::debug("reset: session {} on {} for {} (seed {}, {} replayed actions)", *id, uri, call.client, seed,
                request.replay_actions_size());
  return grpc::Status::OK;
}

grpc::Status EnvService::Step(Call &call, const v1::StepRequest &request, v1::StepReply &reply) {
  return stepOne(call, request, reply);
}

grpc::Status EnvService::StepMany(Call &call, const v1::StepManyRequest &request, v1::StepManyReply &reply) {
  const int n = request.steps_size();
  if (n == 0) return toGrpc(absl::InvalidArgumentError("steps is empty: send at least one StepRequest"));
  if (static_cast<size_t>(n) > limits_.sessions.maxSessions)
    return toGrpc(absl::InvalidArgumentError(absl::StrCat("steps holds ", n, " entries, more than the server's ",
                                                          limits_.sessions.maxSessions, " sessions")));
  // Entries run concurrently, so one session in two entries would make their order undefined.
  absl::flat_hash_map<std::string, int> firstEntry;
  for (int i = 0; i < n; ++i) {
    auto [it, inserted] = firstEntry.emplace(request.steps(i).session_id(), i);
    if (!inserted)
      return toGrpc(
          absl::InvalidArgumentError(absl::StrCat("session '", request.steps(i).session_id(), "' appears in steps[",
                                                  it->second, "] and steps[", i, "]: one entry per session")));
  }
  for (int i = 0; i < n; ++i) reply.add_results();
  auto run = [this, &call, &request, &reply](int i) {
    v1::StepManyResult *result = reply.mutable_results(i);
    grpc::Status status = stepOne(call, request.steps(i), *result->mutable_reply());
    if (!status.ok()) {
      result->clear_reply();
      result->set_code(static_cast<int>(status.error_code()));
      result->set_message(status.error_message());
    }
  };
  if (n == 1 || !batchPool_) {
    for (int i = 0; i < n; ++i) run(i);
    return grpc::Status::OK;
  }
  // The calling thread takes entries too and waits only for entries a helper has started: a helper busy with
  // another call's evaluation never holds this one up (its queued task finds nothing left and returns). The shared
  // state outlives this call for such late tasks, which never touch the request or the reply.
  struct Batch {
    std::function<void(int)> run;
    int n = 0;
    std::atomic<int> next{0}, done{0};
    std::mutex mutex;
    std::condition_variable finished;
  };
  auto batch = std::make_shared<Batch>();
  batch->run = run;
  batch->n = n;
  auto drain = [batch] {
    for (int i = batch->next.fetch_add(1); i < batch->n; i = batch->next.fetch_add(1)) {
      batch->run(i);
      if (batch->done.fetch_add(1) + 1 == batch->n) {
        std::lock_guard<std::mutex> lock(batch->mutex);
        batch->finished.notify_all();
      }
    }
  };
  for (int t = 1; t < std::min<int>(n, batchPool_->getMaxConcurrency() + 1); ++t) batchPool_->async(drain);
  drain();
  std::unique_lock<std::mutex> lock(batch->mutex);
  batch->finished.wait(lock, [&] { return batch->done.load() == batch->n; });
  return grpc::Status::OK;
}

grpc::Status EnvService::stepOne(const Call &call, const v1::StepRequest &request, v1::StepReply &reply) {
  if (request.actions_size() == 0) return toGrpc(absl::InvalidArgumentError("actions is empty: send at least one"));
  if (request.actions_size() > limits_.maxActionsPerStep)
    return toGrpc(absl::InvalidArgumentError(absl::StrCat("actions holds ", request.actions_size(),
                                                          " actions, more than the limit of ",
                                                          limits_.maxActionsPerStep, " (--max_actions_per_step)")));
  auto session = lockSession(sessions_, request.session_id());
  if (!session.ok()) return toGrpc(session.status());
  env::Session &s = **session;
  double total = 0;
  for (int i = 0; i < request.actions_size(); ++i) {
    if (i > 0 && s.done()) break;  // the episode ended inside this batch: the rest is not applied
    auto result = s.step(toValues(request.actions(i)), call.step);
    if (!result.ok()) {
      // Earlier actions of the batch stay applied; say which one failed.
      std::string where = request.actions_size() > 1 ? absl::StrCat("actions[", i, "]: ") : "";
      return toGrpc(absl::Status(result.status().code(), absl::StrCat(where, result.status().message())));
    }
    ++stepsTaken_;
    total += result->reward;
    fillOutcome(*result, *reply.add_outcomes());
  }
  reply.set_reward(total);
  env::EpisodeStatus status = s.status();
  reply.set_terminated(status.terminated);
  reply.set_truncated(status.truncated);
  fillEpisodeInfo(status, *reply.mutable_info());
  return toGrpc(fillObservation(s, request.observation(), session->slot->log, *reply.mutable_observation()));
}

grpc::Status EnvService::Observe(Call &, const v1::ObserveRequest &request, v1::ObserveReply &reply) {
  auto session = lockSession(sessions_, request.session_id());
  if (!session.ok()) return toGrpc(session.status());
  env::EpisodeStatus status = (*session)->status();
  reply.set_terminated(status.terminated);
  reply.set_truncated(status.truncated);
  fillEpisodeInfo(status, *reply.mutable_info());
  return toGrpc(fillObservation(**session, request.observation(), session->slot->log, *reply.mutable_observation()));
}

grpc::Status EnvService::Fork(Call &call, const v1::ForkRequest &request, v1::ForkReply &reply) {
  std::unique_ptr<env::Session> copy;
  {
    auto session = lockSession(sessions_, request.session_id());
    if (!session.ok()) return toGrpc(session.status());
    copy = (*session)->fork();
  }
  auto id = sessions_.add(std::move(copy), call.client);
  if (!id.ok()) return toGrpc(id.status());
  reply.set_session_id(*id);
  return grpc::Status::OK;
}

grpc::Status EnvService::EndSession(Call &, const v1::CloseRequest &request, v1::CloseReply &) {
  if (request.session_id().empty()) return toGrpc(absl::InvalidArgumentError("session_id is empty"));
  return toGrpc(sessions_.remove(request.session_id()));
}

grpc::Status EnvService::ExportSchedule(Call &, const v1::ExportScheduleRequest &request,
                                        v1::ExportScheduleReply &reply) {
  auto session = lockSession(sessions_, request.session_id());
  if (!session.ok()) return toGrpc(session.status());
  const env::Session &s = **session;
  reply.set_transform_script(s.schedule());
  reply.set_benchmark_ir(s.benchmark().taggedText());
  reply.set_current_ir(s.currentIR());
  reply.set_benchmark(s.benchmark().info().uri);
  for (const auto &action : s.actions()) {
    v1::Action *a = reply.add_actions();
    for (int64_t v : action) a->add_values(v);
  }
  return grpc::Status::OK;
}

grpc::Status EnvService::AddBenchmark(Call &call, const v1::AddBenchmarkRequest &request,
                                      v1::AddBenchmarkReply &reply) {
  auto benchmark = benchmarks_->addUpload(request.mlir(), request.description(), call.client);
  if (!benchmark.ok()) return toGrpc(benchmark.status());
  fillBenchmarkInfo((*benchmark)->info(), *reply.mutable_benchmark());
  spdlog::debug("upload: {} ({} ops) from {}", (*benchmark)->info().uri, (*benchmark)->info().numOps, call.client);
  return grpc::Status::OK;
}

grpc::Status EnvService::GetMetrics(Call &, const v1::GetMetricsRequest &, v1::GetMetricsReply &reply) {
  MetricsText m = metrics();
  reply.set_prometheus_text(m.str());
  for (const auto &[name, value] : m.samples()) (*reply.mutable_values())[name] = value;
  return grpc::Status::OK;
}

}  // namespace mlir_rl::server
