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
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/xxhash.h"
#include "mlir/IR/MLIRContext.h"
#include "spdlog/spdlog.h"

#include "env/Benchmark.h"
#include "env/Evaluation.h"
#include "env/StateCache.h"
#include "mlir_rl/v1/env.grpc.pb.h"
#include "runners/WorkerPool.h"
#include "server/Auth.h"
#include "server/GrpcSetup.h"
#include "server/Health.h"
#include "server/Metrics.h"
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
ABSL_FLAG(int, max_sessions_per_client, 0,
          "maximum sessions one client may hold (0: --max_sessions); a client is its token's name, its certificate's "
          "name, or its address");
ABSL_FLAG(double, session_idle_timeout_s, 3600, "a session no call used for this long is closed (0: never)");
ABSL_FLAG(double, evict_idle_after_s, 60,
          "when the server is full, the session idle longest is closed to make room if idle this long");
ABSL_FLAG(int, max_uploads, 10000, "maximum uploaded benchmarks held");
ABSL_FLAG(int, max_uploads_per_client, 0, "maximum uploads one client may hold (0: --max_uploads)");
ABSL_FLAG(double, upload_idle_timeout_s, 3600,
          "an upload no session used for this long is forgotten (0: never); clients upload it again");
ABSL_FLAG(int, max_upload_kb, 8192, "maximum size of an uploaded module's text in KiB");
ABSL_FLAG(int, max_upload_nesting, 64, "maximum bracket nesting of an uploaded module's text");
ABSL_FLAG(int, max_upload_ops, 20000, "maximum operations in an uploaded module");
ABSL_FLAG(int, max_tensor_mb, 1024, "maximum size of one tensor of an uploaded module in MiB");
ABSL_FLAG(int, max_argument_mb, 2048, "maximum size of an uploaded kernel's arguments together in MiB");
ABSL_FLAG(double, drain_grace_s, 20,
          "on SIGTERM/SIGINT: new sessions are refused and calls in flight get this long to finish before their "
          "evaluations are cancelled (a second signal cancels at once)");
ABSL_FLAG(std::string, auth_tokens_file, "",
          "require 'authorization: Bearer <token>' on every call; lines '<name> <token>' (or '<token>')");
ABSL_FLAG(std::string, tls_cert, "", "serve TLS with this PEM certificate chain (with --tls_key)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "", "require client certificates signed by this PEM CA (with --tls_cert)");
ABSL_FLAG(bool, allow_unauthenticated_remote, false,
          "serve a non-loopback --address without --auth_tokens_file or --tls_client_ca (anyone who reaches the port "
          "may upload code for the server to compile and run)");
ABSL_FLAG(int, metrics_port, 0, "serve Prometheus metrics at http://<metrics_address>:<port>/metrics (0: off)");
ABSL_FLAG(std::string, metrics_address, "127.0.0.1", "address of the metrics endpoint");
ABSL_FLAG(double, log_interval_s, 60,
          "log a summary line (sessions, evaluations, workers, memory) this often (0: never)");
ABSL_FLAG(int, max_message_mb, 64, "maximum request size in MiB");
ABSL_FLAG(int, max_actions_per_step, 1024, "maximum actions in one Step or replay list");
ABSL_FLAG(double, timing_budget_s, 2.0, "time budget for the timed repetitions of one evaluation, in seconds");
ABSL_FLAG(double, race_factor, 1.25,
          "stop timing a candidate after --race_min_repetitions samples once their 25th percentile is above this "
          "multiple of the reference's time (clearly slower: its reward needs no 2 % spread); 0 times every candidate "
          "to the spread target");
ABSL_FLAG(int, race_min_repetitions, 2,
          "samples a long candidate (a run of 10 ms or more) is timed at least before racing may stop it; shorter "
          "ones get the usual minimum of 5");
ABSL_FLAG(double, timing_target_spread, 0.02,
          "stop timing once (p75 - p25) / median of the samples is below this (after the minimum of samples)");
ABSL_FLAG(int, timing_max_repetitions, 50, "timed samples of one evaluation at most");
ABSL_FLAG(int, cache_entries, 4096, "entries of the evaluation cache");
ABSL_FLAG(int, transition_cache_mb, 256,
          "estimated MiB of transformed IR the transition cache may hold (steps already taken by any session cost a "
          "lookup instead of a transformation); 0 disables it");
ABSL_FLAG(std::string, cache_dir, "auto",
          "keep reference times and measured candidates here across restarts, one file per machine identity and "
          "evaluator build; auto: $MLIR_RL_CACHE_DIR when set (empty: memory only), else $XDG_CACHE_HOME/mlir-rl or "
          "~/.cache/mlir-rl (memory only, with a warning, when that cannot be used); empty: memory only");
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
ABSL_FLAG(bool, sandbox_workers, true,
          "run evaluation workers sandboxed: own unprivileged user (when root), no network, system-call allow-list, "
          "no writable files (runners/Sandbox.h); checked at start-up");
ABSL_FLAG(std::string, runner, "", "path of mlir-rl-runner (default: next to this executable)");
ABSL_FLAG(double, eval_timeout_floor_s, 30, "an evaluation may take at least this long before it is stopped");
ABSL_FLAG(double, eval_timeout_multiple, 20, "... plus this multiple of the benchmark's reference time");
ABSL_FLAG(double, eval_timeout_ceiling_s, 600, "... and never more than this");

namespace {

using Clock = std::chrono::steady_clock;

bool isLoopback(const std::string &address) {
  return address == "127.0.0.1" || address == "localhost" || address == "::1" || address == "[::1]" ||
         address.rfind("127.", 0) == 0;
}

// Waits for SIGINT or SIGTERM on a dedicated thread (the signals are blocked everywhere else), then drains: the
// health service answers NOT_SERVING, new sessions and uploads are refused, calls in flight get `grace` to finish;
// then the evaluations still running are cancelled (their steps are undone and answered UNAVAILABLE) and the server
// stops. A second signal ends the grace period at once.
void serveUntilSignalled(grpc::Server *server, mlir_rl::server::HealthService *health,
                         mlir_rl::server::EnvService *service, mlir_rl::runners::Executor *executor, double grace) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  std::thread waiter([&] {
    int received = 0;
    sigwait(&signals, &received);
    auto start = Clock::now();
    spdlog::info("received signal {}: draining ({} call(s) in flight, up to {} s)", received, service->inFlight(),
                 grace);
    health->setNotServing();
    service->startDraining();
    auto deadline = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(grace));
    timespec poll{0, 20 * 1000 * 1000};
    while (service->inFlight() > 0 && Clock::now() < deadline) {
      if (sigtimedwait(&signals, nullptr, &poll) > 0) {
        spdlog::info("second signal: cancelling what is in flight");
        break;
      }
    }
    if (int left = service->inFlight(); left > 0) {
      spdlog::info("cancelling the evaluations of {} call(s) still in flight", left);
      executor->cancelAll(
          "cancelled: the server is shutting down (its drain grace period ended); the step was not "
          "applied: retry on another server");
      // Their steps are undone and answered within milliseconds.
      for (auto until = Clock::now() + std::chrono::seconds(2); service->inFlight() > 0 && Clock::now() < until;)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    server->Shutdown(std::chrono::system_clock::now());
    spdlog::info("drained in {:.2f} s", std::chrono::duration<double>(Clock::now() - start).count());
  });
  server->Wait();
  waiter.join();
}

template <class T>
std::chrono::steady_clock::duration seconds(T s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(s));
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

  // Who may call, and how: refuse to offer code execution to a network without credentials.
  const std::string listenAddress = absl::GetFlag(FLAGS_address);
  mlir_rl::server::Authenticator auth;
  if (std::string tokens = absl::GetFlag(FLAGS_auth_tokens_file); !tokens.empty()) {
    auto loaded = mlir_rl::server::Authenticator::fromFile(tokens);
    if (!loaded.ok()) {
      spdlog::error("--auth_tokens_file: {}", std::string(loaded.status().message()));
      return 2;
    }
    auth = std::move(*loaded);
  }
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!absl::GetFlag(FLAGS_tls_cert).empty() || !absl::GetFlag(FLAGS_tls_key).empty()) {
    auto tls = mlir_rl::server::tlsCredentials(absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key),
                                               absl::GetFlag(FLAGS_tls_client_ca));
    if (!tls.ok()) {
      spdlog::error("TLS: {}", std::string(tls.status().message()));
      return 2;
    }
    credentials = *tls;
  } else if (!absl::GetFlag(FLAGS_tls_client_ca).empty()) {
    spdlog::error("--tls_client_ca needs --tls_cert and --tls_key");
    return 2;
  }
  bool authenticated = auth.requiresToken() || !absl::GetFlag(FLAGS_tls_client_ca).empty();
  if (!isLoopback(listenAddress) && !authenticated && !absl::GetFlag(FLAGS_allow_unauthenticated_remote)) {
    spdlog::error(
        "refusing to serve {} without authentication: anyone reaching it could upload code for this server "
        "to compile and run. Give --auth_tokens_file (and --tls_cert/--tls_key), or --tls_client_ca, or "
        "--allow_unauthenticated_remote on a network you trust",
        listenAddress);
    return 2;
  }

  std::unique_ptr<mlir::MLIRContext> context = mlir_rl::support::createContext();
  mlir_rl::env::BenchmarkRegistry benchmarks(context.get(), absl::GetFlag(FLAGS_benchmarks_dir));
  benchmarks.maxUploads = static_cast<size_t>(std::max(0, absl::GetFlag(FLAGS_max_uploads)));
  benchmarks.maxUploadsPerClient = absl::GetFlag(FLAGS_max_uploads_per_client) > 0
                                       ? static_cast<size_t>(absl::GetFlag(FLAGS_max_uploads_per_client))
                                       : benchmarks.maxUploads;
  benchmarks.uploadLimits.maxTextBytes = static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_max_upload_kb))) << 10;
  benchmarks.uploadLimits.maxNesting = std::max(4, absl::GetFlag(FLAGS_max_upload_nesting));
  benchmarks.uploadLimits.maxOps = std::max(1, absl::GetFlag(FLAGS_max_upload_ops));
  benchmarks.uploadLimits.maxTensorBytes = static_cast<int64_t>(std::max(1, absl::GetFlag(FLAGS_max_tensor_mb))) << 20;
  benchmarks.uploadLimits.maxArgumentBytes = static_cast<int64_t>(std::max(1, absl::GetFlag(FLAGS_max_argument_mb)))
                                             << 20;
  if (absl::Status s = benchmarks.scan(); !s.ok()) {
    spdlog::error("{}", std::string(s.message()));
    return 2;
  }
  spdlog::info("{} benchmarks under {}", benchmarks.uris().size(), absl::GetFlag(FLAGS_benchmarks_dir));

  mlir_rl::runners::WorkerPool *poolPtr = nullptr;
  std::string evaluatorBinary = "/proc/self/exe";  // what compiles and times candidates (the runner, below)
  mlir_rl::runners::TimingOptions timing;
  timing.budgetSeconds = absl::GetFlag(FLAGS_timing_budget_s);
  timing.raceFactor = std::max(0.0, absl::GetFlag(FLAGS_race_factor));
  timing.raceMinRepetitions = std::clamp(absl::GetFlag(FLAGS_race_min_repetitions), 1, timing.minRepetitions);
  timing.targetSpread = std::clamp(absl::GetFlag(FLAGS_timing_target_spread), 1e-4, 1.0);
  timing.maxRepetitions = std::clamp(absl::GetFlag(FLAGS_timing_max_repetitions), timing.minRepetitions, 100000);
  std::unique_ptr<mlir_rl::runners::Executor> executor;
  std::string isolation = absl::GetFlag(FLAGS_isolation);
  if (isolation == "process") {
    mlir_rl::runners::WorkerPoolOptions pool;
    pool.runnerPath = absl::GetFlag(FLAGS_runner).empty() ? mlir_rl::runners::WorkerPool::defaultRunnerPath()
                                                          : absl::GetFlag(FLAGS_runner);
    pool.cpusPerWorker = std::max(1, absl::GetFlag(FLAGS_cpus_per_worker));
    int usable = static_cast<int>(mlir_rl::support::allowedCpus().size());
    pool.workers =
        absl::GetFlag(FLAGS_workers) > 0 ? absl::GetFlag(FLAGS_workers) : std::max(1, usable / pool.cpusPerWorker);
    pool.pin = absl::GetFlag(FLAGS_pin_workers);
    pool.memoryLimitMb = absl::GetFlag(FLAGS_worker_memory_mb);
    if (access(pool.runnerPath.c_str(), X_OK) != 0) {
      spdlog::error("evaluation worker {} is missing or not executable (see --runner)", pool.runnerPath);
      return 2;
    }
    spdlog::info("{} evaluation workers ({}), {} CPU(s) each{}", pool.workers, pool.runnerPath, pool.cpusPerWorker,
                 pool.pin ? ", pinned" : "");
    if (!absl::GetFlag(FLAGS_sandbox_workers)) pool.extraArgs.push_back("--sandbox=false");
    auto workers = std::make_unique<mlir_rl::runners::WorkerPool>(pool);
    if (absl::GetFlag(FLAGS_sandbox_workers)) {
      mlir_rl::runners::SandboxCheck check = workers->checkSandbox();
      std::string first = check.output.substr(0, check.output.find('\n'));
      if (check.contained)
        spdlog::info("evaluation workers {}", first);
      else
        spdlog::warn("evaluation workers are NOT fully sandboxed:\n{}", check.output);
    } else {
      spdlog::warn("--sandbox_workers=false: evaluation workers run with the server's user and privileges");
    }
    evaluatorBinary = pool.runnerPath;
    poolPtr = workers.get();
    executor = std::move(workers);
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
    if (absl::Status pinned = mlir_rl::support::pinCallingThreadTo(list); !pinned.ok()) {
      spdlog::error("--rpc_cpus: {}", std::string(pinned.message()));
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
  {
    // A cached time is only as good as the code that measured it: the file is keyed by the machine and by a digest
    // of the evaluator's binary (a rebuild with another lowering or timing loop starts a new file).
    std::string dir = absl::GetFlag(FLAGS_cache_dir);
    bool automatic = dir == "auto";
    if (automatic) {
      if (const char *env = std::getenv("MLIR_RL_CACHE_DIR"))
        dir = env;
      else if (const char *xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg)
        dir = absl::StrCat(xdg, "/mlir-rl");
      else if (const char *home = std::getenv("HOME"); home && *home)
        dir = absl::StrCat(home, "/.cache/mlir-rl");
      else
        dir.clear();
    }
    if (!dir.empty()) {
      std::string build = "unknown";
      if (auto bytes = llvm::MemoryBuffer::getFile(evaluatorBinary, /*IsText=*/false, /*RequiresNullTerminator=*/false))
        build = absl::StrCat(absl::Hex(llvm::xxh3_64bits((*bytes)->getBuffer()), absl::kZeroPad16));
      std::string identity = absl::StrCat(mlir_rl::support::machineIdentity(), " | evaluator ", build);
      if (absl::Status s = evaluator.persistTo(dir, identity); !s.ok()) {
        if (!automatic) {
          spdlog::error("{}", std::string(s.message()));
          return 2;
        }
        spdlog::warn("evaluation cache kept in memory only: {}", std::string(s.message()));
      } else {
        spdlog::info("evaluation cache persisted under {} (evaluator build {})", dir, build);
      }
    }
  }
  mlir_rl::server::ServiceLimits limits;
  limits.sessions.maxSessions = static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_max_sessions)));
  limits.sessions.maxPerClient = absl::GetFlag(FLAGS_max_sessions_per_client) > 0
                                     ? static_cast<size_t>(absl::GetFlag(FLAGS_max_sessions_per_client))
                                     : limits.sessions.maxSessions;
  limits.sessions.idleTimeout = seconds(std::max(0.0, absl::GetFlag(FLAGS_session_idle_timeout_s)));
  limits.sessions.evictableAfter = seconds(std::max(0.0, absl::GetFlag(FLAGS_evict_idle_after_s)));
  limits.maxActionsPerStep = absl::GetFlag(FLAGS_max_actions_per_step);
  limits.uploadIdleTimeout = seconds(std::max(0.0, absl::GetFlag(FLAGS_upload_idle_timeout_s)));
  limits.logInterval = seconds(std::max(0.0, absl::GetFlag(FLAGS_log_interval_s)));
  // Leases are checked often enough to expire within a tenth of their timeout (tests use short ones).
  double shortest = 10;
  for (double t : {absl::GetFlag(FLAGS_session_idle_timeout_s), absl::GetFlag(FLAGS_upload_idle_timeout_s)})
    if (t > 0) shortest = std::min(shortest, t / 10);
  limits.housekeepingInterval = seconds(std::max(0.05, shortest));
  mlir_rl::server::EnvService service(&benchmarks, &evaluator, limits, std::move(auth), poolPtr);
  std::unique_ptr<mlir_rl::server::MetricsEndpoint> metricsEndpoint;
  if (int metricsPort = absl::GetFlag(FLAGS_metrics_port); metricsPort > 0) {
    std::string error;
    metricsEndpoint = mlir_rl::server::MetricsEndpoint::start(
        absl::GetFlag(FLAGS_metrics_address), metricsPort, [&service] { return service.metrics().str(); }, error);
    if (!metricsEndpoint) {
      spdlog::error("{}", error);
      return 2;
    }
    spdlog::info("metrics at http://{}:{}/metrics", absl::GetFlag(FLAGS_metrics_address), metricsEndpoint->port());
  }

  // Our own health service (grpc.health.v1 Check): gRPC's default one costs every call tens of microseconds here.
  mlir_rl::server::HealthService health(mlir_rl::v1::MlirRlEnv::service_full_name());
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  std::string address = absl::StrCat(absl::GetFlag(FLAGS_address), ":", absl::GetFlag(FLAGS_port));
  builder.AddListeningPort(address, credentials, &port);
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
  spdlog::info("mlir-rl-server listening on {}:{} ({}{})", absl::GetFlag(FLAGS_address), port,
               absl::GetFlag(FLAGS_tls_cert).empty() ? "plaintext" : "TLS", authenticated ? ", authenticated" : "");
  if (std::string portFile = absl::GetFlag(FLAGS_port_file); !portFile.empty()) {
    // Write then rename, so a reader never sees a partial file.
    std::string tmp = portFile + ".tmp";
    std::ofstream(tmp) << port << "\n";
    std::rename(tmp.c_str(), portFile.c_str());
  }
  serveUntilSignalled(server.get(), &health, &service, executor.get(), absl::GetFlag(FLAGS_drain_grace_s));
  spdlog::info("stopped ({} sessions open at shutdown)", service.numSessions());
  return 0;
}
