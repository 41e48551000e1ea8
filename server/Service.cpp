#include "server/Service.h"

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "llvm/Config/llvm-config.h"
#include "spdlog/spdlog.h"

#include "env/Generators.h"
#include "server/Convert.h"
#include "support/Affinity.h"
#include "support/Target.h"
#include "support/Version.h"

namespace mlir_rl::server {

namespace {

// Finds the session and locks it for the duration of the call.
struct LockedSession {
  std::shared_ptr<SessionSlot> slot;
  std::unique_lock<std::mutex> lock;
  env::Session *operator->() const { return slot->session.get(); }
  env::Session &operator*() const { return *slot->session; }
};

absl::StatusOr<LockedSession> lockSession(const SessionRegistry &registry, const std::string &id) {
  if (id.empty()) return absl::InvalidArgumentError("session_id is empty");
  auto slot = registry.find(id);
  if (!slot.ok()) return slot.status();
  LockedSession locked{*slot, std::unique_lock<std::mutex>((*slot)->mutex)};
  if (!locked.slot->session)
    return absl::NotFoundError(absl::StrCat("unknown session '", id, "' (never created, or closed)"));
  return locked;
}

}  // namespace

EnvService::EnvService(env::BenchmarkRegistry *benchmarks, env::EvaluationService *evaluator, ServiceLimits limits)
    : benchmarks_(benchmarks), evaluator_(evaluator), limits_(limits), sessions_(limits.maxSessions) {
  // StepMany's helpers: one per CPU this process may use (--rpc_cpus narrows it) beside the calling RPC thread.
  int usable = static_cast<int>(support::allowedCpus().size());
  if (usable > 1)
    batchPool_ = std::make_unique<llvm::StdThreadPool>(llvm::hardware_concurrency(usable - 1));
}

EnvService::~EnvService() = default;

grpc::Status EnvService::GetVersion(grpc::ServerContext *, const v1::GetVersionRequest *, v1::GetVersionReply *reply) {
  reply->set_server_version(support::mlirRlVersion());
  reply->set_protocol_version(support::kProtocolVersion);
  reply->set_mlir_version(LLVM_VERSION_STRING);
  reply->set_host_cpu(support::hostCpuName());
  return grpc::Status::OK;
}

grpc::Status EnvService::GetSpaces(grpc::ServerContext *, const v1::GetSpacesRequest *request,
                                   v1::GetSpacesReply *reply) {
  auto config = toConfig(request->options());
  if (!config.ok()) return toGrpc(config.status());
  fillSpaces(*config, *reply);
  return grpc::Status::OK;
}

grpc::Status EnvService::ListBenchmarks(grpc::ServerContext *, const v1::ListBenchmarksRequest *request,
                                        v1::ListBenchmarksReply *reply) {
  const std::string &split = request->split();
  if (!split.empty() && split != "train" && split != "eval" && split != "user")
    return toGrpc(absl::InvalidArgumentError(absl::StrCat("split '", split, "' is unknown (train, eval or user)")));
  for (const env::BenchmarkInfo &info : benchmarks_->list(request->dataset())) {
    if (!split.empty() && info.split != split) continue;
    v1::BenchmarkInfo *out = reply->add_benchmarks();
    fillBenchmarkInfo(info, *out);
    auto benchmark = benchmarks_->get(info.uri);
    runners::Timing reference;
    if (benchmark.ok() && evaluator_->knownReference(**benchmark, 0, 1, reference))
      out->set_reference_ns(reference.medianNs);
  }
  for (const std::string &family : env::generatorFamilies()) reply->add_generator_families(family);
  return grpc::Status::OK;
}

grpc::Status EnvService::Reset(grpc::ServerContext *, const v1::ResetRequest *request, v1::ResetReply *reply) {
  if (request->benchmark().empty() && request->mlir().empty())
    return toGrpc(absl::InvalidArgumentError("benchmark is empty: give a URI such as benchmark://nn-ops/matmul_64x64x64_f32 "
                                             "(ListBenchmarks shows them), or the module itself in `mlir`"));
  if (!request->benchmark().empty() && !request->mlir().empty())
    return toGrpc(absl::InvalidArgumentError("give either benchmark (a URI) or mlir (a module), not both"));
  if (request->replay_actions_size() > limits_.maxActionsPerStep)
    return toGrpc(absl::InvalidArgumentError(absl::StrCat("replay_actions holds ", request->replay_actions_size(),
                                                          " actions, more than the limit of ",
                                                          limits_.maxActionsPerStep)));
  auto config = toConfig(request->options());
  if (!config.ok()) return toGrpc(config.status());
  auto benchmark = request->mlir().empty() ? benchmarks_->get(request->benchmark())
                                           : benchmarks_->addUpload(request->mlir(), "");
  if (!benchmark.ok()) return toGrpc(benchmark.status());
  const std::string &uri = (*benchmark)->info().uri;
  uint64_t seed = request->has_seed() ? request->seed() : 0;
  auto session = env::Session::create(*benchmark, *config, seed, evaluator_);
  if (!session.ok()) return toGrpc(session.status());
  for (int i = 0; i < request->replay_actions_size(); ++i) {
    auto result = (*session)->step(toValues(request->replay_actions(i)));
    if (!result.ok())
      return toGrpc(absl::Status(result.status().code(),
                                 absl::StrCat("replay_actions[", i, "]: ", result.status().message())));
  }
  ObservationLog log;
  if (absl::Status s = fillObservation(**session, request->observation(), log, *reply->mutable_observation());
      !s.ok())
    return toGrpc(s);
  env::EpisodeStatus status = (*session)->status();
  fillEpisodeInfo(status, *reply->mutable_info());
  reply->set_terminated(status.terminated);
  reply->set_truncated(status.truncated);
  runners::Timing reference;
  if (evaluator_->knownReference(**benchmark, seed, config->numThreads, reference)) {
    env::EvaluationRecord record;
    record.ok = record.correct = true;
    record.timing = reference;
    record.referenceNs = reference.medianNs;
    record.speedup = 1.0;
    record.cached = true;
    fillEvaluation(record, *reply->mutable_reference());
  }
  if (!request->close_session_id().empty()) {
    // Unknown or already closed is fine: the client only says it is done with it.
    absl::Status closed = sessions_.remove(request->close_session_id());
    if (!closed.ok() && !absl::IsNotFound(closed)) return toGrpc(closed);
  }
  auto id = sessions_.add(std::move(*session), std::move(log));
  if (!id.ok()) return toGrpc(id.status());
  reply->set_session_id(*id);
  reply->set_benchmark(uri);
  spdlog::info("reset: session {} on {} (seed {}, {} replayed actions)", *id, uri, seed,
               request->replay_actions_size());
  return grpc::Status::OK;
}

grpc::Status EnvService::Step(grpc::ServerContext *, const v1::StepRequest *request, v1::StepReply *reply) {
  return stepOne(request, reply);
}

grpc::Status EnvService::StepMany(grpc::ServerContext *, const v1::StepManyRequest *request,
                                  v1::StepManyReply *reply) {
  const int n = request->steps_size();
  if (n == 0) return toGrpc(absl::InvalidArgumentError("steps is empty: send at least one StepRequest"));
  if (static_cast<size_t>(n) > limits_.maxSessions)
    return toGrpc(absl::InvalidArgumentError(
        absl::StrCat("steps holds ", n, " entries, more than the server's ", limits_.maxSessions, " sessions")));
  // Entries run concurrently, so one session in two entries would make their order undefined.
  absl::flat_hash_map<std::string, int> firstEntry;
  for (int i = 0; i < n; ++i) {
    auto [it, inserted] = firstEntry.emplace(request->steps(i).session_id(), i);
    if (!inserted)
      return toGrpc(absl::InvalidArgumentError(absl::StrCat("session '", request->steps(i).session_id(),
                                                            "' appears in steps[", it->second, "] and steps[", i,
                                                            "]: one entry per session")));
  }
  for (int i = 0; i < n; ++i) reply->add_results();
  auto run = [&](int i) {
    v1::StepManyResult *result = reply->mutable_results(i);
    grpc::Status status = stepOne(&request->steps(i), result->mutable_reply());
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

grpc::Status EnvService::stepOne(const v1::StepRequest *request, v1::StepReply *reply) {
  if (request->actions_size() == 0) return toGrpc(absl::InvalidArgumentError("actions is empty: send at least one"));
  if (request->actions_size() > limits_.maxActionsPerStep)
    return toGrpc(absl::InvalidArgumentError(absl::StrCat("actions holds ", request->actions_size(),
                                                          " actions, more than the limit of ",
                                                          limits_.maxActionsPerStep)));
  auto session = lockSession(sessions_, request->session_id());
  if (!session.ok()) return toGrpc(session.status());
  env::Session &s = **session;
  double total = 0;
  for (int i = 0; i < request->actions_size(); ++i) {
    if (i > 0 && s.done()) break;  // the episode ended inside this batch: the rest is not applied
    auto result = s.step(toValues(request->actions(i)));
    if (!result.ok()) {
      // Earlier actions of the batch stay applied; say which one failed.
      std::string where = request->actions_size() > 1 ? absl::StrCat("actions[", i, "]: ") : "";
      return toGrpc(absl::Status(result.status().code(), absl::StrCat(where, result.status().message())));
    }
    total += result->reward;
    fillOutcome(*result, *reply->add_outcomes());
  }
  reply->set_reward(total);
  env::EpisodeStatus status = s.status();
  reply->set_terminated(status.terminated);
  reply->set_truncated(status.truncated);
  fillEpisodeInfo(status, *reply->mutable_info());
  return toGrpc(fillObservation(s, request->observation(), session->slot->log, *reply->mutable_observation()));
}

grpc::Status EnvService::Observe(grpc::ServerContext *, const v1::ObserveRequest *request, v1::ObserveReply *reply) {
  auto session = lockSession(sessions_, request->session_id());
  if (!session.ok()) return toGrpc(session.status());
  env::EpisodeStatus status = (*session)->status();
  reply->set_terminated(status.terminated);
  reply->set_truncated(status.truncated);
  fillEpisodeInfo(status, *reply->mutable_info());
  return toGrpc(
      fillObservation(**session, request->observation(), session->slot->log, *reply->mutable_observation()));
}

grpc::Status EnvService::Fork(grpc::ServerContext *, const v1::ForkRequest *request, v1::ForkReply *reply) {
  std::unique_ptr<env::Session> copy;
  {
    auto session = lockSession(sessions_, request->session_id());
    if (!session.ok()) return toGrpc(session.status());
    copy = (*session)->fork();
  }
  auto id = sessions_.add(std::move(copy));
  if (!id.ok()) return toGrpc(id.status());
  reply->set_session_id(*id);
  return grpc::Status::OK;
}

grpc::Status EnvService::Close(grpc::ServerContext *, const v1::CloseRequest *request, v1::CloseReply *) {
  if (request->session_id().empty()) return toGrpc(absl::InvalidArgumentError("session_id is empty"));
  return toGrpc(sessions_.remove(request->session_id()));
}

grpc::Status EnvService::ExportSchedule(grpc::ServerContext *, const v1::ExportScheduleRequest *request,
                                        v1::ExportScheduleReply *reply) {
  auto session = lockSession(sessions_, request->session_id());
  if (!session.ok()) return toGrpc(session.status());
  const env::Session &s = **session;
  reply->set_transform_script(s.schedule());
  reply->set_benchmark_ir(s.benchmark().taggedText());
  reply->set_current_ir(s.currentIR());
  reply->set_benchmark(s.benchmark().info().uri);
  for (const auto &action : s.actions()) {
    v1::Action *a = reply->add_actions();
    for (int64_t v : action) a->add_values(v);
  }
  return grpc::Status::OK;
}

grpc::Status EnvService::AddBenchmark(grpc::ServerContext *, const v1::AddBenchmarkRequest *request,
                                      v1::AddBenchmarkReply *reply) {
  auto benchmark = benchmarks_->addUpload(request->mlir(), request->description());
  if (!benchmark.ok()) return toGrpc(benchmark.status());
  fillBenchmarkInfo((*benchmark)->info(), *reply->mutable_benchmark());
  spdlog::info("upload: {} ({} ops)", (*benchmark)->info().uri, (*benchmark)->info().numOps);
  return grpc::Status::OK;
}

}  // namespace mlir_rl::server
