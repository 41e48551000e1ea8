#include "Env.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <sstream>

namespace mlir_rl::cli {

std::string formatAction(const Action &a) {
  std::string s = "[";
  for (size_t i = 0; i < a.size(); ++i) s += (i ? "," : "") + std::to_string(a[i]);
  return s + "]";
}

std::string formatActions(const Actions &actions) {
  std::string s;
  for (const Action &a : actions) s += formatAction(a);
  return s;
}

RpcError::RpcError(const std::string &what, const grpc::Status &status)
    : std::runtime_error(what + " failed: " + status.error_message() + " (gRPC code " +
                         std::to_string(static_cast<int>(status.error_code())) + ")"),
      code(status.error_code()) {}

std::unique_ptr<grpc::ClientContext> makeContext(const CallSettings &settings, double timeoutS) {
  auto c = std::make_unique<grpc::ClientContext>();
  double t = timeoutS > 0 ? timeoutS : settings.timeoutS;
  c->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(t * 1000)));
  if (!settings.token.empty()) c->AddMetadata("authorization", "Bearer " + settings.token);
  return c;
}

// ---------------------------------------------------------------------------------------------------------------
// Space

Space::Space(const v1::MultiDiscreteSpace &space)
    : nvec(space.nvec().begin(), space.nvec().end()),
      typeNames(space.type_names().begin(), space.type_names().end()),
      tileSizes(space.tile_sizes().begin(), space.tile_sizes().end()) {
  maxLoops = static_cast<int>(nvec.size()) - 2;
  auto find = [&](const char *name, int fallback) {
    for (size_t i = 0; i < typeNames.size(); ++i)
      if (typeNames[i] == name) return static_cast<int>(i);
    return fallback;
  };
  noTransformation = find("NO_TRANSFORMATION", 0);
  tiling = find("TILING", 1);
  parallelTiling = find("TILED_PARALLELIZATION", 2);
  interchange = find("INTERCHANGE", 3);
  vectorization = find("VECTORIZATION", 4);
  fusion = find("TILED_FUSION", 5);
  img2col = find("IMG2COL", 6);
  unroll = find("UNROLL", 7);
  peeledTiling = find("PEELED_TILING", -1);  // servers before it: -1
  pack = find("PACK", -1);
  split = find("SPLIT_REDUCTION", -1);
}

int Space::tileIndex(int64_t size) const {
  if (size == 0) return 0;
  for (size_t k = 1; k < tileSizes.size(); ++k)
    if (tileSizes[k] == size) return static_cast<int>(k);
  return -1;
}

Action Space::make(int type) const {
  Action a(nvec.size(), 0);
  a[0] = type;
  return a;
}

Action Space::tiles(int type, const std::vector<int64_t> &sizes) const {
  Action a = make(type);
  for (size_t i = 0; i < sizes.size() && static_cast<int>(i) < maxLoops; ++i) {
    int k = tileIndex(sizes[i]);
    if (k < 0) throw std::invalid_argument("tile size " + std::to_string(sizes[i]) + " is not a choice of the space");
    a[1 + i] = k;
  }
  return a;
}

Action Space::pointer(int loop) const {
  Action a = make(interchange);
  a.back() = loop;
  return a;
}

Action Space::unrollBy(int64_t factor) const {
  Action a = make(unroll);
  int k = tileIndex(factor);
  a[maxLoops] = k < 0 ? 0 : k;  // head tile_{L-1}
  return a;
}

std::string Space::typeName(int64_t type) const {
  return type >= 0 && type < static_cast<int64_t>(typeNames.size()) ? typeNames[type] : std::to_string(type);
}

std::string Space::brief(const Action &a) const {
  int type = static_cast<int>(a[0]);
  auto sizes = [&] {
    int last = 0;
    for (int i = 0; i < maxLoops; ++i)
      if (a[1 + i] != 0) last = i + 1;
    std::string s = "[";
    for (int i = 0; i < last; ++i) s += (i ? "," : "") + std::to_string(tileSizes[a[1 + i]]);
    return s + "]";
  };
  if (type == noTransformation) return "NOP";
  if (type == tiling) return "T" + sizes();
  if (type == parallelTiling) return "TP" + sizes();
  if (type == fusion) return "TF" + sizes();
  if (type == interchange) return "I" + std::to_string(a.back());
  if (type == vectorization) return "V";
  if (type == img2col) return "IMG2COL";
  if (type == pack) return "PACK";
  if (type == split) return "SPLIT";
  if (type == unroll) return "U" + std::to_string(tileSizes[a[maxLoops]]);
  if (type == peeledTiling) return "PT" + sizes();
  return typeName(type);
}

std::string Space::brief(const Actions &actions) const {
  std::string s;
  for (const Action &a : actions) s += (s.empty() ? "" : " ") + brief(a);
  return s.empty() ? "(untransformed)" : s;
}

Actions Space::parse(const std::string &text) const {
  Actions out;
  std::istringstream in(text);
  std::string token;
  auto bad = [&](const std::string &why) { return std::invalid_argument("schedule token '" + token + "': " + why); };
  auto number = [&](const std::string &digits) {
    if (digits.empty() || digits.size() > 9 ||
        !std::all_of(digits.begin(), digits.end(), [](unsigned char c) { return std::isdigit(c); }))
      throw bad("'" + digits + "' is not a non-negative integer");
    return static_cast<int64_t>(std::stoll(digits));
  };
  while (in >> token) {
    if (token == "(untransformed)") continue;
    if (token == "NOP") {
      out.push_back(make(noTransformation));
    } else if (token == "V") {
      out.push_back(make(vectorization));
    } else if (token == "IMG2COL") {
      out.push_back(make(img2col));
    } else if (token == "PACK") {
      if (pack < 0) throw bad("the server has no PACK");
      out.push_back(make(pack));
    } else if (token == "SPLIT") {
      if (split < 0) throw bad("the server has no SPLIT_REDUCTION");
      out.push_back(make(split));
    } else if (token.size() > 1 && token[0] == 'I' && std::isdigit(static_cast<unsigned char>(token[1]))) {
      int64_t loop = number(token.substr(1));
      if (loop >= nvec.back())
        throw bad("level pointer past the interchange head's " + std::to_string(nvec.back()) + " values");
      out.push_back(pointer(static_cast<int>(loop)));
    } else if (token.size() > 1 && token[0] == 'U' && std::isdigit(static_cast<unsigned char>(token[1]))) {
      int64_t factor = number(token.substr(1));
      if (factor != 0 && tileIndex(factor) <= 0)
        throw bad("unroll factor " + std::to_string(factor) + " is not a tile size choice");
      out.push_back(unrollBy(factor));
    } else {
      size_t open = token.find('[');
      std::string kind = token.substr(0, open);
      int type = kind == "T"    ? tiling
                 : kind == "TP" ? parallelTiling
                 : kind == "TF" ? fusion
                 : kind == "PT" ? peeledTiling
                                : -2;
      if (type == -2 || open == std::string::npos || token.back() != ']')
        throw bad("expected NOP, V, IMG2COL, PACK, SPLIT, I<loop>, U<factor> or T/TP/TF/PT[sizes]");
      if (type < 0) throw bad("the server has no PEELED_TILING");
      std::vector<int64_t> sizes;
      std::string list = token.substr(open + 1, token.size() - open - 2), item;
      std::istringstream items(list);
      while (std::getline(items, item, ',')) sizes.push_back(number(item));
      if (static_cast<int>(sizes.size()) > maxLoops)
        throw bad(std::to_string(sizes.size()) + " sizes for " + std::to_string(maxLoops) + " tile heads");
      try {
        out.push_back(tiles(type, sizes));
      } catch (const std::invalid_argument &e) {
        throw bad(e.what());
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Observations

namespace {

const v1::Tensor *findTensor(const v1::Observation &obs, const std::string &name) {
  for (const auto &t : obs.tensors())
    if (t.name() == name) return &t;
  return nullptr;
}

template <typename T>
std::vector<T> values(const v1::Observation &obs, const std::string &name) {
  const v1::Tensor *t = findTensor(obs, name);
  if (!t) throw std::runtime_error("the observation has no tensor '" + name + "'");
  std::vector<T> out(t->data().size() / sizeof(T));
  std::memcpy(out.data(), t->data().data(), out.size() * sizeof(T));
  return out;
}

const char *kViewTensors[] = {"op_type",   "loop_bounds", "iterator_types",   "progress",
                              "mask_type", "mask_tiles",  "mask_interchange", "interchange_partial"};

void requestViewTensors(v1::ObservationRequest *request, const Space &space) {
  for (const char *name : kViewTensors) request->add_names(name);
  if (space.peeledTiling >= 0) request->add_names("mask_tiles_peeled");
  request->add_names("load_access");
  request->add_names("access_ranks");
}

// The loops each input's index uses, and those of its innermost index, from `load_access` ([access, dim, loop + 1]
// coefficients) and `access_ranks` (row 0: each load's rank, -1 past the last).
void parseLoads(const v1::Observation &obs, View &v) {
  const v1::Tensor *access = findTensor(obs, "load_access");
  const v1::Tensor *ranks = findTensor(obs, "access_ranks");
  if (!access || !ranks || access->shape_size() != 3) return;
  std::vector<int32_t> a = values<int32_t>(obs, "load_access"), r = values<int32_t>(obs, "access_ranks");
  int64_t dims = access->shape(1), cols = access->shape(2);
  int64_t count = std::min<int64_t>(access->shape(0), static_cast<int64_t>(r.size()) / 2);
  int loops = std::min<int>(v.numLoops(), std::min<int64_t>(64, cols - 1));
  for (int64_t i = 0; i < count && r[i] >= 0; ++i) {
    uint64_t all = 0, inner = 0;
    for (int64_t d = 0; d < std::min<int64_t>(r[i], dims); ++d)
      for (int l = 0; l < loops; ++l)
        if (a[(i * dims + d) * cols + l] != 0) {
          all |= uint64_t{1} << l;
          if (d == r[i] - 1) inner |= uint64_t{1} << l;
        }
    v.inputLoops.push_back(all);
    v.inputInnermostLoops.push_back(inner);
  }
}

}  // namespace

int64_t View::iterationSpace() const {
  int64_t n = 1;
  for (int64_t b : bounds) n *= std::max<int64_t>(b, 1);
  return n;
}

View parseView(const v1::Observation &obs, const v1::EpisodeInfo &info, bool terminated, bool truncated,
               const Space &space) {
  View v;
  v.done = terminated || truncated;
  v.opIndex = info.op_index();
  v.numOps = info.num_ops();
  v.steps = info.step();
  v.opName = info.current_op();
  v.interchangePending = info.interchange_pending();
  std::vector<int64_t> progress = values<int64_t>(obs, "progress");
  if (progress.size() >= 4) v.actionsOnOp = static_cast<int>(progress[3]);
  std::vector<float> family = values<float>(obs, "op_type");
  for (size_t i = 0; i < family.size(); ++i)
    if (family[i] > 0.5f) v.family = static_cast<int>(i);
  std::vector<int64_t> bounds = values<int64_t>(obs, "loop_bounds");
  std::vector<int32_t> iterators = values<int32_t>(obs, "iterator_types");
  for (size_t i = 0; i < bounds.size() && bounds[i] > 0; ++i) {
    v.bounds.push_back(bounds[i]);
    v.iterators.push_back(i < iterators.size() ? iterators[i] : 1);
  }
  std::vector<uint8_t> type = values<uint8_t>(obs, "mask_type"), tiles = values<uint8_t>(obs, "mask_tiles");
  v.maskType = type;
  int K = space.nvec.size() > 1 ? static_cast<int>(space.nvec[1]) : 1;
  for (int i = 0; i < space.maxLoops; ++i) v.maskTiles.emplace_back(tiles.begin() + i * K, tiles.begin() + (i + 1) * K);
  if (space.peeledTiling >= 0 && findTensor(obs, "mask_tiles_peeled")) {
    std::vector<uint8_t> peeled = values<uint8_t>(obs, "mask_tiles_peeled");
    for (int i = 0; i < space.maxLoops; ++i)
      v.maskTilesPeeled.emplace_back(peeled.begin() + i * K, peeled.begin() + (i + 1) * K);
  }
  v.maskInterchange = values<uint8_t>(obs, "mask_interchange");
  parseLoads(obs, v);
  for (int64_t loop : values<int64_t>(obs, "interchange_partial")) v.placedLoops += loop >= 0;
  return v;
}

EvalResult toResult(const v1::Evaluation &e) {
  EvalResult r;
  r.ok = e.failure().empty() && e.correct();
  r.cached = e.cached();
  r.timeNs = e.median_ns();
  r.referenceNs = e.reference_ns();
  r.speedup = e.speedup();
  r.spread = e.spread();
  r.lowerMs = e.lower_ms();
  r.jitMs = e.jit_ms();
  r.failure = e.failure();
  if (!r.ok && r.failure.empty()) r.failure = "wrong result";
  return r;
}

// ---------------------------------------------------------------------------------------------------------------
// Env

Env::Env(std::shared_ptr<grpc::Channel> channel, CallSettings settings, std::string benchmark,
         v1::SessionOptions options, uint64_t seed)
    : channel_(std::move(channel)),
      stub_(v1::MlirRlEnv::NewStub(channel_)),
      settings_(std::move(settings)),
      benchmark_(std::move(benchmark)),
      options_(std::move(options)),
      seed_(seed) {
  v1::GetSpacesRequest request;
  *request.mutable_options() = options_;
  v1::GetSpacesReply reply;
  grpc::Status s = stub_->GetSpaces(makeContext(settings_).get(), request, &reply);
  if (!s.ok()) throw RpcError("GetSpaces", s);
  space_ = Space(reply.action_space().multi_discrete());
  for (const v1::Space &o : reply.observation_space())
    if (o.name() == "action_history" && o.box().shape_size() > 0) actionsPerOp_ = static_cast<int>(o.box().shape(0));
}

bool Env::allows(const View &view, const Action &a) const {
  int type = static_cast<int>(a[0]);
  if (!view.legal(type)) return false;
  if (type == space_.tiling || type == space_.parallelTiling || type == space_.fusion) {
    for (int i = 0; i < space_.maxLoops; ++i)
      if (!view.tileLegal(i, static_cast<int>(a[1 + i]))) return false;
  } else if (type == space_.unroll) {
    if (!view.tileLegal(space_.maxLoops - 1, static_cast<int>(a[space_.maxLoops]))) return false;
  } else if (type == space_.interchange) {
    size_t p = static_cast<size_t>(a.back());
    if (p >= view.maskInterchange.size() || !view.maskInterchange[p]) return false;
  }
  return true;
}

bool Env::wouldEnd(const View &view, const Action &a) const {
  if (view.done) return true;
  int type = static_cast<int>(a[0]);
  bool completes = type != space_.noTransformation;
  if (type == space_.interchange && options_.interchange_mode() != v1::INTERCHANGE_MODE_SWAPS &&
      view.placedLoops + 2 < view.numLoops())
    completes = false;  // the level-pointer interchange stays open
  bool endsOp = type == space_.noTransformation || type == space_.vectorization ||
                (completes && view.actionsOnOp + 1 >= actionsPerOp_);
  return endsOp && view.opIndex + 1 >= view.numOps;
}

std::string Env::resetTo(const Actions &actions, v1::ResetReply *reply, grpc::Status *status) {
  v1::ResetRequest request;
  request.set_benchmark(benchmark_);
  *request.mutable_options() = options_;
  request.set_seed(seed_);
  for (const Action &a : actions) *request.add_replay_actions()->mutable_values() = {a.begin(), a.end()};
  requestViewTensors(request.mutable_observation(), space_);
  if (!spare_.empty()) request.set_close_session_id(spare_);
  spare_.clear();
  *status = stub_->Reset(makeContext(settings_).get(), request, reply);
  return status->ok() ? reply->session_id() : "";
}

void Env::closeSession(const std::string &id) {
  if (id.empty()) return;
  if (!spare_.empty()) {
    v1::CloseRequest request;
    request.set_session_id(spare_);
    v1::CloseReply reply;
    stub_->EndSession(makeContext(settings_).get(), request, &reply);  // best effort
  }
  spare_ = id;
}

std::optional<View> Env::observe(const Actions &actions) {
  std::string key = formatActions(actions);
  if (auto it = views_.find(key); it != views_.end()) return it->second;
  // A replay that ends the episode would be evaluated inside Reset: never observe such a state, say it is done.
  if (!actions.empty()) {
    std::optional<View> parent = observe(Actions(actions.begin(), actions.end() - 1));
    if (!parent || parent->done || !allows(*parent, actions.back())) return views_[key] = std::nullopt;
    if (wouldEnd(*parent, actions.back())) {
      View done;
      done.done = true;
      done.opIndex = done.numOps = parent->numOps;
      return views_[key] = done;
    }
  }
  v1::ResetReply reply;
  grpc::Status status;
  std::string id = resetTo(actions, &reply, &status);
  ++observations_;
  std::optional<View> view;
  if (status.ok()) {
    view = parseView(reply.observation(), reply.info(), reply.terminated(), reply.truncated(), space_);
    closeSession(id);
  } else if (status.error_code() != grpc::StatusCode::INVALID_ARGUMENT) {
    throw RpcError("Reset (replaying " + std::to_string(actions.size()) + " actions)", status);
  }
  views_[key] = view;
  return view;
}

void Env::setBudget(int maxEvaluations, double maxSeconds) {
  maxEvaluations_ = maxEvaluations > 0 ? maxEvaluations : (1 << 30);
  maxSeconds_ = maxSeconds > 0 ? maxSeconds : 1e18;
  start_ = std::chrono::steady_clock::now();
}

double Env::elapsedS() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

int Env::remaining() const { return exhausted() ? 0 : maxEvaluations_ - evaluations_; }

bool Env::exhausted() const { return evaluations_ >= maxEvaluations_ || elapsedS() >= maxSeconds_; }

Actions Env::normalize(const Actions &schedule) const {
  Actions out = schedule;
  while (!out.empty() && out.back()[0] == space_.noTransformation) out.pop_back();
  return out;
}

const EvalResult *Env::known(const Actions &schedule) const {
  auto it = results_.find(formatActions(normalize(schedule)));
  return it == results_.end() ? nullptr : &it->second;
}

void Env::record(const Actions &schedule, const EvalResult &result, const std::string &origin) {
  results_[formatActions(schedule)] = result;
  Candidate c;
  c.actions = schedule;
  c.result = result;
  c.wallS = elapsedS();
  c.index = evaluations_;
  c.origin = origin;
  history_.push_back(std::move(c));
  if (result.referenceNs > 0) referenceNs_ = result.referenceNs;
  if (result.ok && (bestIndex_ < 0 || result.timeNs < history_[bestIndex_].result.timeNs))
    bestIndex_ = static_cast<int>(history_.size()) - 1;
  if (callback_) callback_(*this);
}

std::optional<EvalResult> Env::evaluateOne(const Actions &schedule, const std::string &origin) {
  return evaluate({schedule}, origin)[0];
}

std::vector<std::optional<EvalResult>> Env::evaluate(const std::vector<Actions> &schedules, const std::string &origin) {
  std::vector<std::optional<EvalResult>> out(schedules.size());
  std::vector<Actions> normalized;
  for (const Actions &s : schedules) normalized.push_back(normalize(s));
  // New schedules, each once.
  std::vector<size_t> todo;
  std::map<std::string, size_t> first;
  for (size_t i = 0; i < schedules.size(); ++i) {
    std::string key = formatActions(normalized[i]);
    if (auto it = results_.find(key); it != results_.end()) {
      out[i] = it->second;
    } else if (first.emplace(key, i).second) {
      todo.push_back(i);
    }
  }
  size_t next = 0;
  std::map<size_t, int> aborted;
  while (next < todo.size() && !exhausted()) {
    size_t n = std::min<size_t>(
        {static_cast<size_t>(parallel_), todo.size() - next, static_cast<size_t>(maxEvaluations_ - evaluations_)});
    // One session per schedule, replayed up to its last action; the last action and the NO_TRANSFORMATIONs that
    // end the episode go in one StepMany.
    v1::StepManyRequest many;
    std::vector<size_t> entries;
    std::vector<std::string> sessions;
    for (size_t j = 0; j < n; ++j) {
      size_t i = todo[next + j];
      const Actions &s = normalized[i];
      Actions replay(s.begin(), s.empty() ? s.begin() : s.end() - 1);
      v1::ResetReply reply;
      grpc::Status status;
      std::string id = resetTo(replay, &reply, &status);
      if (!status.ok()) {
        if (status.error_code() != grpc::StatusCode::INVALID_ARGUMENT)
          throw RpcError("Reset (replaying a candidate)", status);
        EvalResult invalid;
        invalid.failure = "invalid schedule: " + status.error_message();
        out[i] = invalid;
        results_[formatActions(s)] = invalid;
        continue;
      }
      v1::StepRequest *step = many.add_steps();
      step->set_session_id(id);
      step->mutable_observation()->add_names("progress");  // the observation is not read: keep it small
      if (!s.empty()) *step->add_actions()->mutable_values() = {s.back().begin(), s.back().end()};
      Action nop = space_.make(space_.noTransformation);
      for (int k = 0; k <= reply.info().num_ops(); ++k)
        *step->add_actions()->mutable_values() = {nop.begin(), nop.end()};
      entries.push_back(i);
      sessions.push_back(id);
    }
    next += n;
    if (entries.empty()) continue;
    v1::StepManyReply replies;
    grpc::Status status = stub_->StepMany(makeContext(settings_).get(), many, &replies);
    if (!status.ok()) throw RpcError("StepMany", status);
    for (size_t j = 0; j < entries.size(); ++j) {
      size_t i = entries[j];
      const v1::StepManyResult &r = replies.results(static_cast<int>(j));
      EvalResult result;
      if (r.code() != 0) {
        if (r.code() == static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT)) {
          result.failure = "invalid schedule: " + r.message();
          out[i] = result;
          results_[formatActions(normalized[i])] = result;
          continue;
        }
        if (r.code() == static_cast<int>(grpc::StatusCode::ABORTED) && ++aborted[i] <= 2) {
          todo.push_back(i);  // the server could not evaluate it (a worker killed from outside): try again
          continue;
        }
        throw std::runtime_error("StepMany entry failed: " + r.message() + " (gRPC code " + std::to_string(r.code()) +
                                 ")");
      }
      bool found = false;
      for (const v1::StepOutcome &o : r.reply().outcomes())
        if (o.has_evaluation()) {
          result = toResult(o.evaluation());
          found = true;
        }
      if (!found) result.failure = "the episode did not end";
      ++evaluations_;
      measured_ += found && !result.cached;
      out[i] = result;
      record(normalized[i], result, origin);
    }
    for (const std::string &id : sessions) {
      v1::CloseRequest request;
      request.set_session_id(id);
      v1::CloseReply reply;
      stub_->EndSession(makeContext(settings_).get(), request, &reply);
    }
  }
  // Duplicates within the batch.
  for (size_t i = 0; i < schedules.size(); ++i)
    if (!out[i])
      if (auto it = results_.find(formatActions(normalized[i])); it != results_.end()) out[i] = it->second;
  return out;
}

Env::Export Env::exportSchedule(const Actions &schedule) {
  Actions s = normalize(schedule);
  Export out;
  v1::ResetReply reply;
  grpc::Status status;
  std::string id = resetTo({}, &reply, &status);
  if (!status.ok()) throw RpcError("Reset", status);
  v1::StepRequest step;
  step.set_session_id(id);
  step.mutable_observation()->add_names("progress");
  for (const Action &a : s) *step.add_actions()->mutable_values() = {a.begin(), a.end()};
  Action nop = space_.make(space_.noTransformation);
  for (int k = 0; k <= reply.info().num_ops(); ++k) *step.add_actions()->mutable_values() = {nop.begin(), nop.end()};
  v1::StepReply stepped;
  status = stub_->Step(makeContext(settings_).get(), step, &stepped);
  if (!status.ok()) throw RpcError("Step (replaying the best schedule)", status);
  for (const v1::StepOutcome &o : stepped.outcomes()) out.descriptions.push_back(o.description());
  v1::ExportScheduleRequest request;
  request.set_session_id(id);
  status = stub_->ExportSchedule(makeContext(settings_).get(), request, &out.schedule);
  if (!status.ok()) throw RpcError("ExportSchedule", status);
  closeSession(id);
  return out;
}

}  // namespace mlir_rl::cli
