#include "Search.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <set>

namespace mlir_rl::cli {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

Actions concat(const Actions &a, const Actions &b) {
  Actions out = a;
  out.insert(out.end(), b.begin(), b.end());
  return out;
}

// The first of every list, then the second of every list, ...: a small budget taken from the front is shared.
template <typename Lists>
std::vector<Actions> interleave(const Lists &lists) {
  std::vector<Actions> out;
  for (size_t k = 0;; ++k) {
    bool any = false;
    for (const std::vector<Actions> &list : lists)
      if (k < list.size()) out.push_back(list[k]), any = true;
    if (!any) return out;
  }
}

double timeOf(const std::optional<EvalResult> &r) { return r && r->ok ? r->timeNs : kInf; }

bool isTilingType(const Space &s, int64_t type) {
  return type == s.tiling || type == s.parallelTiling || type == s.fusion;
}

}  // namespace

Search::Search(Env &env, Heuristic &heuristic, SearchConfig config)
    : env_(env), heuristic_(heuristic), config_(std::move(config)), rng_(config_.seed) {}

bool Search::known(const std::string &s) {
  return s == "random" || s == "greedy" || s == "beam" || s == "local" || s == "heuristic" || s == "replay";
}

const char *Search::strategies() { return "random, greedy, beam, local, heuristic, replay"; }

void Search::run() {
  const std::string &s = config_.strategy;
  if (s == "random")
    random();
  else if (s == "greedy")
    perOp(1);
  else if (s == "beam")
    perOp(std::max(1, config_.beamWidth));
  else if (s == "local")
    local();
  else if (s == "replay")
    replay();
  else
    heuristicOnly();
}

// ---------------------------------------------------------------------------------------------------------------

void Search::seedEvaluations() {
  Actions h = heuristic_.complete({}, config_.completionOps);
  env_.evaluate({Actions{}, h}, "seed");
}

void Search::heuristicOnly() { seedEvaluations(); }

std::vector<double> Search::opWeights() {
  std::vector<double> weights;
  std::optional<View> first = env_.observe({});
  if (!first) return weights;
  Actions nops;
  for (int i = 0; i < first->numOps; ++i) {
    std::optional<View> v = env_.observe(nops);
    weights.push_back(v && !v->done ? static_cast<double>(v->iterationSpace()) : 1.0);
    nops.push_back(env_.space().make(env_.space().noTransformation));
  }
  return weights;
}

void Search::random() {
  env_.evaluateOne({}, "untransformed");
  const Space &space = env_.space();
  int idle = 0;  // batches that found nothing new (a small space exhausted)
  while (!env_.exhausted() && idle < 1000) {
    std::vector<Actions> batch;
    int want = std::max(1, std::min(env_.parallel(), env_.remaining()));
    for (int b = 0; b < want; ++b) {
      Actions p;
      for (int guard = 0; guard < 4096; ++guard) {
        std::optional<View> v = env_.observe(p);
        if (!v || v->done) break;
        Action a = randomAction(*v, space, rng_);
        bool end = env_.wouldEnd(*v, a);
        p.push_back(a);
        if (end) break;
      }
      if (!env_.known(p)) batch.push_back(p);
    }
    if (batch.empty()) {
      ++idle;
      continue;
    }
    idle = 0;
    env_.evaluate(batch, "random");
  }
}

void Search::replay() {
  // Each schedule is measured even when the episode's masks would refuse a step: the server answers with the step's
  // error, which the result records as a failure.
  env_.evaluate(config_.schedules, "replay");
}

// ---------------------------------------------------------------------------------------------------------------
// Greedy and beam search, one op at a time

std::vector<Actions> Search::expand(const Actions &prefix, const View &view) {
  const Space &s = env_.space();
  int left = env_.actionsPerOp() - view.actionsOnOp;
  // Children by kind (register tiles, peeled tiles, each rewrite, fusion tiles, cache tiles, permutations, unrolls),
  // each kind most promising first; returned interleaved (the first of every kind, then the second, ...) so that a
  // small budget tries every kind: an op gets a share of the evaluations by its own iteration space, and fusing its
  // producers can pay more than its register tiles (MobileNetV2 block3 depthwise: ReLU6's `TF[0,1,8]` fusing the
  // depthwise convolution 0.21-0.23 ms, its best register tile 1.96 ms; greedy, 100 evaluations, spent the 9 on
  // ReLU6 on register tiles).
  std::deque<std::vector<Actions>> kinds;
  std::vector<Actions> *out = &kinds.emplace_back();
  auto nextKind = [&] { out = &kinds.emplace_back(); };
  // When the heuristic can vectorize the op from here, a child must still let it (an interchange that makes the
  // output's loop order cyclic, a tiling too deep, ... only lead to scalar code).
  auto vectorizes = [&](const Actions &p) {
    Actions finish = heuristic_.finishOp(p);
    return !finish.empty() && finish.back()[0] == s.vectorization;
  };
  bool parentVectorizes = vectorizes(prefix);
  auto sameOp = [&](const std::optional<View> &v) {
    return v && !v->done && v->opIndex == view.opIndex && !v->interchangePending;
  };
  auto worth = [&](const Actions &c) {
    Actions p = concat(prefix, c);
    return sameOp(env_.observe(p)) && (!parentVectorizes || vectorizes(p));
  };
  // Register tiles (when the op is still too large to vectorize: a smaller tile of a vectorizable op is the same as
  // a smaller register tile, which the parent state offered).
  bool tileable = view.legal(s.tiling) && !view.legal(s.vectorization);
  std::vector<RegisterTile> tiles =
      tileable ? registerTiles(view, s, heuristic_.lanes(), heuristic_.maxElements()) : std::vector<RegisterTile>{};
  if (left >= 2 && tileable) {
    int n = 0;
    for (const RegisterTile &t : tiles) {
      if (n >= config_.maxRegisterTiles) break;
      Action a = s.tiles(s.tiling, t.sizes);
      std::optional<View> v = env_.observe(concat(prefix, {a}));
      if (sameOp(v) && v->legal(s.vectorization)) {
        out->push_back({a});
        ++n;
      }
    }
  }
  nextKind();
  // The same by PEELED_TILING where a size does not divide its loop (TILING offers the others): full-width vectors on
  // loops like 1000 or 197, and cache tiles of 64 on them.
  if (s.peeledTiling >= 0 && left >= 2 && view.legal(s.peeledTiling) && !view.legal(s.vectorization)) {
    View pv = view.peeled();
    auto tilingOffers = [&](const std::vector<int64_t> &sizes) { return tilesAllowed(view, s, sizes); };
    int n = 0;
    for (const RegisterTile &t : registerTiles(pv, s, heuristic_.lanes(), heuristic_.maxElements())) {
      if (n >= config_.maxRegisterTiles) break;
      if (tilingOffers(t.sizes)) continue;
      Action a = s.tiles(s.peeledTiling, t.sizes);
      std::optional<View> v = env_.observe(concat(prefix, {a}));
      if (sameOp(v) && v->legal(s.vectorization)) {
        out->push_back({a});
        ++n;
      }
    }
    n = 0;
    for (const std::vector<int64_t> &t : left >= 3 ? cacheTiles(pv, s) : std::vector<std::vector<int64_t>>{}) {
      if (n >= config_.maxCacheTiles) break;
      if (tilingOffers(t)) continue;
      Action a = s.tiles(s.peeledTiling, t);
      if (worth({a})) {
        out->push_back({a});
        ++n;
      }
    }
  }
  nextKind();
  if (left >= 3 && view.legal(s.img2col) && worth({s.make(s.img2col)})) out->push_back({s.make(s.img2col)});
  nextKind();
  // A contraction whose contiguous output loop is strided in an input, packed first (measured, like every child:
  // the blocked transposition it adds pays off only when the packed input is reused, not on a matrix-vector product).
  if (s.pack >= 0 && left >= 3 && view.legal(s.pack) && worth({s.make(s.pack)})) out->push_back({s.make(s.pack)});
  nextKind();
  // A reduction read contiguously, split into lanes of partial sums (a matrix-vector product's k).
  if (s.split >= 0 && left >= 3 && view.legal(s.split) && worth({s.make(s.split)})) out->push_back({s.make(s.split)});
  nextKind();
  if (left >= 2 && view.legal(s.fusion)) {
    int n = 0;
    for (const std::vector<int64_t> &t : fusionTiles(view, s, heuristic_.lanes(), heuristic_.maxElements())) {
      if (n >= config_.maxFusionTiles) break;
      Action a = s.tiles(s.fusion, t);
      if (worth({a})) {
        out->push_back({a});
        ++n;
      }
    }
  }
  nextKind();
  if (left >= 3 && tileable) {
    int n = 0;
    for (const std::vector<int64_t> &t : cacheTiles(view, s)) {
      if (n >= config_.maxCacheTiles) break;
      Action a = s.tiles(s.tiling, t);
      if (worth({a})) {
        out->push_back({a});
        ++n;
      }
    }
    // The cache tiles cacheSplit gives for the register tiles (after PACK, a panel of two blocks of the packed B; a
    // block of k of a large matmul), so that the next level's register tile works within them.
    nextKind();
    std::set<std::vector<int64_t>> splits;
    for (const RegisterTile &t : tiles) {
      if (static_cast<int>(splits.size()) >= config_.maxCacheTiles) break;
      auto split = cacheSplit(view, t.sizes, 64 / heuristic_.lanes());
      if (!split || !splits.insert(split->first).second) continue;
      if (!tilesAllowed(view, s, split->first)) continue;
      Action a = s.tiles(s.tiling, split->first);
      if (worth({a})) out->push_back({a});
    }
  }
  nextKind();
  if (left >= 3 && view.legal(s.interchange) && view.numLoops() >= 2) {
    for (const std::vector<int> &p : permutations(view, config_.maxPermutations)) {
      Actions acts = interchangeActions(s, p);
      if (worth(acts)) out->push_back(acts);
    }
  }
  nextKind();
  if (left >= 2 && view.legal(s.unroll)) {
    int n = 0;
    for (size_t k = 1; k < s.tileSizes.size() && n < config_.maxUnrollFactors; ++k)
      if (view.tileLegal(s.maxLoops - 1, static_cast<int>(k))) {
        Action a = s.unrollBy(s.tileSizes[k]);
        if (worth({a})) {
          out->push_back({a});
          ++n;
        }
      }
  }
  return interleave(kinds);
}

std::vector<Search::Node> Search::score(const std::vector<Actions> &prefixes, int budget, const std::string &origin,
                                        int op) {
  std::vector<Node> nodes;
  std::vector<Actions> fulls;
  int fresh = 0;
  for (const Actions &p : prefixes) {
    Node n;
    n.prefix = p;
    n.full = completeWith(p, op);
    if (!env_.known(n.full)) {
      if (fresh >= budget) continue;
      ++fresh;
    }
    fulls.push_back(n.full);
    nodes.push_back(std::move(n));
  }
  std::vector<std::optional<EvalResult>> results = env_.evaluate(fulls, origin);
  std::vector<Node> out;
  for (size_t i = 0; i < nodes.size(); ++i)
    if (results[i]) {
      nodes[i].timeNs = timeOf(results[i]);
      nodes[i].scored = true;
      out.push_back(std::move(nodes[i]));
    }
  return out;
}

Search::Node Search::bestOp(Node start, int width, int budget, int op) {
  int used0 = env_.evaluations();
  auto left = [&] { return budget - (env_.evaluations() - used0); };
  const std::string origin = width == 1 ? "greedy" : "beam";
  std::vector<Node> beam{start};
  Node best = start;
  std::set<std::string> seen{formatActions(start.prefix)};
  int stale = 0;
  for (int depth = 0; depth < env_.actionsPerOp() && !beam.empty() && left() > 0 && !env_.exhausted(); ++depth) {
    std::vector<std::vector<Actions>> perNode;
    for (const Node &n : beam) {
      std::vector<Actions> kids;
      std::optional<View> v = env_.observe(n.prefix);  // a node whose op is finished has no children
      if (v && !v->done && v->opIndex == op && !v->interchangePending)
        for (const Actions &c : expand(n.prefix, *v)) {
          Actions p = concat(n.prefix, c);
          if (seen.insert(formatActions(p)).second) kids.push_back(std::move(p));
        }
      perNode.push_back(std::move(kids));
    }
    std::vector<Actions> order = interleave(perNode);  // round robin over the beam
    if (order.empty()) break;
    // Last, each node's op finished as it stands, without vectorizing it (scalar code that beats the vectorized
    // completion: some contractions with many small loops).
    for (const Node &n : beam) {
      std::optional<View> v = env_.observe(n.prefix);
      if (!v || v->done || v->opIndex != op || !v->legal(env_.space().noTransformation)) continue;
      Actions p = concat(n.prefix, {env_.space().make(env_.space().noTransformation)});
      if (seen.insert(formatActions(p)).second) order.push_back(std::move(p));
    }
    std::vector<Node> scored = score(order, left(), origin, op);
    if (scored.empty()) break;
    std::stable_sort(scored.begin(), scored.end(), [](const Node &a, const Node &b) { return a.timeNs < b.timeNs; });
    bool improved = scored[0].timeNs < best.timeNs * (1 - config_.minGain);
    if (improved) best = scored[0];
    if (width == 1) {
      if (!improved) break;
      beam = {best};
    } else {
      beam.clear();
      for (size_t i = 0; i < scored.size() && static_cast<int>(beam.size()) < width; ++i)
        if (std::isfinite(scored[i].timeNs)) beam.push_back(scored[i]);
      stale = improved ? 0 : stale + 1;
      if (stale >= 2) break;
    }
  }
  return best;
}

Actions Search::completeWith(const Actions &prefix, int ownOp) {
  Actions out = prefix;
  std::optional<View> v = env_.observe(out);
  if (!v || v->done) return out;
  int firstOp = ownOp >= 0 ? ownOp : v->opIndex;
  for (int guard = 0; v && !v->done && guard < 4096; ++guard) {
    int op = v->opIndex;
    bool useTemplate =
        op != firstOp && !v->interchangePending && op < static_cast<int>(template_.size()) && !template_[op].empty();
    if (useTemplate) {
      std::optional<View> w = env_.observe(concat(out, template_[op]));
      useTemplate = w && (w->done || w->opIndex > op);
    }
    if (useTemplate) {
      out = concat(out, template_[op]);
    } else if (op - firstOp >= config_.completionOps) {
      out.push_back(env_.space().make(env_.space().noTransformation));
    } else {
      Actions finish = heuristic_.finishOp(out);
      if (finish.empty()) break;
      out = concat(out, finish);
    }
    v = env_.observe(out);
  }
  return out;
}

void Search::perOp(int width) {
  seedEvaluations();
  if (!env_.best()) return;
  std::vector<double> weights = opWeights();
  Actions incumbent = env_.best()->actions;
  double incumbentNs = env_.best()->result.timeNs;
  template_ = segments(incumbent);
  // Passes over the ops (coordinate descent): each op's schedule searched with the others fixed at the incumbent's,
  // until a pass changes nothing or the budget is spent.
  for (int pass = 0; pass < 16 && !env_.exhausted(); ++pass) {
    bool improved = false;
    for (int op = 0; op < static_cast<int>(template_.size()) && !env_.exhausted(); ++op) {
      Actions prefix;
      for (int i = 0; i < op; ++i) prefix = concat(prefix, template_[i]);
      std::optional<View> v = env_.observe(prefix);
      if (!v || v->done || v->opIndex != op) continue;
      double rest = 0;
      for (size_t i = op; i < weights.size(); ++i) rest += weights[i];
      double share = op < static_cast<int>(weights.size()) && rest > 0 ? weights[op] / rest : 1.0;
      // The op's share of the evaluations left, by iteration space (what it costs), at least 2 (1 for ops below 2 %
      // of the work: their children differ by less than the measurements' noise).
      int opsLeft = std::max(1, v->numOps - op);
      int floor = std::min(share < 0.02 ? 1 : 2, std::max(1, env_.remaining() / opsLeft));
      int budget = std::max(floor, static_cast<int>(std::lround(env_.remaining() * share)));
      Node start;
      start.prefix = prefix;
      start.full = incumbent;
      start.timeNs = incumbentNs;
      start.scored = true;
      Node best = bestOp(start, width, budget, op);
      if (best.timeNs < incumbentNs) {
        incumbent = env_.normalize(best.full);
        incumbentNs = best.timeNs;
        template_ = segments(incumbent);
        improved = true;
      }
    }
    if (!improved) break;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Local search from the heuristic's schedule

std::vector<Actions> Search::segments(const Actions &schedule) {
  std::optional<View> first = env_.observe({});
  int numOps = first ? first->numOps : 0;
  std::vector<Actions> segs(numOps);
  Actions full = schedule;
  for (int i = 0; i <= numOps; ++i) full.push_back(env_.space().make(env_.space().noTransformation));
  Actions prefix;
  for (const Action &a : full) {
    std::optional<View> v = env_.observe(prefix);
    if (!v || v->done) break;
    segs[v->opIndex].push_back(a);
    prefix.push_back(a);
  }
  return segs;
}

// Replaces op `op`'s segment by a neighbour and repairs the segments after it (kept when still legal, otherwise the
// heuristic's). False when no neighbour was found.
bool Search::mutate(std::vector<Actions> &segs, int op) {
  const Space &s = env_.space();
  Actions prefix;
  for (int i = 0; i < op; ++i) prefix = concat(prefix, segs[i]);
  std::optional<View> view = env_.observe(prefix);
  if (!view || view->done || view->opIndex != op) return false;
  Actions seg = segs[op];
  Actions next;
  std::uniform_real_distribution<double> u(0, 1);
  double r = u(rng_);
  // Tiling-like actions of the segment, to tweak one size.
  std::vector<size_t> tilings;
  for (size_t k = 0; k < seg.size(); ++k)
    if (isTilingType(s, seg[k][0])) tilings.push_back(k);
  if (r < 0.55 && !tilings.empty()) {
    size_t k = tilings[std::uniform_int_distribution<size_t>(0, tilings.size() - 1)(rng_)];
    Actions before = concat(prefix, Actions(seg.begin(), seg.begin() + k));
    std::optional<View> at = env_.observe(before);
    if (!at || at->done) return false;
    std::vector<int> loops;
    for (int i = 0; i < at->numLoops() && i < s.maxLoops; ++i) {
      int legal = 0;
      for (size_t c = 0; c < at->maskTiles[i].size(); ++c) legal += at->maskTiles[i][c];
      if (legal > 1) loops.push_back(i);
    }
    if (loops.empty()) return false;
    int i = loops[std::uniform_int_distribution<size_t>(0, loops.size() - 1)(rng_)];
    std::vector<int> choices;  // legal values in size order: 1, 2, 4, ..., then 0 (untiled) last
    for (size_t c = 1; c < at->maskTiles[i].size(); ++c)
      if (at->maskTiles[i][c]) choices.push_back(static_cast<int>(c));
    choices.push_back(0);
    int cur = static_cast<int>(seg[k][1 + i]);
    auto pos = std::find(choices.begin(), choices.end(), cur);
    int p = pos == choices.end() ? static_cast<int>(choices.size()) - 1 : static_cast<int>(pos - choices.begin());
    int q;
    if (u(rng_) < 0.8)
      q = p + (u(rng_) < 0.5 ? -1 : 1);
    else
      q = std::uniform_int_distribution<int>(0, static_cast<int>(choices.size()) - 1)(rng_);
    if (q < 0 || q >= static_cast<int>(choices.size()) || q == p) return false;
    Action changed = seg[k];
    changed[1 + i] = choices[q];
    next = Actions(seg.begin(), seg.begin() + k);
    next.push_back(changed);
    next.insert(next.end(), seg.begin() + k + 1, seg.end());
  } else if (r < 0.85) {
    // A child of the op's first state, finished by the heuristic.
    std::vector<Actions> kids = expand(prefix, *view);
    if (kids.empty()) return false;
    const Actions &c = kids[std::uniform_int_distribution<size_t>(0, kids.size() - 1)(rng_)];
    next = concat(c, heuristic_.finishOp(concat(prefix, c)));
  } else {
    // Insert an unroll, or drop an action other than the last.
    bool inserted = false;
    if (u(rng_) < 0.5 && seg.size() >= 2 && seg.back()[0] == s.vectorization) {
      Actions before = concat(prefix, Actions(seg.begin(), seg.end() - 1));
      std::optional<View> at = env_.observe(before);
      if (at && !at->done && at->legal(s.unroll) && at->actionsOnOp + 2 <= env_.actionsPerOp()) {
        std::vector<int64_t> factors;
        for (size_t c = 1; c < s.tileSizes.size(); ++c)
          if (at->tileLegal(s.maxLoops - 1, static_cast<int>(c))) factors.push_back(s.tileSizes[c]);
        if (!factors.empty()) {
          next = Actions(seg.begin(), seg.end() - 1);
          next.push_back(s.unrollBy(factors[std::uniform_int_distribution<size_t>(0, factors.size() - 1)(rng_)]));
          next.push_back(seg.back());
          inserted = true;
        }
      }
    }
    if (!inserted) {
      if (seg.size() < 2) return false;
      size_t k = std::uniform_int_distribution<size_t>(0, seg.size() - 2)(rng_);
      if (seg[k][0] == s.interchange) return false;  // a level pointer alone leaves the interchange open
      next = seg;
      next.erase(next.begin() + k);
    }
  }
  // The new segment must be legal and finish the op; if it breaks off, the heuristic finishes from where it can.
  Actions kept;
  for (const Action &a : next) {
    std::optional<View> v = env_.observe(concat(prefix, kept));
    if (!v || v->done || v->opIndex != op || !env_.allows(*v, a)) break;
    kept.push_back(a);
  }
  std::optional<View> after = env_.observe(concat(prefix, kept));
  if (!after) return false;
  if (!after->done && after->opIndex == op) kept = concat(kept, heuristic_.finishOp(concat(prefix, kept)));
  if (kept == segs[op]) return false;
  segs[op] = kept;
  // Later ops: keep their segments while they remain legal.
  Actions done = concat(prefix, kept);
  for (size_t j = op + 1; j < segs.size(); ++j) {
    std::optional<View> v = env_.observe(done);
    if (!v || v->done) {
      segs.resize(j);
      break;
    }
    std::optional<View> w = env_.observe(concat(done, segs[j]));
    bool ok = w && (w->done || w->opIndex > v->opIndex);
    if (!ok) segs[j] = heuristic_.finishOp(done);
    done = concat(done, segs[j]);
  }
  return true;
}

void Search::local() {
  seedEvaluations();
  std::vector<double> weights = opWeights();
  if (weights.empty() || !env_.best()) return;
  for (double &w : weights) w = std::sqrt(w);  // every op gets a chance, the costly ones more
  std::discrete_distribution<int> pickOp(weights.begin(), weights.end());
  Actions current = env_.best()->actions;
  double currentNs = env_.best()->result.timeNs;
  int idle = 0;
  while (!env_.exhausted() && idle < 500) {
    std::vector<Actions> segs = segments(current);
    if (segs.empty()) break;
    // One change at a time; two or three once single changes stop finding new schedules.
    int wanted = idle > 200 ? 3 : idle > 50 ? 2 : 1, changed = 0;
    for (int m = 0; m < wanted; ++m) {
      int op = pickOp(rng_);
      changed += op < static_cast<int>(segs.size()) && mutate(segs, op);
    }
    if (changed == 0) {
      ++idle;
      continue;
    }
    Actions candidate;
    for (const Actions &seg : segs) candidate = concat(candidate, seg);
    if (env_.known(candidate)) {
      ++idle;
      continue;
    }
    idle = 0;
    std::optional<EvalResult> r = env_.evaluateOne(candidate, "local");
    if (!r) break;
    if (r->ok && r->timeNs < currentNs * (1 - config_.minGain)) {
      current = env_.normalize(candidate);
      currentNs = r->timeNs;
    }
  }
}

}  // namespace mlir_rl::cli
