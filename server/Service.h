// The gRPC service: validates requests, finds sessions, translates proto ⇄ env. No environment logic lives here.
#pragma once

#include <functional>
#include <memory>

#include "llvm/Support/ThreadPool.h"
#include "mlir_rl/v1/env.grpc.pb.h"

#include "env/Benchmark.h"
#include "env/Evaluation.h"
#include "server/SessionRegistry.h"

namespace mlir_rl::server {

struct ServiceLimits {
  size_t maxSessions = 10000;
  int maxActionsPerStep = 1024;
  // Threads for calls that may block (evaluations, uploads, replays, listing); 0: max(8, 2 x hardware threads).
  int blockingThreads = 0;
};

// Callback API: a call that cannot block long (a non-evaluating step, an observation, a fork, ...) runs on the gRPC
// thread that received it, which saves the thread hand-offs of the synchronous API (about half the RPC cost here).
// A call that may block — a step the reward mode evaluates, a reset that replays or loads a benchmark, an upload, a
// session another call holds — goes to a pool of its own threads, so gRPC's threads never wait for an evaluation.
class EnvService final : public v1::MlirRlEnv::CallbackService {
 public:
  EnvService(env::BenchmarkRegistry *benchmarks, env::EvaluationService *evaluator, ServiceLimits limits);
  ~EnvService() override;

  grpc::ServerUnaryReactor *GetVersion(grpc::CallbackServerContext *, const v1::GetVersionRequest *,
                                       v1::GetVersionReply *) override;
  grpc::ServerUnaryReactor *GetSpaces(grpc::CallbackServerContext *, const v1::GetSpacesRequest *,
                                      v1::GetSpacesReply *) override;
  grpc::ServerUnaryReactor *ListBenchmarks(grpc::CallbackServerContext *, const v1::ListBenchmarksRequest *,
                                           v1::ListBenchmarksReply *) override;
  grpc::ServerUnaryReactor *Reset(grpc::CallbackServerContext *, const v1::ResetRequest *, v1::ResetReply *) override;
  grpc::ServerUnaryReactor *Step(grpc::CallbackServerContext *, const v1::StepRequest *, v1::StepReply *) override;
  grpc::ServerUnaryReactor *Observe(grpc::CallbackServerContext *, const v1::ObserveRequest *,
                                    v1::ObserveReply *) override;
  grpc::ServerUnaryReactor *Fork(grpc::CallbackServerContext *, const v1::ForkRequest *, v1::ForkReply *) override;
  grpc::ServerUnaryReactor *Close(grpc::CallbackServerContext *, const v1::CloseRequest *, v1::CloseReply *) override;
  grpc::ServerUnaryReactor *ExportSchedule(grpc::CallbackServerContext *, const v1::ExportScheduleRequest *,
                                           v1::ExportScheduleReply *) override;
  grpc::ServerUnaryReactor *AddBenchmark(grpc::CallbackServerContext *, const v1::AddBenchmarkRequest *,
                                         v1::AddBenchmarkReply *) override;

  size_t numSessions() const { return sessions_.size(); }

 private:
  // Runs `call` here (inline) or on the blocking pool, then finishes the reactor with its status.
  grpc::ServerUnaryReactor *dispatch(grpc::CallbackServerContext *context, bool inlineCall,
                                     std::function<grpc::Status()> call);
  // True when the session exists and nobody holds it now (a call on it will not wait for another).
  bool sessionIsFree(const std::string &id) const;

  grpc::Status doListBenchmarks(const v1::ListBenchmarksRequest *, v1::ListBenchmarksReply *);
  grpc::Status doReset(const v1::ResetRequest *, v1::ResetReply *);
  grpc::Status doStep(const v1::StepRequest *, v1::StepReply *);
  grpc::Status doObserve(const v1::ObserveRequest *, v1::ObserveReply *);
  grpc::Status doFork(const v1::ForkRequest *, v1::ForkReply *);
  grpc::Status doClose(const v1::CloseRequest *, v1::CloseReply *);
  grpc::Status doExportSchedule(const v1::ExportScheduleRequest *, v1::ExportScheduleReply *);
  grpc::Status doAddBenchmark(const v1::AddBenchmarkRequest *, v1::AddBenchmarkReply *);

  env::BenchmarkRegistry *benchmarks_;
  env::EvaluationService *evaluator_;
  ServiceLimits limits_;
  SessionRegistry sessions_;
  std::unique_ptr<llvm::StdThreadPool> blocking_;
};

}  // namespace mlir_rl::server
