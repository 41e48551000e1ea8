// mlir-rl-server: the environment over gRPC.
#include <csignal>
#include <fstream>
#include <memory>
#include <thread>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "mlir/IR/MLIRContext.h"
#include "spdlog/spdlog.h"

#include "env/Benchmark.h"
#include "env/Evaluation.h"
#include "server/Service.h"
#include "support/Context.h"

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
ABSL_FLAG(std::string, log_level, "info", "trace, debug, info, warn, error");

namespace {

// Waits for SIGINT or SIGTERM on a dedicated thread (the signals are blocked everywhere else), then shuts the
// server down: in-flight RPCs get a short grace period.
void serveUntilSignalled(grpc::Server *server) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  std::thread waiter([&] {
    int received = 0;
    sigwait(&signals, &received);
    spdlog::info("received signal {}, shutting down", received);
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  });
  server->Wait();
  waiter.join();
}

}  // namespace

int main(int argc, char **argv) {
  absl::SetProgramUsageMessage("mlir-rl-server: reinforcement-learning environment for MLIR loop transformations");
  absl::ParseCommandLine(argc, argv);
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
  mlir_rl::env::EvaluationService evaluator(timing, absl::GetFlag(FLAGS_cache_entries));
  mlir_rl::server::ServiceLimits limits;
  limits.maxSessions = absl::GetFlag(FLAGS_max_sessions);
  limits.maxActionsPerStep = absl::GetFlag(FLAGS_max_actions_per_step);
  mlir_rl::server::EnvService service(&benchmarks, &evaluator, limits);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  std::string address = absl::StrCat(absl::GetFlag(FLAGS_address), ":", absl::GetFlag(FLAGS_port));
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
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
  serveUntilSignalled(server.get());
  spdlog::info("stopped ({} sessions open at shutdown)", service.numSessions());
  return 0;
}
