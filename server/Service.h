// The gRPC service: validates requests, finds sessions, translates proto ⇄ env. No environment logic lives here.
#pragma once

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
};

class EnvService final : public v1::MlirRlEnv::Service {
 public:
  EnvService(env::BenchmarkRegistry *benchmarks, env::EvaluationService *evaluator, ServiceLimits limits);
  ~EnvService() override;

  grpc::Status GetVersion(grpc::ServerContext *, const v1::GetVersionRequest *, v1::GetVersionReply *) override;
  grpc::Status GetSpaces(grpc::ServerContext *, const v1::GetSpacesRequest *, v1::GetSpacesReply *) override;
  grpc::Status ListBenchmarks(grpc::ServerContext *, const v1::ListBenchmarksRequest *,
                              v1::ListBenchmarksReply *) override;
  grpc::Status Reset(grpc::ServerContext *, const v1::ResetRequest *, v1::ResetReply *) override;
  grpc::Status Step(grpc::ServerContext *, const v1::StepRequest *, v1::StepReply *) override;
  grpc::Status StepMany(grpc::ServerContext *, const v1::StepManyRequest *, v1::StepManyReply *) override;
  grpc::Status Observe(grpc::ServerContext *, const v1::ObserveRequest *, v1::ObserveReply *) override;
  grpc::Status Fork(grpc::ServerContext *, const v1::ForkRequest *, v1::ForkReply *) override;
  grpc::Status Close(grpc::ServerContext *, const v1::CloseRequest *, v1::CloseReply *) override;
  grpc::Status ExportSchedule(grpc::ServerContext *, const v1::ExportScheduleRequest *,
                              v1::ExportScheduleReply *) override;
  grpc::Status AddBenchmark(grpc::ServerContext *, const v1::AddBenchmarkRequest *, v1::AddBenchmarkReply *) override;

  size_t numSessions() const { return sessions_.size(); }

 private:
  grpc::Status stepOne(const v1::StepRequest *request, v1::StepReply *reply);  // Step, and each StepMany entry

  env::BenchmarkRegistry *benchmarks_;
  env::EvaluationService *evaluator_;
  ServiceLimits limits_;
  SessionRegistry sessions_;
  // Runs StepMany's entries in parallel (null on a single CPU: entries then run one after another).
  std::unique_ptr<llvm::StdThreadPool> batchPool_;
};

}  // namespace mlir_rl::server
