// The search client's view of a server: one benchmark, states named by their action lists (the protocol makes a
// state a function of benchmark, options and actions, so Reset(replay_actions) rebuilds any of them), cheap
// observations of a state (non-evaluating replays, memoized), and evaluations of complete schedules counted against
// a budget, memoized, several at a time through StepMany.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "mlir_rl/v1/env.grpc.pb.h"

namespace mlir_rl::cli {

namespace v1 = mlir_rl::v1;

using Action = std::vector<int64_t>;
using Actions = std::vector<Action>;

std::string formatAction(const Action &a);
std::string formatActions(const Actions &actions);

// A failed RPC (anything but a masked action replayed by observe(), which is an answer, not an error).
struct RpcError : std::runtime_error {
  RpcError(const std::string &what, const grpc::Status &status);
  grpc::StatusCode code;
};

// Client settings shared by every call.
struct CallSettings {
  int timeoutS = 600;
  std::string token;
};
std::unique_ptr<grpc::ClientContext> makeContext(const CallSettings &settings, double timeoutS = 0);

// The action space (GetSpaces) with the indices of the type values by name.
struct Space {
  std::vector<int64_t> nvec;
  std::vector<std::string> typeNames;
  std::vector<int64_t> tileSizes;  // tileSizes[0] = 0: "no tiling"
  int maxLoops = 0;                // tile heads
  int noTransformation = 0, tiling = 1, parallelTiling = 2, interchange = 3, vectorization = 4, fusion = 5, img2col = 6,
      unroll = 7;
  int peeledTiling = -1;  // PEELED_TILING (-1: the server has none)
  int pack = -1;          // PACK (-1: the server has none)
  int split = -1;         // SPLIT_REDUCTION (-1: the server has none)

  explicit Space(const v1::MultiDiscreteSpace &space);
  Space() = default;
  // Head index of a tile size (0 for "no tiling"), -1 when the size is not a choice.
  int tileIndex(int64_t size) const;
  Action make(int type) const;                                      // the tile heads 0
  Action tiles(int type, const std::vector<int64_t> &sizes) const;  // sizes: 0 = untiled (throws if not a choice)
  Action pointer(int loop) const;                                   // INTERCHANGE with a level pointer
  Action unrollBy(int64_t factor) const;                            // UNROLL, factor in the last tile head
  std::string typeName(int64_t type) const;
  // Short form of an action for logs: T[8,16,1], V, I2 (level pointer), TF[...], TP[...], PT[...], U4, IMG2COL, PACK,
  // SPLIT, NOP.
  std::string brief(const Action &a) const;
  std::string brief(const Actions &actions) const;
  // The actions of a schedule written in the short form ("T[16,16,1] V", "IMG2COL T[0,0,0,64] V NOP"; empty or
  // "(untransformed)": none). Throws std::invalid_argument naming the token that is not an action of this space.
  Actions parse(const std::string &text) const;
};

// What an observation says about the op under the cursor (the parts a search reads).
struct View {
  bool done = false;
  int opIndex = 0, numOps = 0, steps = 0, actionsOnOp = 0;
  bool interchangePending = false;
  int placedLoops = 0;          // loops an open interchange has placed
  std::string opName;           // e.g. linalg.matmul; empty when done
  int family = -1;              // argmax of op_type: generic, matmul, conv, pooling, elementwise, other
  std::vector<int64_t> bounds;  // one per loop of the op
  std::vector<int> iterators;   // 1 parallel, 2 reduction
  std::vector<uint8_t> maskType;
  std::vector<std::vector<uint8_t>> maskTiles;        // [loop head][tile choice]
  std::vector<std::vector<uint8_t>> maskTilesPeeled;  // the same for PEELED_TILING (empty: the server has none)
  std::vector<uint8_t> maskInterchange;
  // Per input operand (observation `load_access`; empty from servers without it): the loops its index uses (bit l),
  // and those its innermost index uses (the loops a vector along which reads it contiguously).
  std::vector<uint64_t> inputLoops, inputInnermostLoops;

  int numLoops() const { return static_cast<int>(bounds.size()); }
  bool legal(int type) const { return type >= 0 && type < static_cast<int>(maskType.size()) && maskType[type]; }
  bool tileLegal(int loop, int choice) const {
    return loop >= 0 && loop < static_cast<int>(maskTiles.size()) && choice >= 0 &&
           choice < static_cast<int>(maskTiles[loop].size()) && maskTiles[loop][choice];
  }
  int64_t iterationSpace() const;
  // This view with PEELED_TILING's tile masks in place of the tiling types' (to shape tiles for it).
  View peeled() const {
    View v = *this;
    if (!maskTilesPeeled.empty()) v.maskTiles = maskTilesPeeled;
    return v;
  }
};

View parseView(const v1::Observation &obs, const v1::EpisodeInfo &info, bool terminated, bool truncated,
               const Space &space);

// One measured schedule.
struct EvalResult {
  bool ok = false;      // compiled, ran, correct
  bool cached = false;  // served from the server's evaluation cache
  double timeNs = 0;    // median
  double referenceNs = 0;
  double speedup = 0;
  double spread = 0;
  double lowerMs = 0, jitMs = 0;
  std::string failure;
};

// A schedule with its measurement, in the order evaluations were made.
struct Candidate {
  Actions actions;
  EvalResult result;
  double wallS = 0;    // since the search started
  int index = 0;       // 1-based evaluation count when it was measured
  std::string origin;  // which strategy step proposed it
};

class Env {
 public:
  Env(std::shared_ptr<grpc::Channel> channel, CallSettings settings, std::string benchmark, v1::SessionOptions options,
      uint64_t seed);

  const Space &space() const { return space_; }
  const std::string &benchmark() const { return benchmark_; }
  const v1::SessionOptions &options() const { return options_; }
  v1::MlirRlEnv::Stub &stub() { return *stub_; }
  const CallSettings &settings() const { return settings_; }

  // The state after `actions`; nullopt when the replay is refused (a masked action: the prefix does not exist).
  std::optional<View> observe(const Actions &actions);
  // Whether the masks of `view` allow `a` (what the server checks before applying it).
  bool allows(const View &view, const Action &a) const;
  // Whether `a` taken in `view` ends the episode (the server's cursor rules; a transformation is assumed to apply).
  bool wouldEnd(const View &view, const Action &a) const;
  int actionsPerOp() const { return actionsPerOp_; }
  // Number of replays made (observations not served by the memo).
  int64_t observations() const { return observations_; }

  // Budget: evaluations (schedules sent to be measured; repeated schedules are free) and wall time.
  void setBudget(int maxEvaluations, double maxSeconds);
  int evaluations() const { return evaluations_; }
  int measured() const { return measured_; }  // evaluations the server did not serve from its cache
  int remaining() const;
  bool exhausted() const;
  double elapsedS() const;
  // Completes each schedule with NO_TRANSFORMATION (the ops it leaves untransformed) and measures it. Known schedules
  // come from the memo without counting; new ones are measured `parallel` at a time (StepMany) while the budget
  // lasts; entries the budget did not reach are nullopt.
  std::vector<std::optional<EvalResult>> evaluate(const std::vector<Actions> &schedules,
                                                  const std::string &origin = "");
  std::optional<EvalResult> evaluateOne(const Actions &schedule, const std::string &origin = "");
  // The memoized result of a schedule, if it was measured.
  const EvalResult *known(const Actions &schedule) const;
  void setParallel(int n) { parallel_ = n < 1 ? 1 : n; }
  int parallel() const { return parallel_; }

  const std::vector<Candidate> &history() const { return history_; }
  const Candidate *best() const { return bestIndex_ < 0 ? nullptr : &history_[bestIndex_]; }
  double referenceNs() const { return referenceNs_; }
  // Called after every new measurement (progress display).
  void onEvaluation(std::function<void(const Env &)> callback) { callback_ = std::move(callback); }

  // The schedule's descriptions per step, transform script and payload (a session replaying it to the end).
  struct Export {
    std::vector<std::string> descriptions;
    v1::ExportScheduleReply schedule;
  };
  Export exportSchedule(const Actions &schedule);

  // Trailing NO_TRANSFORMATIONs removed: the key of a complete schedule.
  Actions normalize(const Actions &schedule) const;

 private:
  std::string resetTo(const Actions &actions, v1::ResetReply *reply, grpc::Status *status);
  void closeSession(const std::string &id);
  void record(const Actions &schedule, const EvalResult &result, const std::string &origin);

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::MlirRlEnv::Stub> stub_;
  CallSettings settings_;
  std::string benchmark_;
  v1::SessionOptions options_;
  uint64_t seed_;
  Space space_;
  std::string spare_;  // a session to close with the next Reset
  std::map<std::string, std::optional<View>> views_;
  std::map<std::string, EvalResult> results_;
  int64_t observations_ = 0;
  int actionsPerOp_ = 5;
  int maxEvaluations_ = 1 << 30;
  double maxSeconds_ = 1e18;
  int evaluations_ = 0, measured_ = 0, parallel_ = 1;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::vector<Candidate> history_;
  int bestIndex_ = -1;
  double referenceNs_ = 0;
  std::function<void(const Env &)> callback_;
};

EvalResult toResult(const v1::Evaluation &e);

}  // namespace mlir_rl::cli
