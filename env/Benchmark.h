// Benchmarks: the MLIR functions agents optimize, addressed by URI (benchmark://<dataset>/<name>).
//
// Built-in benchmarks are .mlir files under <benchmarks_dir>/<dataset>/<name>.mlir, parsed on first use. On load
// every schedulable linalg op is tagged with `rl.op = <index in program order>`; the schedule visits them last op
// first (consumers before producers). linalg.fill is initialization and is not scheduled.
#pragma once

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

#include "env/Validation.h"
#include "runners/Evaluator.h"

namespace mlir_rl::env {

enum class OpFamily { Generic = 0, Matmul, Conv, Pooling, Elementwise, Other };
inline constexpr int kNumOpFamilies = 6;
const char *opFamilyName(OpFamily family);

struct ScheduledOp {
  int64_t tag = 0;
  std::string name;  // e.g. "linalg.matmul"
  OpFamily family = OpFamily::Other;
};

struct BenchmarkInfo {
  std::string uri, dataset, name, description, dtype;
  int numOps = 0;
  std::vector<std::string> opFamilies;
  int64_t flops = 0;
  int64_t bytes = 0;  // kernel arguments + results
  std::string split;  // "eval" (models, models-full, lqcd), "train" (nn-ops, generators) or "user" (uploads)
};

// The datasets held out for evaluation; generators never produce an op that occurs in them.
bool isEvalDataset(const std::string &dataset);
// "eval" (the held-out datasets), "user" (uploads) or "train".
std::string splitOf(const std::string &dataset);

class PayloadState;

class Benchmark {
 public:
  // Parses, verifies and tags `text`. Fails with INVALID_ARGUMENT carrying MLIR's diagnostics.
  static absl::StatusOr<std::shared_ptr<Benchmark>> parse(mlir::MLIRContext *ctx, const std::string &uri,
                                                          const std::string &text);
  // The same for an already parsed and verified module (takes ownership).
  static absl::StatusOr<std::shared_ptr<Benchmark>> fromModule(mlir::OwningOpRef<mlir::ModuleOp> module,
                                                               const std::string &uri, const std::string &description);

  const BenchmarkInfo &info() const { return info_; }
  mlir::ModuleOp module() const { return *module_; }
  const std::string &taggedText() const { return taggedText_; }
  const std::vector<ScheduledOp> &schedule() const { return schedule_; }
  const runners::KernelSignature &signature() const { return signature_; }

 private:
  Benchmark() = default;
  BenchmarkInfo info_;
  mlir::OwningOpRef<mlir::ModuleOp> module_;
  std::string taggedText_;
  std::vector<ScheduledOp> schedule_;
  runners::KernelSignature signature_;
  // The state every session of the benchmark starts from, made on the first Reset (PayloadState::root).
  friend class PayloadState;
  mutable std::mutex rootMutex_;
  mutable std::shared_ptr<const PayloadState> root_;
};

// Classifies a linalg op by name and structure.
OpFamily classifyOp(mlir::Operation *op);

class BenchmarkRegistry {
 public:
  BenchmarkRegistry(mlir::MLIRContext *ctx, std::string directory);
  // Indexes the .mlir files of the directory. Fails when the directory is missing.
  absl::Status scan();
  // NOT_FOUND for an unknown URI, INVALID_ARGUMENT for a malformed one.
  absl::StatusOr<std::shared_ptr<const Benchmark>> get(const std::string &uri);
  // Validates an uploaded module (see Validation.h) and registers it as benchmark://user/<hash of the text>, so the
  // same upload always gets the same URI. INVALID_ARGUMENT with MLIR's diagnostic when it is rejected;
  // RESOURCE_EXHAUSTED past maxUploads, or past maxUploadsPerClient for `client` (who uploads it first owns it).
  absl::StatusOr<std::shared_ptr<const Benchmark>> addUpload(const std::string &text, const std::string &description,
                                                             const std::string &client = "");
  size_t maxUploads = 10000;
  size_t maxUploadsPerClient = 10000;
  UploadLimits uploadLimits;
  // Forgets uploads that no session uses and nobody has asked for (get, addUpload) for `idle`; NOT_FOUND then says
  // they expired. Returns how many.
  size_t expireUploads(std::chrono::steady_clock::duration idle);
  size_t numUploads() const;
  // The benchmarks of `dataset` and `split` (empty: every one); only those are parsed.
  std::vector<BenchmarkInfo> list(const std::string &dataset, const std::string &split = "");
  // generator://<family>/<seed>: generated on first use (see Generators.h), cached up to maxGenerated.
  size_t maxGenerated = 4096;
  std::vector<std::string> uris() const;

 private:
  mlir::MLIRContext *ctx_;
  std::string directory_;
  mutable std::mutex mutex_;
  std::map<std::string, std::string> paths_;  // uri -> file
  std::map<std::string, std::shared_ptr<const Benchmark>> loaded_;
  struct UploadLease {
    std::string client;
    std::chrono::steady_clock::time_point lastUsed;
  };
  std::map<std::string, UploadLease> uploads_;  // uri -> lease, under mutex_
  std::map<std::string, size_t> uploadsPerClient_;
  std::set<std::string> expiredUploads_;  // bounded; NOT_FOUND says they expired
  std::map<std::string, std::shared_ptr<const Benchmark>> generated_;
  std::deque<std::string> generatedOrder_;
  std::set<std::string> evalSignatures_;  // op signatures of the eval split, computed on first generator use
  bool evalSignaturesReady_ = false;
  absl::StatusOr<std::shared_ptr<const Benchmark>> generate(const std::string &uri);
  std::shared_ptr<mlir::MLIRContext> validationContext();
  std::shared_ptr<mlir::MLIRContext> validation_;  // under mutex_
  int64_t validationBytes_ = 0;                    // text parsed in validation_
  const std::set<std::string> &evalSignatures();
};

}  // namespace mlir_rl::env
