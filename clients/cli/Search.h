// Search baselines over an mlir-rl server: random (masked episodes), greedy and beam search per op (children of a
// state scored by measuring the schedule the heuristic completes them to), and a local search seeded with the
// heuristic's schedule; "replay" measures given schedules (to reproduce a record or compare servers). All of them spend
// evaluations through Env (budgeted, memoized) and leave the best schedule in Env::best().
#pragma once

#include <random>
#include <string>
#include <vector>

#include "Env.h"
#include "Schedules.h"

namespace mlir_rl::cli {

struct SearchConfig {
  std::string strategy = "local";  // random, greedy, beam, local, heuristic, replay
  std::vector<Actions> schedules;  // replay: the schedules to measure, in order
  int beamWidth = 4;
  double minGain = 0.01;  // a change must make the schedule this much faster to count as better
  uint64_t seed = 0;
  int completionOps = 12;    // ops after the current one that the heuristic completes (others: untransformed)
  int maxRegisterTiles = 8;  // children of each kind per state
  int maxCacheTiles = 4;
  int maxPermutations = 6;
  int maxFusionTiles = 4;
  int maxUnrollFactors = 3;
};

class Search {
 public:
  Search(Env &env, Heuristic &heuristic, SearchConfig config);
  // Runs the configured strategy until it is done or the budget is spent.
  void run();
  static bool known(const std::string &strategy);
  static const char *strategies();

  // Children of a state: action lists that keep the cursor on its op (register tiles the server then lets
  // vectorize, img2col, tiled fusion, cache tiles, interchanges, unrolling), most promising first.
  std::vector<Actions> expand(const Actions &prefix, const View &view);

 private:
  struct Node {
    Actions prefix;  // ends on the op being scheduled
    Actions full;    // prefix completed by the heuristic
    double timeNs = 0;
    bool scored = false;
  };
  void random();
  void perOp(int width);
  void local();
  void heuristicOnly();
  void replay();
  // Evaluates untransformed and heuristic schedules (the floor every strategy starts from).
  void seedEvaluations();
  std::vector<double> opWeights();
  Node bestOp(Node start, int width, int budget, int op);
  // Completes (completeWith, `op` the op being searched) and scores `prefixes` in order while `budget` new
  // evaluations last; unscored ones are dropped.
  std::vector<Node> score(const std::vector<Actions> &prefixes, int budget, const std::string &origin, int op);
  // Per-op segments of a complete schedule (the actions taken while the cursor was on each op).
  std::vector<Actions> segments(const Actions &schedule);
  // `prefix` with op `ownOp` (default: the op under the cursor) finished by the heuristic if the cursor is still on
  // it, then every later op as in template_ (the incumbent schedule's segments) while that is legal, else finished by
  // the heuristic.
  Actions completeWith(const Actions &prefix, int ownOp = -1);
  bool mutate(std::vector<Actions> &segs, int op);

  Env &env_;
  Heuristic &heuristic_;
  SearchConfig config_;
  std::mt19937_64 rng_;
  std::vector<Actions> template_;  // per-op segments later ops are completed with when scoring a partial schedule
};

}  // namespace mlir_rl::cli
