// The gRPC service: admits calls, validates requests, finds sessions, translates proto ⇄ env. No environment logic
// lives here.
//
// Requests arrive as bytes and are parsed here (UnaryMethod below), so a request that does not parse is answered
// INVALID_ARGUMENT naming the field (gRPC's generated handlers answer INTERNAL with an empty message, e.g. for a
// string that is not UTF-8). Every call passes one gate first: the token check (Auth.h), the refusal of new sessions
// and uploads while draining, and the accounting behind GetMetrics.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/codegen/service_type.h>

#include "llvm/Support/ThreadPool.h"
#include "mlir_rl/v1/env.pb.h"

#include "env/Benchmark.h"
#include "env/Evaluation.h"
#include "runners/WorkerPool.h"
#include "server/Auth.h"
#include "server/Metrics.h"
#include "server/SessionRegistry.h"

namespace mlir_rl::server {

struct ServiceLimits {
  RegistryLimits sessions;
  int maxActionsPerStep = 1024;
  Clock::duration uploadIdleTimeout = std::chrono::hours(1);  // 0: uploads never expire
  Clock::duration housekeepingInterval = std::chrono::seconds(10);
  Clock::duration logInterval = std::chrono::seconds(60);  // summary line at info level (0: none)
};

class EnvService final : public grpc::Service {
 public:
  EnvService(env::BenchmarkRegistry *benchmarks, env::EvaluationService *evaluator, ServiceLimits limits,
             Authenticator auth = {}, const runners::WorkerPool *pool = nullptr);
  ~EnvService() override;

  // From now on Reset, Fork and AddBenchmark are refused with UNAVAILABLE (the client should go to another server);
  // calls on existing sessions go on.
  void startDraining();
  // Calls being served now.
  int inFlight() const { return inFlight_.load(); }
  size_t numSessions() const { return sessions_.size(); }
  // Everything GetMetrics reports, in Prometheus text format.
  MetricsText metrics() const;
  // Serves method `name` (e.g. "Reset") on `request` bytes exactly as a call would be, without gRPC's transport (for
  // the request fuzzer); the reply's bytes in `reply` when OK.
  grpc::Status callForTesting(const std::string &name, const std::string &request, std::string &reply);

 private:
  // What the gate learnt about a call.
  struct Call {
    grpc::ServerContext *context;
    std::string client;
    env::StepContext step;  // the call's deadline, for evaluations
  };
  template <class Request, class Reply>
  using Handler = grpc::Status (EnvService::*)(Call &, const Request &, Reply &);
  // Registers method `name` of mlir_rl.v1.MlirRlEnv. `startsSomething`: refused while draining.
  template <class Request, class Reply>
  void addMethod(const char *name, Handler<Request, Reply> handler, bool startsSomething);
  grpc::Status admit(grpc::ServerContext *context, bool startsSomething, Call &call) const;

  grpc::Status GetVersion(Call &, const v1::GetVersionRequest &, v1::GetVersionReply &);
  grpc::Status GetSpaces(Call &, const v1::GetSpacesRequest &, v1::GetSpacesReply &);
  grpc::Status ListBenchmarks(Call &, const v1::ListBenchmarksRequest &, v1::ListBenchmarksReply &);
  grpc::Status Reset(Call &, const v1::ResetRequest &, v1::ResetReply &);
  grpc::Status Step(Call &, const v1::StepRequest &, v1::StepReply &);
  grpc::Status StepMany(Call &, const v1::StepManyRequest &, v1::StepManyReply &);
  grpc::Status Observe(Call &, const v1::ObserveRequest &, v1::ObserveReply &);
  grpc::Status Fork(Call &, const v1::ForkRequest &, v1::ForkReply &);
  grpc::Status EndSession(Call &, const v1::CloseRequest &, v1::CloseReply &);
  grpc::Status ExportSchedule(Call &, const v1::ExportScheduleRequest &, v1::ExportScheduleReply &);
  grpc::Status AddBenchmark(Call &, const v1::AddBenchmarkRequest &, v1::AddBenchmarkReply &);
  grpc::Status GetMetrics(Call &, const v1::GetMetricsRequest &, v1::GetMetricsReply &);

  grpc::Status stepOne(const Call &call, const v1::StepRequest &request, v1::StepReply &reply);
  void housekeeping();  // the housekeeper thread: leases and the interval log line
  std::string summary() const;

  env::BenchmarkRegistry *benchmarks_;
  env::EvaluationService *evaluator_;
  ServiceLimits limits_;
  Authenticator auth_;
  const runners::WorkerPool *pool_;
  SessionRegistry sessions_;
  std::atomic<bool> draining_{false};
  std::atomic<int> inFlight_{0};
  std::vector<std::string> methodNames_;
  // What each method does with a call's bytes (gate, parse, handler, serialize, accounting), in methodNames_ order.
  std::vector<std::function<grpc::Status(grpc::ServerContext *, const grpc::ByteBuffer &, grpc::ByteBuffer *)>>
      dispatch_;
  std::unique_ptr<CallMetrics> calls_;
  std::atomic<int64_t> episodesStarted_{0}, stepsTaken_{0};
  // Runs StepMany's entries in parallel (null on a single CPU: entries then run one after another).
  std::unique_ptr<llvm::StdThreadPool> batchPool_;
  std::mutex housekeepingMutex_;
  std::condition_variable housekeepingCv_;
  bool stopping_ = false;
  std::thread housekeeper_;
};

}  // namespace mlir_rl::server
