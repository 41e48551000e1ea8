#include "env/Benchmark.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Support/xxhash.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "env/Generators.h"
#include "env/Validation.h"
#include "support/Context.h"
#include "support/Diagnostics.h"
#include "transforms/Transform.h"

namespace mlir_rl::env {

namespace fs = std::filesystem;

const char *opFamilyName(OpFamily family) {
  switch (family) {
    case OpFamily::Generic: return "generic";
    case OpFamily::Matmul: return "matmul";
    case OpFamily::Conv: return "conv";
    case OpFamily::Pooling: return "pooling";
    case OpFamily::Elementwise: return "elementwise";
    case OpFamily::Other: return "other";
  }
  return "other";
}

bool isEvalDataset(const std::string &dataset) {
  return dataset == "models" || dataset == "models-full" || dataset == "lqcd";
}

namespace {
// Name and operand types of an op: two benchmarks share an op when their signatures are equal.
std::string opSignature(mlir::Operation *op) {
  std::string s = op->getName().getStringRef().str();
  llvm::raw_string_ostream os(s);
  for (mlir::Type t : op->getOperandTypes()) os << " " << t;
  return os.str();
}

std::vector<std::string> scheduledSignatures(mlir::ModuleOp module) {
  std::vector<std::string> out;
  module.walk([&](mlir::linalg::LinalgOp op) {
    if (!mlir::isa<mlir::linalg::FillOp>(op.getOperation())) out.push_back(opSignature(op));
  });
  return out;
}
}  // namespace

OpFamily classifyOp(mlir::Operation *op) {
  llvm::StringRef name = op->getName().getStringRef();
  if (name.contains("matmul") || name.contains("matvec") || name.contains("vecmat") || name == "linalg.dot" ||
      name == "linalg.contract")
    return OpFamily::Matmul;
  if (name.starts_with("linalg.conv") || name.starts_with("linalg.depthwise_conv")) return OpFamily::Conv;
  if (name.starts_with("linalg.pooling")) return OpFamily::Pooling;
  if (name == "linalg.add" || name == "linalg.sub" || name == "linalg.mul" || name == "linalg.div" ||
      name == "linalg.max" || name == "linalg.min" || name.starts_with("linalg.elemwise") || name == "linalg.exp" ||
      name == "linalg.abs" || name == "linalg.negf")
    return OpFamily::Elementwise;
  if (auto generic = mlir::dyn_cast<mlir::linalg::GenericOp>(op)) {
    bool allParallel = generic.getNumReductionLoops() == 0;
    bool allIdentity = llvm::all_of(generic.getIndexingMapsArray(),
                                    [](mlir::AffineMap m) { return m.isIdentity() || m.isMinorIdentity(); });
    return allParallel && allIdentity ? OpFamily::Elementwise : OpFamily::Generic;
  }
  return OpFamily::Other;
}

namespace {

int64_t countFlops(mlir::linalg::LinalgOp op) {
  int64_t iterations = 1;
  for (int64_t r : op.getStaticLoopRanges()) {
    if (mlir::ShapedType::isDynamic(r)) return 0;
    iterations *= r;
  }
  int64_t perIteration = 0;
  if (op->getNumRegions() == 1 && !op->getRegion(0).empty()) {
    for (mlir::Operation &inner : op->getRegion(0).front())
      if (inner.getDialect() &&
          (inner.getDialect()->getNamespace() == "arith" || inner.getDialect()->getNamespace() == "math"))
        ++perIteration;
  }
  return iterations * std::max<int64_t>(perIteration, 1);
}

}  // namespace

absl::StatusOr<std::shared_ptr<Benchmark>> Benchmark::parse(mlir::MLIRContext *ctx, const std::string &uri,
                                                            const std::string &text) {
  support::DiagnosticCapture capture;
  mlir::ParserConfig config(ctx);
  mlir::OwningOpRef<mlir::ModuleOp> module = mlir::parseSourceString<mlir::ModuleOp>(text, config, uri);
  if (!module) return absl::InvalidArgumentError(absl::StrCat("benchmark ", uri, " does not parse: ", capture.take()));
  if (mlir::failed(mlir::verify(*module)))
    return absl::InvalidArgumentError(absl::StrCat("benchmark ", uri, " does not verify: ", capture.take()));
  std::string description;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    absl::string_view l = line;
    if (absl::ConsumePrefix(&l, "// description:")) {
      description = std::string(absl::StripAsciiWhitespace(l));
      break;
    }
  }
  return fromModule(std::move(module), uri, description);
}

absl::StatusOr<std::shared_ptr<Benchmark>> Benchmark::fromModule(mlir::OwningOpRef<mlir::ModuleOp> module,
                                                                 const std::string &uri,
                                                                 const std::string &description) {
  mlir::MLIRContext *ctx = module->getContext();
  std::shared_ptr<Benchmark> b(new Benchmark());
  b->module_ = std::move(module);
  absl::StatusOr<runners::KernelSignature> signature = runners::analyzeKernel(*b->module_);
  if (!signature.ok())
    return absl::InvalidArgumentError(absl::StrCat("benchmark ", uri, ": ", signature.status().message()));
  b->signature_ = std::move(*signature);

  // Tag the schedulable ops in program order; schedule them in reverse.
  int64_t tag = 0;
  std::vector<ScheduledOp> programOrder;
  int64_t flops = 0;
  b->module_->walk([&](mlir::linalg::LinalgOp op) {
    if (mlir::isa<mlir::linalg::FillOp>(op.getOperation())) return;
    op->setAttr(transforms::kOpTagAttr, mlir::IntegerAttr::get(mlir::IntegerType::get(ctx, 64), tag));
    programOrder.push_back({tag, op->getName().getStringRef().str(), classifyOp(op)});
    flops += countFlops(op);
    ++tag;
  });
  b->schedule_.assign(programOrder.rbegin(), programOrder.rend());
  {
    llvm::raw_string_ostream os(b->taggedText_);
    b->module_->print(os);
  }

  BenchmarkInfo &info = b->info_;
  info.uri = uri;
  absl::string_view rest = uri;
  absl::ConsumePrefix(&rest, "benchmark://");
  size_t slash = rest.find('/');
  info.dataset = std::string(rest.substr(0, slash));
  info.name = slash == absl::string_view::npos ? std::string(rest) : std::string(rest.substr(slash + 1));
  info.description = description;
  info.numOps = static_cast<int>(programOrder.size());
  for (const ScheduledOp &op : programOrder) {
    std::string family = opFamilyName(op.family);
    if (std::find(info.opFamilies.begin(), info.opFamilies.end(), family) == info.opFamilies.end())
      info.opFamilies.push_back(family);
  }
  info.dtype = b->signature_.results.empty() ? "" : runners::elementName(b->signature_.results[0].kind);
  info.flops = flops;
  for (const auto &spec : b->signature_.args) info.bytes += spec.numBytes();
  for (const auto &spec : b->signature_.results) info.bytes += spec.numBytes();
  info.split = splitOf(info.dataset);
  return b;
}

BenchmarkRegistry::BenchmarkRegistry(mlir::MLIRContext *ctx, std::string directory)
    : ctx_(ctx), directory_(std::move(directory)) {}

absl::Status BenchmarkRegistry::scan() {
  std::error_code ec;
  if (!fs::is_directory(directory_, ec))
    return absl::NotFoundError(absl::StrCat("benchmarks directory ", directory_, " does not exist"));
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto &datasetEntry : fs::directory_iterator(directory_)) {
    if (!datasetEntry.is_directory()) continue;
    std::string dataset = datasetEntry.path().filename().string();
    for (const auto &file : fs::directory_iterator(datasetEntry.path())) {
      if (file.path().extension() != ".mlir") continue;
      paths_[absl::StrCat("benchmark://", dataset, "/", file.path().stem().string())] = file.path().string();
    }
  }
  return absl::OkStatus();
}

const std::set<std::string> &BenchmarkRegistry::evalSignatures() {
  // Called with generateMutex_-free access: computed once, under the registry lock for the flag.
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (evalSignaturesReady_) return evalSignatures_;
  }
  std::set<std::string> signatures;
  for (const std::string &u : uris()) {
    absl::string_view rest = u;
    absl::ConsumePrefix(&rest, "benchmark://");
    if (!isEvalDataset(std::string(rest.substr(0, rest.find('/'))))) continue;
    auto b = get(u);
    if (!b.ok()) continue;
    for (const std::string &sig : scheduledSignatures((*b)->module())) signatures.insert(sig);
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (!evalSignaturesReady_) {
    evalSignatures_ = std::move(signatures);
    evalSignaturesReady_ = true;
  }
  return evalSignatures_;
}

absl::StatusOr<std::shared_ptr<const Benchmark>> BenchmarkRegistry::generate(const std::string &uri) {
  absl::string_view rest = uri;
  absl::ConsumePrefix(&rest, "generator://");
  size_t slash = rest.find('/');
  uint64_t seed = 0;
  if (slash == absl::string_view::npos || !absl::SimpleAtoi(rest.substr(slash + 1), &seed))
    return absl::InvalidArgumentError(
        absl::StrCat("generator URI '", uri,
                     "' must look like generator://<family>/<seed> with a non-negative integer "
                     "seed (families: ",
                     absl::StrJoin(generatorFamilies(), ", "), ")"));
  std::string family(rest.substr(0, slash));
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = generated_.find(uri);
    if (it != generated_.end()) return it->second;
  }
  const std::set<std::string> &held = evalSignatures();
  std::shared_ptr<const Benchmark> chosen;
  for (int attempt = 0; attempt < 64 && !chosen; ++attempt) {
    auto text = generateBenchmark(family, seed, attempt);
    if (!text.ok()) return text.status();
    auto b = Benchmark::parse(ctx_, uri, *text);
    if (!b.ok())
      return absl::InternalError(
          absl::StrCat("generator ", family, " produced an invalid module: ", b.status().message()));
    bool collides = false;
    for (const std::string &sig : scheduledSignatures((*b)->module())) collides |= held.count(sig) > 0;
    if (!collides) chosen = std::move(*b);
  }
  if (!chosen) return absl::InternalError(absl::StrCat("generator ", family, " found no shape outside the eval split"));
  std::lock_guard<std::mutex> lock(mutex_);
  auto [it, inserted] = generated_.emplace(uri, chosen);
  if (inserted) {
    generatedOrder_.push_back(uri);
    while (generatedOrder_.size() > maxGenerated) {  // sessions keep their own reference to what they use
      generated_.erase(generatedOrder_.front());
      generatedOrder_.pop_front();
    }
  }
  return it->second;
}

absl::StatusOr<std::shared_ptr<const Benchmark>> BenchmarkRegistry::get(const std::string &uri) {
  if (absl::StartsWith(uri, "generator://")) return generate(uri);
  if (!absl::StartsWith(uri, "benchmark://"))
    return absl::InvalidArgumentError(absl::StrCat("benchmark URI '", uri,
                                                   "' must look like benchmark://<dataset>/<name> or "
                                                   "generator://<family>/<seed>"));
  std::string path;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto loaded = loaded_.find(uri);
    if (loaded != loaded_.end()) {
      if (auto lease = uploads_.find(uri); lease != uploads_.end())
        lease->second.lastUsed = std::chrono::steady_clock::now();
      return loaded->second;
    }
    auto it = paths_.find(uri);
    if (it == paths_.end()) {
      if (expiredUploads_.count(uri))
        return absl::NotFoundError(absl::StrCat("upload '", uri,
                                                "' expired: no session used it for a while "
                                                "(--upload_idle_timeout_s); upload it again (AddBenchmark)"));
      return absl::NotFoundError(absl::StrCat("unknown benchmark '", uri, "'"));
    }
    path = it->second;
  }
  std::ifstream in(path);
  if (!in) return absl::InternalError(absl::StrCat("cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  auto parsed = Benchmark::parse(ctx_, uri, text.str());
  if (!parsed.ok()) return absl::InternalError(std::string(parsed.status().message()));
  std::lock_guard<std::mutex> lock(mutex_);
  auto [it, inserted] = loaded_.emplace(uri, std::move(*parsed));
  return it->second;
}

std::shared_ptr<mlir::MLIRContext> BenchmarkRegistry::validationContext() {
  std::lock_guard<std::mutex> lock(mutex_);
  // Uniqued attributes and types (a large constant's data, say) live as long as their context: an upload is
  // validated in a context of its own kind, replaced once it has parsed 64 MiB, so rejected uploads leave nothing
  // behind in the context sessions share.
  if (!validation_ || validationBytes_ > (int64_t{64} << 20)) {
    validation_ = createUploadContext();
    validationBytes_ = 0;
  }
  return validation_;
}

absl::StatusOr<std::shared_ptr<const Benchmark>> BenchmarkRegistry::addUpload(const std::string &text,
                                                                              const std::string &description,
                                                                              const std::string &client) {
  std::string uri = absl::StrCat("benchmark://user/", absl::Hex(llvm::xxh3_64bits(text), absl::kZeroPad16));
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = loaded_.find(uri);
    if (it != loaded_.end()) {
      uploads_[uri].lastUsed = std::chrono::steady_clock::now();
      return it->second;
    }
    if (uploads_.size() >= maxUploads)
      return absl::ResourceExhaustedError(absl::StrCat("the server holds its maximum of ", maxUploads,
                                                       " uploads (--max_uploads); unused ones expire "
                                                       "(--upload_idle_timeout_s)"));
    if (auto held = uploadsPerClient_.find(client);
        held != uploadsPerClient_.end() && held->second >= maxUploadsPerClient)
      return absl::ResourceExhaustedError(absl::StrCat("client '", client, "' holds its maximum of ",
                                                       maxUploadsPerClient,
                                                       " uploads (--max_uploads_per_client); "
                                                       "unused ones expire (--upload_idle_timeout_s)"));
    validationBytes_ += static_cast<int64_t>(text.size());
  }
  // Validated (and rewritten: TOSA converted, run-time indices clamped) in the validation context, then brought
  // into the shared context as text.
  std::string validated;
  {
    std::shared_ptr<mlir::MLIRContext> scratch = validationContext();
    auto module = parseUpload(scratch.get(), text, "upload", uploadLimits);
    if (!module.ok()) return module.status();
    llvm::raw_string_ostream os(validated);
    (*module)->print(os);
  }
  support::DiagnosticCapture capture;
  mlir::OwningOpRef<mlir::ModuleOp> module =
      mlir::parseSourceString<mlir::ModuleOp>(validated, mlir::ParserConfig(ctx_), uri);
  if (!module) return absl::InternalError(absl::StrCat("a validated upload does not parse again: ", capture.take()));
  auto parsed =
      Benchmark::fromModule(std::move(module), uri, description.empty() ? "uploaded by a client" : description);
  if (!parsed.ok()) return parsed.status();
  std::lock_guard<std::mutex> lock(mutex_);
  auto [it, inserted] = loaded_.emplace(uri, std::move(*parsed));
  if (inserted) {
    uploads_[uri] = {client, std::chrono::steady_clock::now()};
    ++uploadsPerClient_[client];
    expiredUploads_.erase(uri);
    paths_[uri] = "";  // listed with the others
  }
  return it->second;
}

size_t BenchmarkRegistry::expireUploads(std::chrono::steady_clock::duration idle) {
  std::vector<std::shared_ptr<const Benchmark>> expired;  // freed outside the lock
  std::lock_guard<std::mutex> lock(mutex_);
  auto cutoff = std::chrono::steady_clock::now() - idle;
  for (auto it = uploads_.begin(); it != uploads_.end();) {
    auto loaded = loaded_.find(it->first);
    // Held by the registry alone: no session (nor a call in flight) uses it.
    if (it->second.lastUsed < cutoff && loaded != loaded_.end() && loaded->second.use_count() == 1) {
      expired.push_back(std::move(loaded->second));
      loaded_.erase(loaded);
      paths_.erase(it->first);
      if (auto held = uploadsPerClient_.find(it->second.client); held != uploadsPerClient_.end() && --held->second == 0)
        uploadsPerClient_.erase(held);
      if (expiredUploads_.size() >= 100000) expiredUploads_.clear();
      expiredUploads_.insert(it->first);
      it = uploads_.erase(it);
    } else {
      ++it;
    }
  }
  return expired.size();
}

size_t BenchmarkRegistry::numUploads() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return uploads_.size();
}

std::string splitOf(const std::string &dataset) {
  return isEvalDataset(dataset) ? "eval" : dataset == "user" ? "user" : "train";
}

std::vector<BenchmarkInfo> BenchmarkRegistry::list(const std::string &dataset, const std::string &split) {
  std::vector<BenchmarkInfo> out;
  for (const std::string &uri : uris()) {
    // Filtered on the URI first: only the benchmarks listed are parsed.
    absl::string_view rest = uri;
    absl::ConsumePrefix(&rest, "benchmark://");
    std::string uriDataset(rest.substr(0, rest.find('/')));
    if (!dataset.empty() && uriDataset != dataset) continue;
    if (!split.empty() && splitOf(uriDataset) != split) continue;
    auto b = get(uri);
    if (!b.ok()) continue;
    out.push_back((*b)->info());
  }
  return out;
}

std::vector<std::string> BenchmarkRegistry::uris() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::string> out;
  for (const auto &[uri, path] : paths_) out.push_back(uri);
  return out;
}

}  // namespace mlir_rl::env
