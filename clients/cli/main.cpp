// mlir-rl-cli: a C++ smoke client. Lists benchmarks, checks health, runs episodes with a random or heuristic
// policy and prints every step. Exits non-zero on any error.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "mlir_rl/v1/env.grpc.pb.h"
#include "support/Version.h"

ABSL_FLAG(std::string, server, "127.0.0.1:50051", "server address host:port");
ABSL_FLAG(std::string, benchmark, "benchmark://nn-ops/matmul_512x512x512_f32", "benchmark URI for `episode`");
ABSL_FLAG(std::string, policy, "heuristic", "episode policy: random (uniform over unmasked values) or heuristic "
                                            "(register tiles, then vectorize)");
ABSL_FLAG(uint64_t, seed, 0, "seed of the episode and of the random policy");
ABSL_FLAG(int, episodes, 1, "episodes to run");
ABSL_FLAG(int, max_steps, 0, "truncate episodes after this many steps (0: no limit)");
ABSL_FLAG(int, timeout_s, 600, "deadline of each RPC in seconds");
ABSL_FLAG(std::string, dataset, "", "dataset filter for `list`");
ABSL_FLAG(std::string, token, "", "bearer token for servers started with --auth_tokens_file (default: $MLIR_RL_TOKEN)");
ABSL_FLAG(std::string, tls_ca, "", "connect with TLS, verifying the server against this PEM CA (default: $MLIR_RL_TLS_CA)");
ABSL_FLAG(std::string, tls_cert, "", "client certificate (PEM) for TLS servers that require one (default: $MLIR_RL_TLS_CERT)");
ABSL_FLAG(std::string, tls_key, "", "key of --tls_cert (default: $MLIR_RL_TLS_KEY)");

namespace v1 = mlir_rl::v1;

namespace {

// A flag's value, else the environment variable's, else empty.
std::string setting(const absl::Flag<std::string> &flag, const char *variable) {
  std::string value = absl::GetFlag(flag);
  if (value.empty())
    if (const char *env = std::getenv(variable)) value = env;
  return value;
}

std::unique_ptr<grpc::ClientContext> ctx() {
  static const std::string token = setting(FLAGS_token, "MLIR_RL_TOKEN");
  auto c = std::make_unique<grpc::ClientContext>();
  c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(absl::GetFlag(FLAGS_timeout_s)));
  if (!token.empty()) c->AddMetadata("authorization", "Bearer " + token);
  return c;
}

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

const v1::Tensor *find(const v1::Observation &obs, const std::string &name) {
  for (const auto &t : obs.tensors())
    if (t.name() == name) return &t;
  return nullptr;
}

// Per-head masks out of the observation: masks[h][value].
std::vector<std::vector<bool>> headMasks(const v1::Observation &obs, const v1::MultiDiscreteSpace &space) {
  std::vector<std::vector<bool>> masks;
  const v1::Tensor *type = find(obs, "mask_type"), *tiles = find(obs, "mask_tiles"),
                   *ich = find(obs, "mask_interchange");
  int L = space.nvec_size() - 2;
  int K = static_cast<int>(space.nvec(1));
  masks.emplace_back(type->data().begin(), type->data().end());
  for (int i = 0; i < L; ++i) masks.emplace_back(tiles->data().begin() + i * K, tiles->data().begin() + (i + 1) * K);
  masks.emplace_back(ich->data().begin(), ich->data().end());
  return masks;
}

std::vector<int64_t> randomAction(const std::vector<std::vector<bool>> &masks, std::mt19937_64 &rng) {
  std::vector<int64_t> action;
  for (const auto &m : masks) {
    std::vector<int64_t> legal;
    for (size_t v = 0; v < m.size(); ++v)
      if (m[v]) legal.push_back(static_cast<int64_t>(v));
    action.push_back(legal.empty() ? 0 : legal[std::uniform_int_distribution<size_t>(0, legal.size() - 1)(rng)]);
  }
  return action;
}

int typeIndex(const v1::MultiDiscreteSpace &space, const std::string &name) {
  for (int i = 0; i < space.type_names_size(); ++i)
    if (space.type_names(i) == name) return i;
  return 0;
}

// Heuristic: tile each loop to a register-friendly size (the innermost parallel loop to 16, other parallel loops
// to 8, reductions to 1) when that is legal, then vectorize; otherwise move on.
std::vector<int64_t> heuristicAction(const v1::Observation &obs, const v1::MultiDiscreteSpace &space,
                                     const std::vector<std::vector<bool>> &masks) {
  int L = space.nvec_size() - 2;
  std::vector<int64_t> action(space.nvec_size(), 0);
  if (masks[0][typeIndex(space, "VECTORIZATION")]) {
    action[0] = typeIndex(space, "VECTORIZATION");
    return action;
  }
  if (!masks[0][typeIndex(space, "TILING")]) return action;  // NO_TRANSFORMATION
  const v1::Tensor *bounds = find(obs, "loop_bounds"), *iters = find(obs, "iterator_types");
  auto *b = reinterpret_cast<const int64_t *>(bounds->data().data());
  auto *it = reinterpret_cast<const int32_t *>(iters->data().data());
  int innermostParallel = -1;
  for (int i = 0; i < L; ++i)
    if (b[i] > 0 && it[i] == 1) innermostParallel = i;
  bool any = false;
  for (int i = 0; i < L && b[i] > 0; ++i) {
    int64_t want = it[i] == 2 ? 1 : (i == innermostParallel ? 16 : 8);
    for (int k = 1; k < space.tile_sizes_size(); ++k)
      if (space.tile_sizes(k) == want && masks[1 + i][k] && want < b[i]) {
        action[1 + i] = k;
        any = true;
      }
  }
  if (any) action[0] = typeIndex(space, "TILING");
  return action;
}

std::string formatAction(const std::vector<int64_t> &a) {
  std::string s = "[";
  for (size_t i = 0; i < a.size(); ++i) s += (i ? "," : "") + std::to_string(a[i]);
  return s + "]";
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

int episode(v1::MlirRlEnv::Stub &stub) {
  v1::GetSpacesRequest spacesReq;
  if (int m = absl::GetFlag(FLAGS_max_steps); m > 0) spacesReq.mutable_options()->set_max_steps(m);
  v1::GetSpacesReply spaces;
  if (!check(stub.GetSpaces(ctx().get(), spacesReq, &spaces), "GetSpaces")) return 1;
  const v1::MultiDiscreteSpace &space = spaces.action_space().multi_discrete();
  std::string policy = absl::GetFlag(FLAGS_policy);
  if (policy != "random" && policy != "heuristic") {
    std::fprintf(stderr, "error: unknown --policy=%s (random or heuristic)\n", policy.c_str());
    return 2;
  }
  std::mt19937_64 rng(absl::GetFlag(FLAGS_seed));
  int failures = 0;
  for (int e = 0; e < absl::GetFlag(FLAGS_episodes); ++e) {
    v1::ResetRequest reset;
    reset.set_benchmark(absl::GetFlag(FLAGS_benchmark));
    reset.set_seed(absl::GetFlag(FLAGS_seed) + e);
    *reset.mutable_options() = spacesReq.options();
    v1::ResetReply r;
    auto t0 = std::chrono::steady_clock::now();
    if (!check(stub.Reset(ctx().get(), reset, &r), "Reset")) return 1;
    double resetMs = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::printf("episode %d: session %s on %s (%d ops), reset %.1f ms\n", e, r.session_id().c_str(),
                r.benchmark().c_str(), r.info().num_ops(), resetMs);
    v1::Observation obs = r.observation();
    double total = 0;
    bool done = false;
    for (int step = 0; !done && step < 10000; ++step) {
      auto masks = headMasks(obs, space);
      std::vector<int64_t> action = policy == "random" ? randomAction(masks, rng) : heuristicAction(obs, space, masks);
      v1::StepRequest req;
      req.set_session_id(r.session_id());
      v1::Action *sent = req.add_actions();
      for (int64_t v : action) sent->add_values(v);
      v1::StepReply reply;
      t0 = std::chrono::steady_clock::now();
      if (!check(stub.Step(ctx().get(), req, &reply), "Step")) return 1;
      double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      const v1::StepOutcome &o = reply.outcomes(0);
      std::printf("  step %2d %-28s %-55s reward %+8.4f  %7.1f ms%s%s\n", step, formatAction(action).c_str(),
                  o.description().c_str(), o.reward(), ms, o.applied() ? "" : "  FAILED: ",
                  o.applied() ? "" : o.failure_reason().substr(0, 200).c_str());
      if (o.has_evaluation()) {
        const v1::Evaluation &ev = o.evaluation();
        if (!ev.failure().empty()) {
          std::printf("    evaluation failed: %s\n", ev.failure().c_str());
          ++failures;
        } else {
          std::printf("    evaluated: %.3f ms (reference %.3f ms, speedup %.2fx, spread %.3f, %d runs, correct %s, "
                      "lower %.1f ms, jit %.1f ms%s)\n",
                      ev.median_ns() / 1e6, ev.reference_ns() / 1e6, ev.speedup(), ev.spread(), ev.repetitions(),
                      ev.correct() ? "yes" : "NO", ev.lower_ms(), ev.jit_ms(), ev.cached() ? ", cached" : "");
        }
      }
      total += reply.reward();
      obs = reply.observation();
      done = reply.terminated() || reply.truncated();
    }
    std::printf("episode %d: return %+.4f\n", e, total);
    v1::CloseRequest close;
    close.set_session_id(r.session_id());
    v1::CloseReply closed;
    if (!check(stub.EndSession(ctx().get(), close, &closed), "EndSession")) return 1;
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char **argv) {
  absl::SetProgramUsageMessage("mlir-rl-cli [flags] list | health | episode");
  mlir_rl::support::installVersionFlag("mlir-rl-cli");
  std::vector<char *> args = absl::ParseCommandLine(argc, argv);
  std::string command = args.size() > 1 ? args[1] : "episode";
  grpc::ChannelArguments channelArgs;
  channelArgs.SetMaxReceiveMessageSize(256 * 1024 * 1024);
  auto channel = grpc::CreateCustomChannel(absl::GetFlag(FLAGS_server), credentials(), channelArgs);
  auto stub = v1::MlirRlEnv::NewStub(channel);
  if (command == "list") return list(*stub);
  if (command == "health") return health(channel, *stub);
  if (command == "episode") return episode(*stub);
  std::fprintf(stderr, "error: unknown command '%s' (list, health, episode)\n", command.c_str());
  return 2;
}
