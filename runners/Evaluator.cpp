#include "runners/Evaluator.h"

#include "support/Status.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include <unistd.h>

#include "llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h"
#include "llvm/IR/Module.h"
#include "llvm/Passes/OptimizationLevel.h"
#include "llvm/Passes/PassBuilder.h"
#include "llvm/Support/Error.h"
#include "llvm/Target/TargetMachine.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/ExecutionEngine/ExecutionEngine.h"
#include "mlir/IR/BuiltinTypes.h"

#include "runners/Lowering.h"
#include "support/Context.h"
#include "support/Diagnostics.h"

namespace mlir_rl::runners {

namespace {

using Clock = std::chrono::steady_clock;
double msSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// Serializes timed runs across the process: two measurements never share the machine's cores.
std::mutex &measurementSlot() {
  static std::mutex m;
  return m;
}

bool elementKindOf(mlir::Type t, ElementKind &kind) {
  if (t.isF32())
    kind = ElementKind::F32;
  else if (t.isF64())
    kind = ElementKind::F64;
  else if (t.isInteger(32))
    kind = ElementKind::I32;
  else if (t.isInteger(64))
    kind = ElementKind::I64;
  else if (t.isInteger(8))
    kind = ElementKind::I8;
  else if (t.isInteger(1))
    kind = ElementKind::I1;
  else
    return false;
  return true;
}

absl::StatusOr<TensorSpec> specOf(mlir::Type type) {
  auto tensor = mlir::dyn_cast<mlir::RankedTensorType>(type);
  if (!tensor) return absl::InvalidArgumentError("kernel arguments and results must be ranked tensors");
  if (!tensor.hasStaticShape()) return absl::InvalidArgumentError("kernel tensors must have static shapes");
  TensorSpec spec;
  if (!elementKindOf(tensor.getElementType(), spec.kind))
    return absl::InvalidArgumentError("unsupported element type in kernel signature");
  spec.shape.assign(tensor.getShape().begin(), tensor.getShape().end());
  return spec;
}

// Words of a ranked memref descriptor: allocated, aligned, offset, sizes[rank], strides[rank].
size_t descriptorWords(const TensorSpec &spec) { return 3 + 2 * spec.shape.size(); }

std::vector<int64_t> inputDescriptor(const Buffer &buffer) {
  const auto &shape = buffer.spec().shape;
  std::vector<int64_t> d(descriptorWords(buffer.spec()));
  auto ptr = reinterpret_cast<int64_t>(buffer.data());
  d[0] = ptr;
  d[1] = ptr;
  d[2] = 0;
  int64_t stride = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    d[3 + i] = shape[i];
    d[3 + shape.size() + i] = stride;
    stride *= shape[i];
  }
  return d;
}

// malloc and aligned_alloc (what the lowering calls, see Lowering.cpp) for kernels running in a worker: a failed
// allocation is reported and ends the worker cleanly.
[[noreturn]] void outOfMemory(size_t bytes) {
  char message[128];
  int n = std::snprintf(message, sizeof(message), "out of memory: the kernel failed to allocate %zu bytes\n", bytes);
  if (n > 0) (void)!write(2, message, static_cast<size_t>(n));
  _exit(kOutOfMemoryExitCode);
}

void *checkedMalloc(size_t bytes) {
  void *p = std::malloc(bytes);
  if (!p && bytes != 0) outOfMemory(bytes);
  return p;
}

void *checkedAlignedAlloc(size_t alignment, size_t bytes) {
  void *p = std::aligned_alloc(alignment, bytes);
  if (!p && bytes != 0) outOfMemory(bytes);
  return p;
}

llvm::CodeGenOptLevel codegenLevel(int level) {
  switch (level) {
    case 0: return llvm::CodeGenOptLevel::None;
    case 1: return llvm::CodeGenOptLevel::Less;
    case 2: return llvm::CodeGenOptLevel::Default;
    default: return llvm::CodeGenOptLevel::Aggressive;
  }
}

// Marker MLIR puts in the "allocated" field of memrefs that point at globals (never to be freed).
constexpr int64_t kGlobalMarker = 0xdeadbeef;

}  // namespace

absl::StatusOr<KernelSignature> analyzeKernel(mlir::ModuleOp module) {
  mlir::func::FuncOp kernel;
  int publicCount = 0;
  for (auto func : module.getOps<mlir::func::FuncOp>()) {
    if (func.isPublic() && !func.isExternal()) {
      kernel = func;
      ++publicCount;
    }
  }
  if (publicCount != 1)
    return absl::InvalidArgumentError("the module must define exactly one public function (the kernel), found " +
                                      std::to_string(publicCount));
  KernelSignature signature;
  signature.name = kernel.getSymName().str();
  for (mlir::Type t : kernel.getArgumentTypes()) {
    MLIR_RL_ASSIGN_OR_RETURN(TensorSpec spec, specOf(t));
    signature.args.push_back(std::move(spec));
  }
  for (mlir::Type t : kernel.getResultTypes()) {
    MLIR_RL_ASSIGN_OR_RETURN(TensorSpec spec, specOf(t));
    signature.results.push_back(std::move(spec));
  }
  if (signature.results.empty()) return absl::InvalidArgumentError("the kernel must return at least one tensor");
  return signature;
}

std::vector<Buffer> makeInputs(const KernelSignature &signature, uint64_t seed) {
  std::vector<Buffer> inputs;
  inputs.reserve(signature.args.size());
  for (size_t i = 0; i < signature.args.size(); ++i) {
    inputs.emplace_back(signature.args[i]);
    inputs.back().fillRandom(seed * 0x100000001b3ULL + i + 1);
  }
  return inputs;
}

// mlir::makeOptimizingTransformer with the tuning options exposed (it enables all four).
std::function<llvm::Error(llvm::Module *)> makeLlvmOptimizer(const LlvmOptions &options,
                                                             llvm::TargetMachine *targetMachine) {
  return [options, targetMachine](llvm::Module *m) -> llvm::Error {
    llvm::OptimizationLevel level = options.optLevel <= 0   ? llvm::OptimizationLevel::O0
                                    : options.optLevel == 1 ? llvm::OptimizationLevel::O1
                                    : options.optLevel == 2 ? llvm::OptimizationLevel::O2
                                                            : llvm::OptimizationLevel::O3;
    llvm::LoopAnalysisManager lam;
    llvm::FunctionAnalysisManager fam;
    llvm::CGSCCAnalysisManager cgam;
    llvm::ModuleAnalysisManager mam;
    llvm::PipelineTuningOptions tuning;
    tuning.LoopUnrolling = options.loopUnrolling;
    tuning.LoopInterleaving = options.loopInterleaving;
    tuning.LoopVectorization = options.loopVectorization;
    tuning.SLPVectorization = options.slpVectorization;
    llvm::PassBuilder pb(targetMachine, tuning);
    pb.registerModuleAnalyses(mam);
    pb.registerCGSCCAnalyses(cgam);
    pb.registerFunctionAnalyses(fam);
    pb.registerLoopAnalyses(lam);
    pb.crossRegisterProxies(lam, fam, cgam, mam);
    llvm::ModulePassManager mpm = pb.buildPerModuleDefaultPipeline(level);
    mpm.run(*m, mam);
    return llvm::Error::success();
  };
}

CompiledKernel::~CompiledKernel() = default;

absl::StatusOr<std::unique_ptr<CompiledKernel>> Compiler::compile(mlir::ModuleOp module,
                                                                  const CompileOptions &options) {
  std::unique_ptr<CompiledKernel> kernel(new CompiledKernel());
  MLIR_RL_ASSIGN_OR_RETURN(kernel->signature_, analyzeKernel(module));

  auto start = Clock::now();
  mlir::OwningOpRef<mlir::ModuleOp> clone(module.clone());
  MLIR_RL_RETURN_IF_ERROR(prepareKernel(*clone, kernel->signature_.name));
  LoweringOptions lowering;
  lowering.numThreads = options.numThreads;
  if (options.noaliasArguments) lowering.noaliasKernel = kernel->signature_.name;
  MLIR_RL_RETURN_IF_ERROR(lowerToLLVM(*clone, lowering));
  kernel->lowerMs_ = msSince(start);

  start = Clock::now();
  support::initializeNativeTarget();
  auto builder = llvm::orc::JITTargetMachineBuilder::detectHost();
  if (!builder) return absl::InternalError("cannot detect the host target: " + llvm::toString(builder.takeError()));
  builder->setCodeGenOptLevel(codegenLevel(options.llvm.codegenLevel));
  auto tm = builder->createTargetMachine();
  if (!tm) return absl::InternalError("cannot create the host target machine: " + llvm::toString(tm.takeError()));
  // ExecutionEngineOptions::transformer is a function_ref: keep the callable alive in a named variable.
  std::function<llvm::Error(llvm::Module *)> transformer = makeLlvmOptimizer(options.llvm, tm->get());
  llvm::SmallVector<llvm::StringRef, 2> libs;
  for (const std::string &lib : jitSharedLibraries()) libs.push_back(lib);
  mlir::ExecutionEngineOptions engineOptions;
  engineOptions.transformer = transformer;
  engineOptions.jitCodeGenOptLevel = codegenLevel(options.llvm.codegenLevel);
  engineOptions.sharedLibPaths = libs;
  engineOptions.enableGDBNotificationListener = false;
  engineOptions.enablePerfNotificationListener = false;
  support::DiagnosticCapture capture;
  auto engine = mlir::ExecutionEngine::create(*clone, engineOptions, std::move(*tm));
  if (!engine)
    return absl::InvalidArgumentError("JIT compilation failed: " + llvm::toString(engine.takeError()) + " " +
                                      capture.take());
  kernel->engine_ = std::move(*engine);
  if (options.exitOnAllocationFailure) {
    kernel->engine_->registerSymbols([](llvm::orc::MangleAndInterner interner) {
      llvm::orc::SymbolMap symbols;
      symbols[interner("malloc")] = {llvm::orc::ExecutorAddr::fromPtr(&checkedMalloc), llvm::JITSymbolFlags::Exported};
      symbols[interner("aligned_alloc")] = {llvm::orc::ExecutorAddr::fromPtr(&checkedAlignedAlloc),
                                            llvm::JITSymbolFlags::Exported};
      return symbols;
    });
  }
  auto entry = kernel->engine_->lookupPacked("_mlir_ciface_" + kernel->signature_.name);
  if (!entry) return absl::InternalError("JIT: kernel entry point missing: " + llvm::toString(entry.takeError()));
  kernel->entry_ = *entry;
  kernel->jitMs_ = msSince(start);
  return kernel;
}

void CompiledKernel::invoke(const std::vector<Buffer> &inputs,
                            std::vector<std::vector<int64_t>> &resultDescriptors) const {
  // C interface: void _mlir_ciface_f(Results *out, MemRef *arg0, ...), where Results is one descriptor or a
  // struct of descriptors (consecutive, 8-byte aligned words).
  size_t resultWords = 0;
  for (const TensorSpec &s : signature_.results) resultWords += descriptorWords(s);
  std::vector<int64_t> results(resultWords, 0);
  std::vector<std::vector<int64_t>> argDescriptors;
  argDescriptors.reserve(inputs.size());
  for (const Buffer &b : inputs) argDescriptors.push_back(inputDescriptor(b));
  std::vector<void *> argPointers;
  argPointers.reserve(inputs.size() + 1);
  void *resultPtr = results.data();
  argPointers.push_back(resultPtr);
  for (auto &d : argDescriptors) argPointers.push_back(d.data());
  std::vector<void *> packed;
  packed.reserve(argPointers.size());
  for (void *&p : argPointers) packed.push_back(&p);
  entry_(packed.data());
  resultDescriptors.clear();
  size_t offset = 0;
  for (const TensorSpec &s : signature_.results) {
    size_t words = descriptorWords(s);
    resultDescriptors.emplace_back(results.begin() + offset, results.begin() + offset + words);
    offset += words;
  }
}

void CompiledKernel::releaseResults(const std::vector<Buffer> &inputs,
                                    std::vector<std::vector<int64_t>> &descriptors) const {
  std::vector<int64_t> freed;
  for (auto &d : descriptors) {
    int64_t allocated = d[0];
    if (allocated == 0 || allocated == kGlobalMarker) continue;
    bool isInput = std::any_of(inputs.begin(), inputs.end(),
                               [&](const Buffer &b) { return reinterpret_cast<int64_t>(b.data()) == allocated; });
    if (isInput || std::find(freed.begin(), freed.end(), allocated) != freed.end()) continue;
    freed.push_back(allocated);
    std::free(reinterpret_cast<void *>(allocated));
  }
}

std::vector<Buffer> CompiledKernel::run(const std::vector<Buffer> &inputs, double *seconds) const {
  std::vector<std::vector<int64_t>> descriptors;
  auto start = Clock::now();
  invoke(inputs, descriptors);
  if (seconds) *seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::vector<Buffer> outputs;
  for (size_t r = 0; r < signature_.results.size(); ++r) {
    const TensorSpec &spec = signature_.results[r];
    const auto &d = descriptors[r];
    outputs.emplace_back(spec);
    size_t rank = spec.shape.size();
    size_t esize = elementBytes(spec.kind);
    auto *base = reinterpret_cast<const char *>(d[1]) + d[2] * static_cast<int64_t>(esize);
    auto *dst = static_cast<char *>(outputs.back().data());
    int64_t n = spec.numElements();
    // Copy element by element through the strides (results have identity layouts, but do not rely on it).
    std::vector<int64_t> index(rank, 0);
    for (int64_t i = 0; i < n; ++i) {
      int64_t off = 0;
      for (size_t k = 0; k < rank; ++k) off += index[k] * d[3 + rank + k];
      std::memcpy(dst + i * esize, base + off * static_cast<int64_t>(esize), esize);
      for (size_t k = rank; k-- > 0;) {
        if (++index[k] < spec.shape[k]) break;
        index[k] = 0;
      }
    }
  }
  releaseResults(inputs, descriptors);
  return outputs;
}

Timing CompiledKernel::time(const std::vector<Buffer> &inputs, const TimingOptions &options,
                            double warmedSeconds) const {
  std::lock_guard<std::mutex> slot(measurementSlot());
  auto started = Clock::now();
  // Would `seconds` more of runs end past the deadline?
  auto pastDeadline = [&](double seconds) {
    return options.deadlineSeconds > 0 &&
           std::chrono::duration<double>(Clock::now() - started).count() + seconds > options.deadlineSeconds;
  };
  std::vector<std::vector<int64_t>> descriptors;
  auto runOnce = [&] {
    invoke(inputs, descriptors);
    releaseResults(inputs, descriptors);
  };
  // Warm-up (caches, page faults of fresh allocations), which also calibrates the batch size. A run the caller just
  // made on the same inputs (the correctness check) is that warm-up for long kernels: for shorter ones a second run
  // is cheap, and their first samples are the most disturbed by fresh allocations' page faults.
  double first = warmedSeconds;
  if (first < options.longSampleSeconds) {
    auto start = Clock::now();
    runOnce();
    first = std::chrono::duration<double>(Clock::now() - start).count();
  }
  // How a kernel whose warm run lasts `seconds` is sampled.
  int batch = 1, minRepetitions = options.minRepetitions, raceAfter = options.minRepetitions;
  auto plan = [&](double seconds) {
    batch = seconds < options.minSampleSeconds
                ? std::min(1000, static_cast<int>(options.minSampleSeconds / std::max(seconds, 1e-9)) + 1)
                : 1;
    // Long kernels are stable run to run; do not spend minutes reaching the usual minimum of samples.
    minRepetitions = seconds > options.budgetSeconds / 4 ? std::min(3, options.minRepetitions) : options.minRepetitions;
    // Racing may stop a long kernel sooner (raceMinRepetitions, at least one sample), never a short one.
    raceAfter = seconds >= options.longSampleSeconds ? std::clamp(options.raceMinRepetitions, 1, minRepetitions)
                                                     : minRepetitions;
  };
  plan(first);
  // The warm-up was the caller's run, cold: the first warm run may still show the kernel short (below).
  bool warmedLong = warmedSeconds >= options.longSampleSeconds;

  std::vector<double> samples;
  auto measureStart = Clock::now();
  Timing timing;
  if (first >= options.longSampleSeconds && pastDeadline(first)) {
    // Not even one sample fits: the warmed run (long, so its cold start is a small part of it) is the measurement.
    timing.medianNs = timing.minNs = first * 1e9;
    timing.repetitions = 1;
    timing.raced = true;
    return timing;
  }
  while (true) {
    auto t0 = Clock::now();
    for (int i = 0; i < batch; ++i) runOnce();
    double ns = std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / batch;
    if (warmedLong && samples.empty() && ns * 1e-9 < options.longSampleSeconds) {
      // Long only when cold (a memory-bound kernel's checked run pays its first page faults): warm, it is a short
      // kernel, whose first samples after a cold run are the most disturbed. This run was its warm-up; it is timed
      // as a short kernel from here (batch from this run, the usual minimum of samples before racing).
      warmedLong = false;
      plan(ns * 1e-9);
      continue;
    }
    samples.push_back(ns);
    std::vector<double> sorted = samples;
    std::sort(sorted.begin(), sorted.end());
    auto quantile = [&](double q) { return sorted[static_cast<size_t>(q * (sorted.size() - 1) + 0.5)]; };
    // The median (of an even count: the mean of the middle two; the nearest-rank quantile would take the upper one,
    // the slower of two samples).
    size_t mid = sorted.size() / 2;
    timing.medianNs = sorted.size() % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
    timing.minNs = sorted.front();
    timing.spread = timing.medianNs > 0 ? (quantile(0.75) - quantile(0.25)) / timing.medianNs : 0.0;
    timing.repetitions = static_cast<int>(samples.size()) * batch;
    int n = static_cast<int>(samples.size());
    double spent = std::chrono::duration<double>(Clock::now() - measureStart).count();
    if (n >= options.maxRepetitions) break;
    if (n >= raceAfter && options.raceFactor > 0 && options.raceAgainstNs > 0 &&
        quantile(0.25) > options.raceFactor * options.raceAgainstNs) {
      timing.raced = true;
      break;
    }
    if (n >= minRepetitions && (timing.spread <= options.targetSpread || spent >= options.budgetSeconds)) break;
    if (pastDeadline(ns * 1e-9 * batch)) {
      timing.raced = true;
      break;
    }
  }
  return timing;
}

const std::vector<std::string> &jitSharedLibraries() {
  static const std::vector<std::string> libs = {std::string(MLIR_RL_LLVM_LIB_DIR) + "/libmlir_c_runner_utils.so",
                                                std::string(MLIR_RL_LLVM_LIB_DIR) + "/libomp.so"};
  return libs;
}

}  // namespace mlir_rl::runners
