// mlir-rl-cli: a C++ client. Lists benchmarks, checks health, runs episodes with a random or heuristic policy and
// prints every step, and searches for schedules (random, greedy, beam, local search) under an evaluation and
// wall-time budget, writing the best as a Transform script and a JSON record; `replay` measures schedules given in
// the short form searches print. Exits non-zero on any error.
#include <sys/utsname.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "Env.h"
#include "Json.h"
#include "Schedules.h"
#include "Search.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "mlir_rl/v1/env.grpc.pb.h"
#include "support/Version.h"

ABSL_FLAG(std::string, server, "127.0.0.1:50051", "server address host:port");
ABSL_FLAG(std::string, benchmark, "benchmark://nn-ops/matmul_512x512x512_f32", "benchmark URI for `episode`");
ABSL_FLAG(std::string, policy, "heuristic",
          "episode policy: random (uniform over unmasked values) or heuristic "
          "(a register tile that lets the op vectorize, then vectorization)");
ABSL_FLAG(uint64_t, seed, 0, "seed of the episode, of the random policy and of the search");
ABSL_FLAG(int, episodes, 1, "episodes to run");
ABSL_FLAG(int, max_steps, 0, "truncate episodes after this many steps (0: no limit)");
ABSL_FLAG(int, timeout_s, 600, "deadline of each RPC in seconds");
ABSL_FLAG(std::string, dataset, "", "dataset filter for `list`");
ABSL_FLAG(std::string, token, "", "bearer token for servers started with --auth_tokens_file (default: $MLIR_RL_TOKEN)");
ABSL_FLAG(std::string, tls_ca, "",
          "connect with TLS, verifying the server against this PEM CA (default: $MLIR_RL_TLS_CA)");
ABSL_FLAG(std::string, tls_cert, "",
          "client certificate (PEM) for TLS servers that require one (default: $MLIR_RL_TLS_CERT)");
ABSL_FLAG(std::string, tls_key, "", "key of --tls_cert (default: $MLIR_RL_TLS_KEY)");
// search
ABSL_FLAG(std::string, strategy, "local", "search strategy: random, greedy, beam, local, heuristic");
ABSL_FLAG(std::string, schedule, "",
          "replay: schedules to measure in the short form searches print, separated by ';' (e.g. "
          "\"T[16,16,1] V; T[8,32,1] V\"; ops the schedule does not reach stay untransformed)");
ABSL_FLAG(int, budget_evals, 200, "search: evaluations (distinct schedules measured) at most (0: no limit)");
ABSL_FLAG(double, budget_s, 0, "search: wall time in seconds, checked before each evaluation batch (0: no limit)");
ABSL_FLAG(int, beam_width, 4, "search: width of the beam");
ABSL_FLAG(double, min_gain, 0.01, "search: relative speed gain a change needs to count as better");
ABSL_FLAG(int, parallel, 2, "search: schedules measured at once (one StepMany; the server's workers run them)");
ABSL_FLAG(int, num_threads, 0, "session option num_threads (OpenMP threads per evaluation; 0: server default, 1)");
ABSL_FLAG(std::string, evaluation_cache, "use",
          "session option evaluation_cache: use (a schedule any session "
          "measured is not measured again), refresh, bypass (always measure)");
ABSL_FLAG(int, completion_ops, 12, "search: later ops the heuristic completes when scoring a partial schedule");
ABSL_FLAG(std::string, out, "",
          "search: write <out>.json (record), <out>.transform.mlir (Transform script of the "
          "best schedule) and <out>.payload.mlir (the benchmark IR the script applies to)");
ABSL_FLAG(bool, verbose, false, "search: print every evaluation (origin, schedule, time) on stderr");
ABSL_FLAG(std::string, progress, "auto",
          "search: progress on stderr: auto (a bar on a terminal, a line every 10 s "
          "otherwise), bar, lines, off");

namespace v1 = mlir_rl::v1;
using namespace mlir_rl::cli;

namespace {

// A flag's value, else the environment variable's, else empty.
std::string setting(const absl::Flag<std::string> &flag, const char *variable) {
  std::string value = absl::GetFlag(flag);
  if (value.empty())
    if (const char *env = std::getenv(variable)) value = env;
  return value;
}

CallSettings callSettings() {
  CallSettings s;
  s.timeoutS = absl::GetFlag(FLAGS_timeout_s);
  s.token = setting(FLAGS_token, "MLIR_RL_TOKEN");
  return s;
}

std::unique_ptr<grpc::ClientContext> ctx() { return makeContext(callSettings()); }

std::string readFile(const std::string &path) {
  std::ifstream in(path);
  if (!in) {
    std::fprintf(stderr, "error: cannot read %s\n", path.c_str());
    std::exit(2);
  }
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::shared_ptr<grpc::ChannelCredentials> credentials() {
  std::string ca = setting(FLAGS_tls_ca, "MLIR_RL_TLS_CA");
  if (ca.empty()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = readFile(ca);
  std::string cert = setting(FLAGS_tls_cert, "MLIR_RL_TLS_CERT"), key = setting(FLAGS_tls_key, "MLIR_RL_TLS_KEY");
  if (!cert.empty()) options.pem_cert_chain = readFile(cert);
  if (!key.empty()) options.pem_private_key = readFile(key);
  return grpc::SslCredentials(options);
}

bool check(const grpc::Status &s, const char *what) {
  if (s.ok()) return true;
  std::fprintf(stderr, "error: %s failed: %s (gRPC code %d)\n", what, s.error_message().c_str(),
               static_cast<int>(s.error_code()));
  return false;
}

int list(v1::MlirRlEnv::Stub &stub) {
  v1::ListBenchmarksRequest req;
  req.set_dataset(absl::GetFlag(FLAGS_dataset));
  v1::ListBenchmarksReply reply;
  if (!check(stub.ListBenchmarks(ctx().get(), req, &reply), "ListBenchmarks")) return 1;
  for (const auto &b : reply.benchmarks())
    std::printf("%-55s ops=%d dtype=%s flops=%lld  %s\n", b.uri().c_str(), b.num_ops(), b.dtype().c_str(),
                static_cast<long long>(b.flops()), b.description().c_str());
  std::printf("%d benchmarks\n", reply.benchmarks_size());
  return reply.benchmarks_size() > 0 ? 0 : 1;
}

// grpc.health.v1 (open even on servers that require tokens: what orchestrators probe), then the version when the
// credentials allow. Exit status 0 when SERVING.
int health(const std::shared_ptr<grpc::Channel> &channel, v1::MlirRlEnv::Stub &stub) {
  auto probe = grpc::health::v1::Health::NewStub(channel);
  grpc::health::v1::HealthCheckResponse answer;
  if (!check(probe->Check(ctx().get(), {}, &answer), "Health/Check")) return 1;
  bool serving = answer.status() == grpc::health::v1::HealthCheckResponse::SERVING;
  std::printf("%s", serving ? "SERVING" : "NOT_SERVING");
  v1::GetVersionReply version;
  grpc::Status s = stub.GetVersion(ctx().get(), {}, &version);
  if (s.ok())
    std::printf(": server %s, protocol %s, MLIR %s, host CPU %s", version.server_version().c_str(),
                version.protocol_version().c_str(), version.mlir_version().c_str(), version.host_cpu().c_str());
  else
    std::printf(" (version: %s)", s.error_message().c_str());
  std::printf("\n");
  return serving ? 0 : 1;
}

// The benchmark's entry in ListBenchmarks (its dataset's list), or an empty one for URIs it does not list.
v1::BenchmarkInfo benchmarkInfo(v1::MlirRlEnv::Stub &stub, const std::string &uri) {
  v1::ListBenchmarksRequest req;
  const std::string scheme = "benchmark://";
  if (uri.rfind(scheme, 0) == 0)
    req.set_dataset(uri.substr(scheme.size(), uri.find('/', scheme.size()) - scheme.size()));
  v1::ListBenchmarksReply reply;
  if (stub.ListBenchmarks(ctx().get(), req, &reply).ok())
    for (const auto &b : reply.benchmarks())
      if (b.uri() == uri || "benchmark://" + b.dataset() + "/" + b.name() == uri) return b;
  return {};
}

v1::SessionOptions sessionOptions() {
  v1::SessionOptions o;
  if (int m = absl::GetFlag(FLAGS_max_steps); m > 0) o.set_max_steps(m);
  if (int t = absl::GetFlag(FLAGS_num_threads); t > 0) o.set_num_threads(t);
  std::string cache = absl::GetFlag(FLAGS_evaluation_cache);
  if (cache == "refresh")
    o.set_evaluation_cache(v1::EVALUATION_CACHE_REFRESH);
  else if (cache == "bypass")
    o.set_evaluation_cache(v1::EVALUATION_CACHE_BYPASS);
  else if (cache != "use")
    throw std::invalid_argument("--evaluation_cache must be use, refresh or bypass");
  return o;
}

int episode(const std::shared_ptr<grpc::Channel> &channel, v1::MlirRlEnv::Stub &stub) {
  std::string policy = absl::GetFlag(FLAGS_policy);
  if (policy != "random" && policy != "heuristic") {
    std::fprintf(stderr, "error: unknown --policy=%s (random or heuristic)\n", policy.c_str());
    return 2;
  }
  std::string uri = absl::GetFlag(FLAGS_benchmark);
  v1::SessionOptions options = sessionOptions();
  std::mt19937_64 rng(absl::GetFlag(FLAGS_seed));
  int failures = 0;
  for (int e = 0; e < absl::GetFlag(FLAGS_episodes); ++e) {
    uint64_t seed = absl::GetFlag(FLAGS_seed) + e;
    // The heuristic asks the server which tilings let the op vectorize, on sessions of its own.
    Env probe(channel, callSettings(), uri, options, seed);
    const Space &space = probe.space();
    Heuristic heuristic(probe, lanesFor(benchmarkInfo(stub, uri).dtype()),
                        options.has_max_vector_elements() ? options.max_vector_elements() : 512);
    v1::ResetRequest reset;
    reset.set_benchmark(uri);
    reset.set_seed(seed);
    *reset.mutable_options() = options;
    v1::ResetReply r;
    auto t0 = std::chrono::steady_clock::now();
    if (!check(stub.Reset(ctx().get(), reset, &r), "Reset")) return 1;
    double resetMs = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::printf("episode %d: session %s on %s (%d ops), reset %.1f ms\n", e, r.session_id().c_str(),
                r.benchmark().c_str(), r.info().num_ops(), resetMs);
    View view = parseView(r.observation(), r.info(), r.terminated(), r.truncated(), space);
    double total = 0;
    Actions taken, plan;
    for (int step = 0; !view.done && step < 10000; ++step) {
      Action action;
      if (policy == "random") {
        action = randomAction(view, space, rng);
      } else {
        if (plan.empty()) plan = heuristic.finishOp(taken);
        if (plan.empty()) plan = {space.make(space.noTransformation)};
        action = plan.front();
        plan.erase(plan.begin());
      }
      v1::StepRequest req;
      req.set_session_id(r.session_id());
      *req.add_actions()->mutable_values() = {action.begin(), action.end()};
      v1::StepReply reply;
      t0 = std::chrono::steady_clock::now();
      if (!check(stub.Step(ctx().get(), req, &reply), "Step")) return 1;
      double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      const v1::StepOutcome &o = reply.outcomes(0);
      std::printf("  step %2d %-28s %-55s reward %+8.4f  %7.1f ms%s%s\n", step, formatAction(action).c_str(),
                  o.description().c_str(), o.reward(), ms,
                  o.applied() ? "" : "  FAILED: ", o.applied() ? "" : o.failure_reason().substr(0, 200).c_str());
      if (o.has_evaluation()) {
        const v1::Evaluation &ev = o.evaluation();
        if (!ev.failure().empty()) {
          std::printf("    evaluation failed: %s\n", ev.failure().c_str());
          ++failures;
        } else {
          std::printf(
              "    evaluated: %.3f ms (reference %.3f ms, speedup %.2fx, spread %.3f, %d runs, correct %s, "
              "lower %.1f ms, jit %.1f ms%s)\n",
              ev.median_ns() / 1e6, ev.reference_ns() / 1e6, ev.speedup(), ev.spread(), ev.repetitions(),
              ev.correct() ? "yes" : "NO", ev.lower_ms(), ev.jit_ms(), ev.cached() ? ", cached" : "");
        }
      }
      total += reply.reward();
      taken.push_back(action);
      if (!o.applied()) plan.clear();  // the plan assumed it would apply
      view = parseView(reply.observation(), reply.info(), reply.terminated(), reply.truncated(), space);
    }
    std::printf("episode %d: return %+.4f\n", e, total);
    v1::CloseRequest close;
    close.set_session_id(r.session_id());
    v1::CloseReply closed;
    if (!check(stub.EndSession(ctx().get(), close, &closed), "EndSession")) return 1;
  }
  return failures == 0 ? 0 : 1;
}

// ---------------------------------------------------------------------------------------------------------------
// search

std::string firstLine(const std::string &path, const std::string &key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key, 0) == 0) {
      size_t colon = line.find(':');
      if (colon == std::string::npos) return "";
      std::string v = line.substr(colon + 1);
      size_t b = v.find_first_not_of(" \t");
      return b == std::string::npos ? "" : v.substr(b);
    }
  return "";
}

std::string isoNow() {
  std::time_t t = std::time(nullptr);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

class Progress {
 public:
  Progress(std::string label, int budget) : label_(std::move(label)), budget_(budget) {
    std::string mode = absl::GetFlag(FLAGS_progress);
    if (mode == "auto") mode = isatty(2) ? "bar" : "lines";
    mode_ = mode;
  }
  void update(const Env &env, bool final = false) {
    if (mode_ == "off") return;
    double t = env.elapsedS();
    if (mode_ == "lines" && !final && t - lastLine_ < 10) return;
    lastLine_ = t;
    const Candidate *b = env.best();
    char best[96] = "best -";
    if (b) std::snprintf(best, sizeof best, "best %.2fx (%.3f ms)", b->result.speedup, b->result.timeNs / 1e6);
    char budget[32] = "";
    if (budget_ > 0) std::snprintf(budget, sizeof budget, "/%d", budget_);
    std::fprintf(stderr, "%s%s: %d%s evals (%d measured), %.1f s, %.2f evals/s, %s%s", mode_ == "bar" ? "\r" : "",
                 label_.c_str(), env.evaluations(), budget, env.measured(), t, t > 0 ? env.evaluations() / t : 0.0,
                 best, mode_ == "bar" && !final ? "   " : "\n");
    std::fflush(stderr);
  }

 private:
  std::string label_;
  int budget_;
  std::string mode_;
  double lastLine_ = -1e9;
};

bool writeFile(const std::string &path, const std::string &text) {
  std::ofstream out(path);
  out << text;
  if (!out) {
    std::fprintf(stderr, "error: cannot write %s\n", path.c_str());
    return false;
  }
  return true;
}

int search(const std::shared_ptr<grpc::Channel> &channel, v1::MlirRlEnv::Stub &stub, bool replay = false) {
  std::string strategy = replay ? "replay" : absl::GetFlag(FLAGS_strategy);
  if (!Search::known(strategy) || (strategy == "replay" && !replay)) {
    std::fprintf(stderr, "error: unknown --strategy=%s (%s)\n", strategy.c_str(), Search::strategies());
    return 2;
  }
  std::string uri = absl::GetFlag(FLAGS_benchmark);
  v1::GetVersionReply version;
  if (!check(stub.GetVersion(ctx().get(), {}, &version), "GetVersion")) return 1;
  v1::BenchmarkInfo info = benchmarkInfo(stub, uri);
  v1::SessionOptions options = sessionOptions();
  uint64_t seed = absl::GetFlag(FLAGS_seed);
  Env env(channel, callSettings(), uri, options, 0);
  int budgetEvals = absl::GetFlag(FLAGS_budget_evals);
  double budgetS = absl::GetFlag(FLAGS_budget_s);
  env.setParallel(absl::GetFlag(FLAGS_parallel));
  int64_t lanes = lanesFor(info.dtype());
  Heuristic heuristic(env, lanes, options.has_max_vector_elements() ? options.max_vector_elements() : 512);
  SearchConfig config;
  config.strategy = strategy;
  config.beamWidth = absl::GetFlag(FLAGS_beam_width);
  config.minGain = absl::GetFlag(FLAGS_min_gain);
  config.seed = seed;
  config.completionOps = absl::GetFlag(FLAGS_completion_ops);
  std::vector<std::string> texts;
  if (replay) {
    std::string all = absl::GetFlag(FLAGS_schedule), text;
    std::istringstream in(all);
    while (std::getline(in, text, ';'))
      if (text.find_first_not_of(" \t") != std::string::npos) texts.push_back(text);
    if (texts.empty()) {
      std::fprintf(stderr, "error: replay needs --schedule (e.g. --schedule=\"T[16,16,1] V\")\n");
      return 2;
    }
    for (const std::string &t : texts) {
      try {
        config.schedules.push_back(env.space().parse(t));
      } catch (const std::invalid_argument &e) {
        std::fprintf(stderr, "error: --schedule \"%s\": %s\n", t.c_str(), e.what());
        return 2;
      }
    }
    if (budgetEvals > 0 && budgetEvals < static_cast<int>(texts.size())) budgetEvals = static_cast<int>(texts.size());
  }
  std::string name = uri.substr(uri.rfind('/') + 1);
  Progress progress("search " + strategy + " " + name, budgetEvals);
  bool verbose = absl::GetFlag(FLAGS_verbose);
  env.onEvaluation([&](const Env &e) {
    if (verbose) {
      const Candidate &c = e.history().back();
      std::fprintf(stderr, "%s  #%d %-8s %9.4f ms %7.2fx spread %.3f%s  %s\n", isatty(2) ? "\r" : "", c.index,
                   c.origin.c_str(), c.result.timeNs / 1e6, c.result.speedup, c.result.spread,
                   c.result.ok ? "" : (" FAILED " + c.result.failure.substr(0, 80)).c_str(),
                   e.space().brief(c.actions).c_str());
    }
    progress.update(e);
  });
  std::string error;
  env.setBudget(budgetEvals, budgetS);
  try {
    Search(env, heuristic, config).run();
  } catch (const std::exception &e) {
    error = e.what();
    std::fprintf(stderr, "\nerror: %s\n", error.c_str());
  }
  progress.update(env, true);
  double wall = env.elapsedS();
  const Candidate *best = env.best();

  Env::Export exported;
  if (best) {
    try {
      exported = env.exportSchedule(best->actions);
    } catch (const std::exception &e) {
      if (error.empty()) error = e.what();
      std::fprintf(stderr, "error: %s\n", e.what());
    }
  }
  // The untransformed and heuristic schedules when they were measured.
  const EvalResult *untransformed = env.known({});
  const EvalResult *heuristicResult = nullptr;
  Actions heuristicSchedule;
  if (strategy != "random") {
    try {
      heuristicSchedule = heuristic.complete({}, config.completionOps);
      heuristicResult = env.known(heuristicSchedule);
    } catch (const std::exception &) {
    }
  }

  JsonWriter j;
  j.beginObject();
  j.key("benchmark").value(uri);
  j.key("strategy").value(strategy);
  j.key("budget").beginObject();
  j.key("evaluations").value(budgetEvals);
  j.key("seconds").value(budgetS);
  j.endObject();
  j.key("evaluations").value(env.evaluations());
  j.key("measured").value(env.measured());
  j.key("observations").value(static_cast<long long>(env.observations()));
  j.key("wall_time_s").value(wall);
  j.key("reference_ms").value(env.referenceNs() / 1e6);
  if (untransformed && untransformed->ok) j.key("untransformed_ms").value(untransformed->timeNs / 1e6);
  if (heuristicResult && heuristicResult->ok) {
    j.key("heuristic_ms").value(heuristicResult->timeNs / 1e6);
    j.key("heuristic_schedule").value(env.space().brief(env.normalize(heuristicSchedule)));
  }
  j.key("dtype").value(info.dtype());
  j.key("flops").value(static_cast<long long>(info.flops()));
  j.key("num_ops").value(info.num_ops());
  int failed = 0;
  for (const Candidate &c : env.history()) failed += !c.result.ok;
  j.key("failed_evaluations").value(failed);
  if (best) {
    j.key("best_speedup").value(best->result.speedup);
    j.key("best_time_ms").value(best->result.timeNs / 1e6);
    if (info.flops() > 0) j.key("best_gflops").value(info.flops() / best->result.timeNs);
    j.key("best_found_at_evaluation").value(best->index);
    j.key("best_found_at_s").value(best->wallS);
    j.key("best_spread").value(best->result.spread);
    j.key("best_origin").value(best->origin);
    j.key("best_schedule").value(env.space().brief(best->actions));
    j.key("actions").beginArray();
    for (const Action &a : best->actions) {
      j.beginArray(true);
      for (int64_t v : a) j.value(static_cast<long long>(v));
      j.endArray();
    }
    j.endArray();
    j.key("descriptions").beginArray();
    for (const std::string &d : exported.descriptions) j.value(d);
    j.endArray();
  } else {
    j.key("best_speedup").null();
  }
  // How the best speedup grew: (evaluation, seconds, speedup) at each improvement.
  j.key("trace").beginArray();
  double bestNs = 0;
  for (const Candidate &c : env.history())
    if (c.result.ok && (bestNs == 0 || c.result.timeNs < bestNs)) {
      bestNs = c.result.timeNs;
      j.beginArray(true).value(c.index).value(c.wallS).value(c.result.speedup).endArray();
    }
  j.endArray();
  j.key("options").beginObject();
  j.key("seed").value(static_cast<long long>(seed));
  j.key("beam_width").value(config.beamWidth);
  j.key("min_gain").value(config.minGain);
  j.key("parallel").value(env.parallel());
  j.key("num_threads").value(options.has_num_threads() ? options.num_threads() : 1);
  j.key("completion_ops").value(config.completionOps);
  j.endObject();
  j.key("server").beginObject();
  j.key("address").value(absl::GetFlag(FLAGS_server));
  j.key("version").value(version.server_version());
  j.key("protocol").value(version.protocol_version());
  j.key("mlir").value(version.mlir_version());
  j.key("host_cpu").value(version.host_cpu());
  j.endObject();
  j.key("machine").beginObject();
  char host[256] = "";
  gethostname(host, sizeof host - 1);
  struct utsname u {};
  uname(&u);
  j.key("hostname").value(host);
  j.key("cpu").value(firstLine("/proc/cpuinfo", "model name"));
  j.key("cores").value(static_cast<long long>(sysconf(_SC_NPROCESSORS_ONLN)));
  j.key("kernel").value(std::string(u.sysname) + " " + u.release);
  j.endObject();
  j.key("client").value(mlir_rl::support::versionLine("mlir-rl-cli"));
  j.key("date").value(isoNow());
  if (!error.empty()) j.key("error").value(error);
  std::string out = absl::GetFlag(FLAGS_out);
  if (!out.empty()) {
    j.key("transform_script").value(best ? out + ".transform.mlir" : "");
    j.key("payload").value(best ? out + ".payload.mlir" : "");
  }
  j.endObject();

  if (!out.empty()) {
    bool ok = writeFile(out + ".json", j.str() + "\n");
    if (best) {
      ok &= writeFile(out + ".transform.mlir", exported.schedule.transform_script());
      ok &= writeFile(out + ".payload.mlir", exported.schedule.benchmark_ir());
    }
    if (!ok) return 1;
  }
  if (replay) {
    for (size_t i = 0; i < texts.size(); ++i) {
      const EvalResult *r = env.known(config.schedules[i]);
      std::string brief = env.space().brief(env.normalize(config.schedules[i]));
      if (!r)
        std::printf("%-40s not measured (budget)\n", brief.c_str());
      else if (!r->ok)
        std::printf("%-40s FAILED %s\n", brief.c_str(), r->failure.c_str());
      else
        std::printf("%-40s %10.4f ms %8.2fx spread %.3f%s\n", brief.c_str(), r->timeNs / 1e6, r->speedup, r->spread,
                    info.flops() > 0
                        ? (" " + std::to_string(static_cast<int>(info.flops() / r->timeNs)) + " GFLOP/s").c_str()
                        : "");
    }
  }
  if (best) {
    std::printf("%s %s: best %.3f ms, %.2fx over %.3f ms untransformed, %d evaluations (%d measured), %.1f s\n",
                strategy.c_str(), uri.c_str(), best->result.timeNs / 1e6, best->result.speedup, env.referenceNs() / 1e6,
                env.evaluations(), env.measured(), wall);
    for (const std::string &d : exported.descriptions) std::printf("  %s\n", d.c_str());
  } else {
    std::printf("%s %s: no schedule measured (%d evaluations)\n", strategy.c_str(), uri.c_str(), env.evaluations());
  }
  return best && error.empty() ? 0 : 1;
}

}  // namespace

int main(int argc, char **argv) {
  absl::SetProgramUsageMessage("mlir-rl-cli [flags] list | health | episode | search | replay");
  mlir_rl::support::installVersionFlag("mlir-rl-cli");
  std::vector<char *> args = absl::ParseCommandLine(argc, argv);
  std::string command = args.size() > 1 ? args[1] : "episode";
  grpc::ChannelArguments channelArgs;
  channelArgs.SetMaxReceiveMessageSize(256 * 1024 * 1024);
  auto channel = grpc::CreateCustomChannel(absl::GetFlag(FLAGS_server), credentials(), channelArgs);
  auto stub = v1::MlirRlEnv::NewStub(channel);
  try {
    if (command == "list") return list(*stub);
    if (command == "health") return health(channel, *stub);
    if (command == "episode") return episode(channel, *stub);
    if (command == "search") return search(channel, *stub);
    if (command == "replay") return search(channel, *stub, true);
  } catch (const std::exception &e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "error: unknown command '%s' (list, health, episode, search, replay)\n", command.c_str());
  return 2;
}
