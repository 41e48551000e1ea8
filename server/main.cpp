// mlir-rl-server: the environment over gRPC.
#include <csignal>
#include <fstream>
#include <memory>
#include <thread>

#include <sched.h>
#include <unistd.h>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "mlir/IR/MLIRContext.h"
#include "spdlog/spdlog.h"

#include "env/Benchmark.h"
#include "env/Evaluation.h"
#include "env/StateCache.h"
#include "runners/WorkerPool.h"
#include "server/GrpcSetup.h"
#include "server/Health.h"
#include "server/Service.h"
#include "support/Affinity.h"
#include "support/Context.h"
#include "support/Target.h"
#include "support/Version.h"

ABSL_FLAG(std::string, address, "127.0.0.1", "address to listen on (0.0.0.0 for every interface)");
ABSL_FLAG(int, port, 50051, "port to listen on (0: any free port; see --port_file)");
ABSL_FLAG(std::string, port_file, "", "write the port actually bound to this file once the server is serving");
ABSL_FLAG(std::string, benchmarks_dir, MLIR_RL_BENCHMARKS_DIR, "directory of <dataset>/<name>.mlir benchmarks");
ABSL_FLAG(int, threads, 0, "maximum RPC worker threads (0: gRPC's default)");
ABSL_FLAG(int, max_sessions, 10000, "maximum concurrent sessions");
ABSL_FLAG(int, max_message_mb, 64, "maximum request size in MiB");
ABSL_FLAG(int, max_actions_per_step, 1024, "maximum actions in one Step or replay list");
ABSL_FLAG(double, timing_budget_s, 2.0, "time budget for the timed repetitions of one evaluation, in seconds");
ABSL_FLAG(int, cache_entries, 4096, "entries of the evaluation cache");
ABSL_FLAG(int, transition_cache_mb, 256,
          "estimated MiB of transformed IR the transition cache may hold (steps already taken by any session cost a "
          "lookup instead of a transformation); 0 disables it");
ABSL_FLAG(std::string, cache_dir, "",
          "keep reference times and measured candidates here across restarts (per machine identity; empty: memory only)");
ABSL_FLAG(std::string, log_level, "info", "trace, debug, info, warn, error");
ABSL_FLAG(std::string, isolation, "process",
          "where candidates run: process (supervised mlir-rl-runner workers; a crash kills only a worker) or none "
          "(inside the server; for debugging)");
ABSL_FLAG(int, workers, 0, "evaluation worker processes (0: one per usable CPU / cpus_per_worker)");
ABSL_FLAG(int, cpus_per_worker, 1, "CPUs each worker is pinned to (set num_threads per session accordingly)");
ABSL_FLAG(bool, pin_workers, true, "pin each worker to its own CPUs so measurements never share a core");
ABSL_FLAG(std::string, rpc_cpus, "",
          "CPUs the server's RPC threads run on, e.g. 0 or 0-1 (empty: any). Workers keep their own CPUs. An agent "
          "on the same CPU (taskset -c) avoids a cross-core wake-up per call, which costs tens of microseconds on VMs");
ABSL_FLAG(int64_t, worker_memory_mb, 8192, "address-space limit of each worker in MiB (0: none)");
ABSL_FLAG(std::string, runner, "", "path of mlir-rl-runner (default: next to this executable)");
ABSL_FLAG(double, eval_timeout_floor_s, 30, "an evaluation may take at least this long before it is stopped");
ABSL_FLAG(double, eval_timeout_multiple, 20, "... plus this multiple of the benchmark's reference time");
ABSL_FLAG(double, eval_timeout_ceiling_s, 600, "... and never more than this");

namespace {

// Waits for SIGINT or SIGTERM on a dedicated thread (the signals are blocked everywhere else), then shuts the
// server down: in-flight RPCs get a short grace period.
void serveUntilSignalled(grpc::Server *server, mlir_rl::server::HealthService *health) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  std::thread waiter([&] {
    int received = 0;
    sigwait(&signals, &received);
    spdlog::info("received signal {}, shutting down", received);
    health->setNotServing();
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  });
  server->Wait();
  waiter.join();
}

}  // namespace

int main(int argc, char **argv) {
  absl::SetProgramUsageMessage("mlir-rl-server: reinforcement-learning environment for MLIR loop transformations");
  mlir_rl::support::installVersionFlag("mlir-rl-server");
  absl::ParseCommandLine(argc, argv);
  mlir_rl::server::configureGrpcProcess();
  spdlog::set_level(spdlog::level::from_str(absl::GetFlag(FLAGS_log_level)));

  // Block the shutdown signals before any thread starts, so only the waiter thread receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::unique_ptr<mlir::MLIRContext> context = mlir_rl::support::createContext();
  mlir_rl::env::BenchmarkRegistry benchmarks(context.get(), absl::GetFlag(FLAGS_benchmarks_dir));
  if (absl::Status s = benchmarks.scan(); !s.ok()) {
    spdlog::error("{}", std::string(s.message()));
    return 2;
  }
  spdlog::info("{} benchmarks under {}", benchmarks.uris().size(), absl::GetFlag(FLAGS_benchmarks_dir));

  mlir_rl::runners::TimingOptions timing;
  timing.budgetSeconds = absl::GetFlag(FLAGS_timing_budget_s);
  std::unique_ptr<mlir_rl::runners::Executor> executor;
  std::string isolation = absl::GetFlag(FLAGS_isolation);
  if (isolation == "process") {
    mlir_rl::runners::WorkerPoolOptions pool;
    pool.runnerPath = absl::GetFlag(FLAGS_runner).empty() ? mlir_rl::runners::WorkerPool::defaultRunnerPath()
                                                            : absl::GetFlag(FLAGS_runner);
    pool.cpusPerWorker = std::max(1, absl::GetFlag(FLAGS_cpus_per_worker));
    int usable = static_cast<int>(mlir_rl::support::allowedCpus().size());
    pool.workers = absl::GetFlag(FLAGS_workers) > 0 ? absl::GetFlag(FLAGS_workers)
                                                     : std::max(1, usable / pool.cpusPerWorker);
    pool.pin = absl::GetFlag(FLAGS_pin_workers);
    pool.memoryLimitMb = absl::GetFlag(FLAGS_worker_memory_mb);
    if (access(pool.runnerPath.c_str(), X_OK) != 0) {
      spdlog::error("evaluation worker {} is missing or not executable (see --runner)", pool.runnerPath);
      return 2;
    }
    spdlog::info("{} evaluation workers ({}), {} CPU(s) each{}", pool.workers, pool.runnerPath, pool.cpusPerWorker,
                 pool.pin ? ", pinned" : "");
    executor = std::make_unique<mlir_rl::runners::WorkerPool>(pool);
  } else if (isolation == "none") {
    spdlog::warn("--isolation=none: candidates run inside the server; a crashing candidate stops it");
    executor = std::make_unique<mlir_rl::runners::InProcessExecutor>(context.get());
  } else {
    spdlog::error("--isolation must be process or none, not '{}'", isolation);
    return 2;
  }
  // After the worker pool has read the process's CPUs (it pins workers itself), before any RPC thread exists: the
  // threads gRPC starts inherit the main thread's affinity.
  if (std::string list = absl::GetFlag(FLAGS_rpc_cpus); !list.empty()) {
    std::string error;
    if (!mlir_rl::support::pinCallingThreadTo(list, error)) {
      spdlog::error("--rpc_cpus: {}", error);
      return 2;
    }
    spdlog::info("RPC threads on CPU(s) {}", list);
  }
  mlir_rl::env::TimeoutPolicy timeouts{absl::GetFlag(FLAGS_eval_timeout_floor_s),
                                       absl::GetFlag(FLAGS_eval_timeout_multiple),
                                       absl::GetFlag(FLAGS_eval_timeout_ceiling_s)};
  mlir_rl::env::EvaluationService evaluator(executor.get(), timing, absl::GetFlag(FLAGS_cache_entries), timeouts);
  if (absl::GetFlag(FLAGS_transition_cache_mb) < 0) {
    spdlog::error("--transition_cache_mb must be >= 0, not {}", absl::GetFlag(FLAGS_transition_cache_mb));
    return 2;
  }
  mlir_rl::env::TransitionCache::shared().setBudget(static_cast<size_t>(absl::GetFlag(FLAGS_transition_cache_mb))
                                                    << 20);
  if (std::string dir = absl::GetFlag(FLAGS_cache_dir); !dir.empty()) {
    if (absl::Status s = evaluator.persistTo(dir, mlir_rl::support::machineIdentity()); !s.ok()) {
      spdlog::error("{}", std::string(s.message()));
      return 2;
    }
    spdlog::info("evaluation cache persisted under {}", dir);
  }
  mlir_rl::server::ServiceLimits limits;
  limits.maxSessions = absl::GetFlag(FLAGS_max_sessions);
  limits.maxActionsPerStep = absl::GetFlag(FLAGS_max_actions_per_step);
  mlir_rl::server::EnvService service(&benchmarks, &evaluator, limits);

  // Our own health service (grpc.health.v1 Check): gRPC's default one costs every call tens of microseconds here.
  mlir_rl::server::HealthService health(mlir_rl::v1::MlirRlEnv::service_full_name());
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  std::string address = absl::StrCat(absl::GetFlag(FLAGS_address), ":", absl::GetFlag(FLAGS_port));
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  builder.RegisterService(&health);
  builder.SetMaxReceiveMessageSize(absl::GetFlag(FLAGS_max_message_mb) * 1024 * 1024);
  builder.SetMaxSendMessageSize(256 * 1024 * 1024);
  if (int threads = absl::GetFlag(FLAGS_threads); threads > 0) {
    grpc::ResourceQuota quota("mlir-rl");
    quota.SetMaxThreads(threads);
    builder.SetResourceQuota(quota);
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    spdlog::error("cannot listen on {}", address);
    return 1;
  }
  spdlog::info("mlir-rl-server listening on {}:{}", absl::GetFlag(FLAGS_address), port);
  if (std::string portFile = absl::GetFlag(FLAGS_port_file); !portFile.empty()) {
    // Write then rename, so a reader never sees a partial file.
    std::string tmp = portFile + ".tmp";
    std::ofstream(tmp) << port << "\n";
    std::rename(tmp.c_str(), portFile.c_str());
  }
  serveUntilSignalled(server.get(), &health);
  spdlog::info("stopped ({} sessions open at shutdown)", service.numSessions());
  return 0;
}
