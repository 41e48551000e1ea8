// mlir-rl-perf: figures, not assertions. Starts real mlir-rl-server processes on loopback ports and measures over
// real gRPC, as a separate agent process would: Reset latency, non-evaluating Step latency by action type, cache-hit
// evaluation latency, a random policy's steps, idle-session memory; in this process: the environment's own share of
// a step, compile time (lower + JIT) per candidate over random masked schedules, evaluation spread and throughput.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <csignal>
#include <filesystem>

#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <grpcpp/grpcpp.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir_rl/v1/env.grpc.pb.h"
#include "spdlog/spdlog.h"

#include "env/ActionSpace.h"
#include "env/Benchmark.h"
#include "env/Evaluation.h"
#include "env/Session.h"
#include "env/StateCache.h"
#include "runners/WorkerPool.h"
#include "server/Convert.h"
#include "server/GrpcSetup.h"
#include "support/Affinity.h"
#include "support/Context.h"
#include "support/Target.h"

ABSL_FLAG(int, iterations, 300, "Reset/Step iterations for the latency figures");
ABSL_FLAG(std::string, latency_benchmark, "benchmark://nn-ops/matmul_64x64x64_f32",
          "benchmark of the latency and env figures (its ops must accept the scripted actions)");
ABSL_FLAG(int, schedules_per_benchmark, 4, "random schedules compiled per benchmark for the compile-time figure");
ABSL_FLAG(std::string, benchmarks_dir, MLIR_RL_BENCHMARKS_DIR, "benchmarks directory");
ABSL_FLAG(std::string, compile_dataset, "models,lqcd",
          "comma-separated datasets whose benchmarks the compile-time figure samples (default: the eval split "
          "without models-full, whose benchmarks are whole networks)");
ABSL_FLAG(int, compile_benchmarks, 12, "benchmarks of those datasets sampled (evenly spaced by name, 0 = all)");
ABSL_FLAG(int, compile_seed, 42, "seed of the random schedules of the compile-time figure");
ABSL_FLAG(int, slowest, 10, "slowest candidates listed after the compile-time figure");
ABSL_FLAG(std::string, dump_slowest_dir, "",
          "if set, the IR (and actions) of the slowest candidates are written there as slowest_<rank>.mlir");
ABSL_FLAG(std::string, compile_filter, "", "only benchmarks whose URI contains this (compile-time figure)");
ABSL_FLAG(std::string, dump_failures_dir, "",
          "if set, the IR (and actions) of candidates that failed to compile or run are written there");
ABSL_FLAG(std::string, cpus, "",
          "pin this process (the client) to these CPUs and start the servers with --rpc_cpus on the same CPUs, e.g. "
          "0: the latency figures with the agent and the server's RPC threads on one core");
ABSL_FLAG(std::string, server_bin, "", "mlir-rl-server to measure (default: next to this executable)");
ABSL_FLAG(int, spread_evaluations, 20, "repeated evaluations of one candidate for the spread figure");
ABSL_FLAG(int, throughput_candidates, 16, "distinct candidates evaluated for the 1-vs-2-worker throughput figure");
ABSL_FLAG(int, idle_sessions, 1000, "idle sessions for the memory figure");
ABSL_FLAG(std::string, sections, "latency,policy,env,compile,workers,memory",
          "comma-separated sections to run: latency (gRPC), policy (random-policy steps over gRPC), env (in-process "
          "step work), compile, workers, memory");
ABSL_FLAG(std::string, idle_benchmark, "benchmark://models/resnet18_layer1_0_conv1", "benchmark of the idle sessions");

namespace v1 = mlir_rl::v1;
using Clock = std::chrono::steady_clock;

namespace {

struct Stats {
  std::vector<double> values;
  void add(double v) { values.push_back(v); }
  double q(double p) {
    if (values.empty()) return 0;
    std::sort(values.begin(), values.end());
    return values[static_cast<size_t>(p * (values.size() - 1) + 0.5)];
  }
};

double usSince(Clock::time_point t) { return std::chrono::duration<double, std::micro>(Clock::now() - t).count(); }

void report(const char *name, Stats &s, const char *unit, double scale = 1.0) {
  std::printf("%-48s n=%-5zu p50 %9.3f %s   p99 %9.3f %s   max %9.3f %s\n", name, s.values.size(), s.q(0.5) / scale,
              unit, s.q(0.99) / scale, unit, s.q(1.0) / scale, unit);
}

// Microseconds one unary call takes, made with a fresh client context.
template <typename Call>
double timeCall(Call call) {
  grpc::ClientContext context;
  auto t = Clock::now();
  call(&context);
  return usSince(t);
}

// One action for `session`, asking (like the Python client) only for the tensors changed since observation `since`.
v1::StepRequest stepRequest(const std::string &session, const std::vector<int64_t> &values, uint64_t since) {
  v1::StepRequest request;
  request.set_session_id(session);
  v1::Action *one = request.add_actions();
  for (int64_t v : values) one->add_values(v);
  request.mutable_observation()->set_since(since);
  return request;
}

std::vector<int64_t> action(int type, std::vector<int64_t> tileChoices = {}, int64_t pointer = 0) {
  std::vector<int64_t> v(14, 0);
  v[0] = type;
  for (size_t i = 0; i < tileChoices.size(); ++i) v[1 + i] = tileChoices[i];
  v[13] = pointer;
  return v;
}

constexpr size_t kTransitionBudget = 256u << 20;  // the server's default (--transition_cache_mb)

// Non-evaluating steps of a random masked policy over a spread of built-in benchmarks, as a training run sees them:
// delta observations, the transition cache on (most states are new at first, the first steps of each episode recur).
void measureRandomPolicy(v1::MlirRlEnv::Stub &stub, mlir_rl::env::BenchmarkRegistry &benchmarks, int steps) {
  std::vector<std::string> uris;
  for (const std::string &uri : benchmarks.uris())
    if (uri.find("nn-ops/") != std::string::npos || uri.find("models/resnet18") != std::string::npos)
      uris.push_back(uri);
  std::mt19937_64 rng(7);
  Stats all, applied;
  std::map<std::string, Stats> byType;
  int episodes = 0;
  while (static_cast<int>(all.values.size()) < steps) {
    v1::ResetRequest rq;
    rq.set_benchmark(uris[std::uniform_int_distribution<size_t>(0, uris.size() - 1)(rng)]);
    v1::ResetReply rr;
    grpc::ClientContext c0;
    if (!stub.Reset(&c0, rq, &rr).ok()) std::exit(1);
    ++episodes;
    std::map<std::string, std::string> tensors;  // the client's merged copy of the observation
    auto take = [&](const v1::Observation &o) {
      if (!o.delta()) tensors.clear();
      for (const v1::Tensor &t : o.tensors()) tensors[t.name()] = t.data();
    };
    take(rr.observation());
    uint64_t last = rr.observation().id();
    bool done = rr.terminated() || rr.truncated();
    while (!done) {
      auto pick = [&](const std::string &mask, size_t offset, size_t n) {
        std::vector<int64_t> legal;
        for (size_t v = 0; v < n; ++v)
          if (mask[offset + v]) legal.push_back(static_cast<int64_t>(v));
        return legal.empty() ? 0 : legal[std::uniform_int_distribution<size_t>(0, legal.size() - 1)(rng)];
      };
      const std::string &types = tensors["mask_type"], &tiles = tensors["mask_tiles"],
                        &pointer = tensors["mask_interchange"];
      std::vector<int64_t> a{pick(types, 0, types.size())};
      size_t K = tiles.size() / 12;
      for (size_t i = 0; i < 12; ++i) a.push_back(pick(tiles, i * K, K));
      a.push_back(pick(pointer, 0, pointer.size()));
      v1::StepRequest sq = stepRequest(rr.session_id(), a, last);
      v1::StepReply sr;
      grpc::ClientContext c;
      auto t = Clock::now();
      grpc::Status status = stub.Step(&c, sq, &sr);
      double us = usSince(t);
      if (!status.ok()) {
        std::fprintf(stderr, "random policy: %s\n", status.error_message().c_str());
        std::exit(1);
      }
      take(sr.observation());
      last = sr.observation().id();
      done = sr.terminated() || sr.truncated();
      if (sr.outcomes(0).has_evaluation()) continue;  // an evaluating step: not this figure
      all.add(us);
      applied.add(sr.outcomes(0).apply_ms() * 1000.0);
      byType[mlir_rl::env::actionTypeName(static_cast<int>(a[0]))].add(us);  // the registry's names, all types
    }
    v1::CloseRequest cq;
    cq.set_session_id(rr.session_id());
    v1::CloseReply cr;
    grpc::ClientContext c1;
    stub.Close(&c1, cq, &cr);
  }
  std::printf(
      "\n== non-evaluating steps of a random masked policy (%d episodes over %zu benchmarks; server with its "
      "transition cache on: mostly new states)%s\n",
      episodes, uris.size(), absl::GetFlag(FLAGS_cpus).empty() ? "" : ", client and server on one core");
  report("Step, all action types", all, "us");
  report("  of which applying the action (server)", applied, "us");
  for (auto &[name, stats] : byType) report(("  " + name).c_str(), stats, "us");
}

// A real mlir-rl-server process on a free loopback port (the figures an agent in another process sees). It dies with
// this process, and is stopped with SIGTERM when this object goes.
class ServerProcess {
 public:
  explicit ServerProcess(std::vector<std::string> extraArgs) {
    std::string binary = absl::GetFlag(FLAGS_server_bin);
    if (binary.empty())
      binary = (std::filesystem::read_symlink("/proc/self/exe").parent_path() / "mlir-rl-server").string();
    char dirTemplate[] = "/tmp/mlir-rl-perf-XXXXXX";
    if (!mkdtemp(dirTemplate)) fail("cannot create a temporary directory");
    dir_ = dirTemplate;
    std::string portFile = dir_ + "/port";
    std::vector<std::string> args = {binary,
                                     "--port=0",
                                     "--port_file=" + portFile,
                                     "--log_level=warn",
                                     "--cache_dir=",
                                     "--benchmarks_dir=" + absl::GetFlag(FLAGS_benchmarks_dir)};
    if (!absl::GetFlag(FLAGS_cpus).empty()) args.push_back("--rpc_cpus=" + absl::GetFlag(FLAGS_cpus));
    args.insert(args.end(), extraArgs.begin(), extraArgs.end());
    // Everything the child needs is built before fork: in a multithreaded parent the child may only make
    // async-signal-safe calls (no allocation) until it execs.
    std::vector<char *> argv;
    for (std::string &a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    cpu_set_t all;  // the server takes its CPUs from --rpc_cpus and its workers pin themselves
    CPU_ZERO(&all);
    for (int c = 0; c < CPU_SETSIZE; ++c) CPU_SET(c, &all);
    pid_ = fork();
    if (pid_ < 0) fail("fork failed");
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      sched_setaffinity(0, sizeof(all), &all);
      execv(argv[0], argv.data());
      _exit(127);
    }
    for (int waited = 0; port_ == 0; waited += 20) {
      std::ifstream in(portFile);
      if (!(in >> port_)) port_ = 0;
      int status = 0;
      if (port_ == 0 && (waitpid(pid_, &status, WNOHANG) == pid_ || waited > 120000))
        fail("the server (" + binary + ") did not start");
      if (port_ == 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    stub_ = v1::MlirRlEnv::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(port_), grpc::InsecureChannelCredentials()));
  }
  ~ServerProcess() {
    stub_.reset();
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
    std::filesystem::remove_all(dir_);
  }
  v1::MlirRlEnv::Stub &stub() { return *stub_; }
  pid_t pid() const { return pid_; }

 private:
  [[noreturn]] static void fail(const std::string &what) {
    std::fprintf(stderr, "mlir-rl-perf: %s\n", what.c_str());
    std::exit(1);
  }
  std::string dir_;
  pid_t pid_ = -1;
  int port_ = 0;
  std::unique_ptr<v1::MlirRlEnv::Stub> stub_;
};

bool wants(const char *section) {
  for (absl::string_view s : absl::StrSplit(absl::GetFlag(FLAGS_sections), ','))
    if (s == section) return true;
  return false;
}

// The environment's share of a step, without RPC: Session::step, the observation and its translation to protobuf,
// as the server does them for Step. The totals cover the first episode's steps (the figure tracked since the section
// exists); the second episode (the latency section's TILED_FUSION then UNROLL) runs after all of them and is
// reported per action only.
void measureEnvironmentWork(mlir_rl::env::BenchmarkRegistry &benchmarks, mlir_rl::env::EvaluationService &evaluator,
                            const std::string &uri, int iterations, const char *label) {
  auto bench = benchmarks.get(uri);
  if (!bench.ok()) std::exit(1);
  Stats step, observation, total;
  std::map<std::string, Stats> byAction;
  using Script = std::vector<std::pair<const char *, std::vector<int64_t>>>;
  const std::vector<std::pair<bool, Script>> episodes = {
      {true,
       {
           {"TILING", action(1, {6, 6, 6})},
           {"INTERCHANGE level pointer", action(3, {}, 2)},
           {"INTERCHANGE completing", action(3, {}, 0)},
           {"TILED_PARALLELIZATION", action(2, {0, 4, 4})},
       }},
      {false,
       {
           {"TILED_FUSION (2nd episode)", action(5, {4, 4, 4})},
           {"UNROLL (2nd episode)", action(7, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2})},
       }},
  };
  for (const auto &[counted, script] : episodes) {
    for (int i = 0; i < iterations; ++i) {
      auto session = mlir_rl::env::Session::create(*bench, {}, 0, &evaluator);
      if (!session.ok()) std::exit(1);
      for (const auto &[name, a] : script) {
        auto t0 = Clock::now();
        auto r = (*session)->step(a);
        double stepUs = usSince(t0);
        if (!r.ok() || !r->applied) std::exit(1);
        auto t1 = Clock::now();
        v1::Observation out;
        mlir_rl::server::ObservationLog log;
        (void)mlir_rl::server::fillObservation(**session, {}, log, out);
        double observeUs = usSince(t1);
        if (counted) {
          step.add(stepUs);
          observation.add(observeUs);
          total.add(stepUs + observeUs);
        }
        byAction[name].add(stepUs + observeUs);
      }
    }
  }
  std::printf("\n== environment work per non-evaluating step, in process (no RPC; %s; %s)\n", uri.c_str(), label);
  report("Session::step", step, "us");
  report("observation (features, masks, protobuf)", observation, "us");
  report("step + observation", total, "us");
  std::printf("  per action, step + observation:\n");
  for (auto &[name, s] : byAction) report(("  " + name).c_str(), s, "us");
}

}  // namespace

int main(int argc, char **argv) {
  absl::ParseCommandLine(argc, argv);
  mlir_rl::server::configureGrpcProcess();
  if (std::string list = absl::GetFlag(FLAGS_cpus); !list.empty()) {
    if (absl::Status pinned = mlir_rl::support::pinCallingThreadTo(list); !pinned.ok()) {
      std::fprintf(stderr, "--cpus: %s\n", std::string(pinned.message()).c_str());
      return 2;
    }
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // figures appear as they are measured, even if the run is cut short
  spdlog::set_level(spdlog::level::warn);
  auto context = mlir_rl::support::createContext();
  mlir_rl::env::BenchmarkRegistry benchmarks(context.get(), absl::GetFlag(FLAGS_benchmarks_dir));
  if (!benchmarks.scan().ok()) return 2;
  mlir_rl::runners::TimingOptions timing;
  timing.budgetSeconds = 0.5;
  // Sessions made in this process (env section, candidates of the workers section) evaluate in a worker process, as
  // the server's do; the RPC sections measure separate server processes.
  mlir_rl::runners::WorkerPoolOptions serviceWorkers;
  serviceWorkers.runnerPath = mlir_rl::runners::WorkerPool::defaultRunnerPath();
  serviceWorkers.workers = 1;
  mlir_rl::runners::WorkerPool executor(serviceWorkers);
  mlir_rl::env::EvaluationService evaluator(&executor, timing);
  std::printf("mlir-rl-perf: host CPU %s%s\n\n", mlir_rl::support::hostCpuName().c_str(),
              absl::GetFlag(FLAGS_cpus).empty()
                  ? ""
                  : (", client on CPU(s) " + absl::GetFlag(FLAGS_cpus) + ", servers' RPC threads too").c_str());

  int wrong = 0;
  const std::string uri = absl::GetFlag(FLAGS_latency_benchmark);
  // --- Latencies over loopback gRPC (C++ client) ---
  // Each latency figure twice: first with the transition cache off (every step applies its transformation, as on a
  // state no session has reached before), then on (the same steps again: states already reached).
  for (bool revisit : {false, true}) {
    if (!wants("latency")) break;
    ServerProcess server({"--workers=1", revisit ? "--transition_cache_mb=256" : "--transition_cache_mb=0"});
    v1::MlirRlEnv::Stub *stub = &server.stub();
    Stats reset, stepTiling, stepPointer, stepInterchange, stepParallel, observe, observeSmall, fork, cacheHit,
        stepFusion, stepUnroll;
    for (int i = 0; i < absl::GetFlag(FLAGS_iterations); ++i) {
      v1::ResetRequest rq;
      rq.set_benchmark(uri);
      v1::ResetReply rr;
      grpc::ClientContext c0;
      auto t = Clock::now();
      if (!stub->Reset(&c0, rq, &rr).ok()) return 1;
      reset.add(usSince(t));
      // Like the Python client, steps ask only for the tensors that changed since the last observation.
      uint64_t lastObservation = rr.observation().id();
      auto step = [&](const std::vector<int64_t> &a, Stats &into) {
        v1::StepRequest sq = stepRequest(rr.session_id(), a, lastObservation);
        v1::StepReply sr;
        grpc::ClientContext c;
        auto t1 = Clock::now();
        grpc::Status s = stub->Step(&c, sq, &sr);
        lastObservation = sr.observation().id();
        into.add(usSince(t1));
        if (!s.ok() || !sr.outcomes(0).applied()) {
          std::fprintf(stderr, "step failed: %s %s\n", s.error_message().c_str(),
                       sr.outcomes_size() ? sr.outcomes(0).failure_reason().c_str() : "");
          std::exit(1);
        }
      };
      step(action(1, {6, 6, 6}), stepTiling);    // TILING [32, 32, 32]
      step(action(3, {}, 2), stepPointer);       // INTERCHANGE: first level pointer (no transformation yet)
      step(action(3, {}, 0), stepInterchange);   // INTERCHANGE: completes -> generalize + interchange
      step(action(2, {0, 4, 4}), stepParallel);  // TILED_PARALLELIZATION on the interchanged op
      {
        v1::ObserveRequest oq;
        oq.set_session_id(rr.session_id());
        v1::ObserveReply orp;
        observe.add(timeCall([&](grpc::ClientContext *c) { stub->Observe(c, oq, &orp); }));
        // The same with one small tensor: the difference is what the full observation's bytes cost on the wire.
        oq.mutable_observation()->add_names("progress");
        observeSmall.add(timeCall([&](grpc::ClientContext *c) { stub->Observe(c, oq, &orp); }));
      }
      {
        v1::ForkRequest fq;
        fq.set_session_id(rr.session_id());
        v1::ForkReply fr;
        fork.add(timeCall([&](grpc::ClientContext *c) { stub->Fork(c, fq, &fr); }));
        v1::CloseRequest cq;
        cq.set_session_id(fr.session_id());
        v1::CloseReply cr;
        timeCall([&](grpc::ClientContext *c) { stub->Close(c, cq, &cr); });
      }
      // The terminal step evaluates; after the first iteration the same candidate is a cache hit.
      Stats terminal;
      step(action(0), terminal);
      if (i > 0) cacheHit.add(terminal.values[0]);
      v1::CloseRequest cq;
      cq.set_session_id(rr.session_id());
      v1::CloseReply cr;
      grpc::ClientContext c3;
      stub->Close(&c3, cq, &cr);
      // A second episode (never evaluated): TILED_FUSION [8, 8, 8] fuses the fill into the forall, then UNROLL of
      // the k loop (8 trips) by 2; UNROLL's factor is in head tile_11 (value 2 = size 2).
      grpc::ClientContext c4;
      if (!stub->Reset(&c4, rq, &rr).ok()) return 1;
      lastObservation = rr.observation().id();
      step(action(5, {4, 4, 4}), stepFusion);
      step(action(7, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2}), stepUnroll);
      cq.set_session_id(rr.session_id());
      grpc::ClientContext c5;
      stub->Close(&c5, cq, &cr);
    }
    Stats floor;
    for (int i = 0; i < absl::GetFlag(FLAGS_iterations); ++i) {
      v1::GetVersionReply vr;
      floor.add(timeCall([&](grpc::ClientContext *c) { stub->GetVersion(c, {}, &vr); }));
    }
    std::printf("\n== latency over loopback gRPC, C++ client (matmul 64^3), %s%s\n",
                revisit ? "states reached before (transition cache hits)" : "new states (transition cache off)",
                absl::GetFlag(FLAGS_cpus).empty() ? "" : ", client and server on one core");
    report("GetVersion (the RPC floor: no environment work)", floor, "us");
    report("Reset", reset, "us");
    report("Step TILING (non-evaluating)", stepTiling, "us");
    report("Step INTERCHANGE level pointer (no transform)", stepPointer, "us");
    report("Step INTERCHANGE completing (generalize+permute)", stepInterchange, "us");
    report("Step TILED_PARALLELIZATION (non-evaluating)", stepParallel, "us");
    report("Step TILED_FUSION (non-evaluating)", stepFusion, "us");
    report("Step UNROLL (non-evaluating)", stepUnroll, "us");
    report("Observe (all tensors)", observe, "us");
    report("Observe (tensor 'progress' only)", observeSmall, "us");
    report("Fork", fork, "us");
    report("Step terminal, evaluation served from cache", cacheHit, "us");
  }
  if (wants("policy")) {
    ServerProcess server({"--workers=1"});
    measureRandomPolicy(server.stub(), benchmarks, absl::GetFlag(FLAGS_iterations) * 5);
  }
  if (wants("env"))
    for (bool revisit : {false, true}) {
      mlir_rl::env::TransitionCache::shared().setBudget(revisit ? kTransitionBudget : 0);
      measureEnvironmentWork(benchmarks, evaluator, uri, absl::GetFlag(FLAGS_iterations),
                             revisit ? "states reached before" : "new states");
    }
  mlir_rl::env::TransitionCache::shared().setBudget(kTransitionBudget);

  // --- Compile time per candidate: random masked schedules, evaluated by worker processes as the server does ---
  if (wants("compile")) {
    std::printf("\n== compile time per candidate (random masked schedules, FINAL evaluation, worker processes)\n");
    mlir_rl::runners::WorkerPoolOptions compileWorkers;
    compileWorkers.runnerPath = mlir_rl::runners::WorkerPool::defaultRunnerPath();
    compileWorkers.workers = 1;
    mlir_rl::runners::WorkerPool compilePool(compileWorkers);
    mlir_rl::env::EvaluationService workerEvaluator(&compilePool, timing);
    std::map<std::string, int> failureKinds;
    Stats lower, jit, total;
    std::mt19937_64 rng(absl::GetFlag(FLAGS_compile_seed));
    int failed = 0, evaluated = 0, timedOut = 0;
    const double kTimeoutFloorMs = mlir_rl::env::TimeoutPolicy().floorSeconds * 1000;
    struct Candidate {
      double lowerMs, jitMs;
      std::string benchmark, actions, ir;
    };
    std::vector<Candidate> candidates;
    std::set<std::string> datasets;
    for (absl::string_view d : absl::StrSplit(absl::GetFlag(FLAGS_compile_dataset), ',', absl::SkipEmpty()))
      datasets.insert(std::string(d));
    std::printf("datasets %s\n", absl::StrJoin(datasets, ",").c_str());
    std::vector<std::string> sampled;
    for (const std::string &b : benchmarks.uris()) {
      auto bench = benchmarks.get(b);
      if (bench.ok() && datasets.count((*bench)->info().dataset) &&
          b.find(absl::GetFlag(FLAGS_compile_filter)) != std::string::npos)
        sampled.push_back(b);
    }
    if (int keep = absl::GetFlag(FLAGS_compile_benchmarks); keep > 0 && static_cast<int>(sampled.size()) > keep) {
      std::vector<std::string> evenly;
      for (int i = 0; i < keep; ++i) evenly.push_back(sampled[i * sampled.size() / keep]);
      sampled = evenly;
    }
    for (const std::string &b : sampled) {
      auto bench = benchmarks.get(b);
      Stats perBenchmark;
      for (int k = 0; k < absl::GetFlag(FLAGS_schedules_per_benchmark); ++k) {
        auto session = mlir_rl::env::Session::create(*bench, {}, 0, &workerEvaluator);
        if (!session.ok()) return 1;
        auto &s = **session;
        while (!s.done()) {
          mlir_rl::env::ActionMask m = s.mask();
          auto pick = [&](const std::vector<uint8_t> &mask) {
            std::vector<int64_t> legal;
            for (size_t v = 0; v < mask.size(); ++v)
              if (mask[v]) legal.push_back(static_cast<int64_t>(v));
            return legal[std::uniform_int_distribution<size_t>(0, legal.size() - 1)(rng)];
          };
          std::vector<int64_t> a{pick(m.type)};
          for (const auto &row : m.tiles) a.push_back(pick(row));
          a.push_back(pick(m.interchange));
          auto r = s.step(a);
          if (!r.ok()) {
            std::fprintf(stderr, "masked action rejected: %s\n", std::string(r.status().message()).c_str());
            return 1;
          }
          if (r->evaluation && !r->evaluation->cached) {
            ++evaluated;
            const auto &e = *r->evaluation;
            if (!e.ok) {
              (e.failureKind == mlir_rl::runners::FailureKind::WrongResult ? wrong : failed) += 1;
              ++failureKinds[mlir_rl::runners::failureKindName(e.failureKind)];
              if (!e.failure.empty()) std::fprintf(stderr, "  %s: %s\n", b.c_str(), e.failure.substr(0, 300).c_str());
              if (std::string dir = absl::GetFlag(FLAGS_dump_failures_dir); !dir.empty()) {
                std::ofstream out(dir + "/failure_" + std::to_string(evaluated) + ".mlir");
                out << "// " << b << " " << mlir_rl::runners::failureKindName(e.failureKind) << " actions";
                for (const auto &act : s.actions()) out << " [" << absl::StrJoin(act, ",") << "]";
                out << "\n" << s.currentIR();
              }
            }
            std::string actions;
            for (const auto &act : s.actions()) actions += "[" + absl::StrJoin(act, ",") + "]";
            if (e.failureKind == mlir_rl::runners::FailureKind::Timeout) {
              // The worker was killed, so the compile time is unknown: counted as the time-out floor (a lower bound
              // when the compile was what hung).
              ++timedOut;
              total.add(kTimeoutFloorMs);
              perBenchmark.add(kTimeoutFloorMs);
              candidates.push_back({0, kTimeoutFloorMs, b, "(timed out) " + actions, s.currentIR()});
              continue;
            }
            lower.add(e.lowerMs);
            jit.add(e.jitMs);
            total.add(e.lowerMs + e.jitMs);
            perBenchmark.add(e.lowerMs + e.jitMs);
            candidates.push_back({e.lowerMs, e.jitMs, b, actions, s.currentIR()});
          }
        }
      }
      std::printf("  %-52s candidates %-3zu compile p50 %7.1f ms  max %7.1f ms\n", b.c_str(),
                  perBenchmark.values.size(), perBenchmark.q(0.5), perBenchmark.q(1.0));
    }
    report("lower (MLIR passes)", lower, "ms");
    report("JIT (LLVM O3 codegen)", jit, "ms");
    report("compile = lower + JIT", total, "ms");
    if (timedOut > 0)
      std::printf("%d candidates timed out: compile time unknown, counted as %.0f ms in the compile figure\n", timedOut,
                  kTimeoutFloorMs);
    std::printf("candidates evaluated %d, wrong results %d, failed to compile/run %d", evaluated, wrong, failed);
    for (const auto &[kind, n] : failureKinds) std::printf(" [%s: %d]", kind.c_str(), n);
    std::printf("\n");
    std::sort(candidates.begin(), candidates.end(),
              [](const Candidate &a, const Candidate &b) { return a.lowerMs + a.jitMs > b.lowerMs + b.jitMs; });
    const std::string dumpDir = absl::GetFlag(FLAGS_dump_slowest_dir);
    for (int i = 0; i < std::min<int>(absl::GetFlag(FLAGS_slowest), candidates.size()); ++i) {
      const Candidate &c = candidates[i];
      std::printf("  slowest %2d: lower %7.1f ms  JIT %7.1f ms  %s %s\n", i + 1, c.lowerMs, c.jitMs,
                  c.benchmark.c_str(), c.actions.c_str());
      if (!dumpDir.empty()) {
        std::ofstream out(dumpDir + "/slowest_" + std::to_string(i + 1) + ".mlir");
        out << "// " << c.benchmark << " actions " << c.actions << " lower " << c.lowerMs << " ms JIT " << c.jitMs
            << " ms\n"
            << c.ir;
      }
    }
  }

  // --- Worker pool: timing spread and throughput ---
  if (wants("workers")) {
    std::printf("\n== evaluation in worker processes (mlir-rl-runner)\n");
    auto bench = benchmarks.get("benchmark://nn-ops/matmul_256x256x256_f32");
    if (!bench.ok()) return 1;
    auto candidateFor = [&](std::vector<int64_t> tileChoices) {
      auto session = mlir_rl::env::Session::create(*bench, {}, 0, &evaluator);
      std::vector<int64_t> a(14, 0);
      a[0] = 1;
      for (size_t i = 0; i < tileChoices.size(); ++i) a[1 + i] = tileChoices[i];
      (void)(*session)->step(a);
      return (*session)->currentIR();
    };
    mlir_rl::runners::WorkerPoolOptions poolOptions;
    poolOptions.runnerPath = mlir_rl::runners::WorkerPool::defaultRunnerPath();
    {
      poolOptions.workers = 1;
      mlir_rl::runners::WorkerPool pool(poolOptions);
      mlir_rl::runners::ExecRequest rq;
      rq.candidateIR = candidateFor({4, 5, 1});  // tiled 8x16x1, not vectorized
      rq.referenceIR = (*bench)->taggedText();
      rq.timing = timing;
      Stats medians;
      for (int i = 0; i < absl::GetFlag(FLAGS_spread_evaluations); ++i) {
        auto r = pool.execute(rq);
        if (!r.ok()) {
          std::fprintf(stderr, "spread evaluation failed: %s\n", r.message.c_str());
          return 1;
        }
        medians.add(r.timing.medianNs);
      }
      double mean = 0, var = 0;
      for (double v : medians.values) mean += v;
      mean /= medians.values.size();
      for (double v : medians.values) var += (v - mean) * (v - mean);
      var /= std::max<size_t>(1, medians.values.size() - 1);
      std::printf("%-48s n=%-5zu mean %.3f ms  CV %.2f %%  (min %.3f, max %.3f ms)\n",
                  "repeated evaluations of one candidate", medians.values.size(), mean / 1e6,
                  100.0 * std::sqrt(var) / mean, medians.q(0) / 1e6, medians.q(1) / 1e6);
    }
    {
      std::vector<std::string> candidates;
      const std::vector<std::vector<int64_t>> tilings = {{4, 5, 1}, {3, 5, 1}, {4, 4, 1}, {5, 4, 2}, {3, 3, 3},
                                                         {6, 6, 6}, {4, 6, 2}, {2, 5, 1}, {5, 5, 5}, {3, 4, 4}};
      for (int i = 0; i < absl::GetFlag(FLAGS_throughput_candidates); ++i)
        candidates.push_back(candidateFor(tilings[i % tilings.size()]));
      // Alternating 1- and 2-worker rounds, so that a noisy stretch of the shared machine hits both sides; the figure
      // is the median ratio.
      Stats ratios;
      for (int round = 0; round < 3; ++round) {
        double rate[3] = {0, 0, 0};
        for (int workers : {1, 2}) {
          poolOptions.workers = workers;
          mlir_rl::runners::WorkerPool pool(poolOptions);
          // Spawn and warm every worker's reference outside the measured part.
          {
            std::vector<std::thread> warm;
            for (int w = 0; w < workers; ++w)
              warm.emplace_back([&] {
                mlir_rl::runners::ExecRequest rq;
                rq.candidateIR = rq.referenceIR = (*bench)->taggedText();
                rq.time = false;
                pool.execute(rq);
              });
            for (auto &t : warm) t.join();
          }
          std::atomic<size_t> next{0};
          auto t0 = Clock::now();
          std::vector<std::thread> clients;
          for (int c = 0; c < workers; ++c)
            clients.emplace_back([&] {
              for (size_t i = next++; i < candidates.size(); i = next++) {
                mlir_rl::runners::ExecRequest rq;
                rq.candidateIR = candidates[i];
                rq.referenceIR = (*bench)->taggedText();
                rq.timing = timing;
                pool.execute(rq);
              }
            });
          for (auto &t : clients) t.join();
          double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
          rate[workers] = candidates.size() / seconds;
          std::printf("%-48s %zu candidates in %.2f s: %.2f evaluations/s\n",
                      workers == 1 ? "throughput, 1 worker" : "throughput, 2 workers", candidates.size(), seconds,
                      rate[workers]);
        }
        ratios.add(rate[2] / rate[1]);
      }
      std::string rounds = absl::StrJoin(
          ratios.values, ", ", [](std::string *out, double r) { absl::StrAppend(out, absl::StrFormat("%.2f", r)); });
      std::printf("%-48s %.2fx (median of %zu rounds, in order: %s)\n", "throughput ratio 2 workers / 1 worker",
                  ratios.q(0.5), ratios.values.size(), rounds.c_str());
    }
  }
  // --- Memory of idle sessions ---
  if (wants("memory")) {
    {
      ServerProcess server({"--workers=1"});
      v1::MlirRlEnv::Stub *stub = &server.stub();
      auto rss = [&] {
        std::ifstream status("/proc/" + std::to_string(server.pid()) + "/status");
        std::string line;
        while (std::getline(status, line))
          if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;  // MiB
        return 0.0;
      };
      std::vector<std::string> ids;
      double before = rss();
      for (int i = 0; i < absl::GetFlag(FLAGS_idle_sessions); ++i) {
        v1::ResetRequest rq;
        rq.set_benchmark(absl::GetFlag(FLAGS_idle_benchmark));
        v1::ResetReply rr;
        grpc::ClientContext c;
        if (!stub->Reset(&c, rq, &rr).ok()) return 1;
        ids.push_back(rr.session_id());
      }
      double after = rss();
      std::printf("\n== memory\n%-48s %zu sessions of %s: server RSS %.1f MiB (+%.1f MiB, %.1f KiB/session)\n",
                  "idle sessions", ids.size(), absl::GetFlag(FLAGS_idle_benchmark).c_str(), after, after - before,
                  (after - before) * 1024.0 / std::max<size_t>(1, ids.size()));
    }
  }
  return wrong == 0 ? 0 : 1;
}
