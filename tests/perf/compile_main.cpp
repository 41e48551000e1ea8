// mlir-rl-compile: where one candidate's compile time goes. Reads a module (e.g. a file written by
// `mlir-rl-perf --dump_slowest_dir`), lowers it as the runner does (optionally with MLIR pass timing), translates it
// to LLVM IR, runs the O3 pipeline and generates code for the host, timing each stage; then compiles it once more
// through Compiler::compile (what workers do) for the total.
#include <chrono>
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_split.h"
#include "llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Target/LLVMIR/Export.h"

#include "runners/Evaluator.h"
#include "runners/Lowering.h"
#include "support/Context.h"

ABSL_FLAG(bool, mlir_timing, false, "print MLIR pass timing of the lowering");
ABSL_FLAG(std::string, dump_llvm, "", "write the unoptimized LLVM IR there");
ABSL_FLAG(std::string, dump_lowered, "", "write the LLVM-dialect module there");
ABSL_FLAG(int, opt_level, 3, "LLVM mid-level optimization level");
ABSL_FLAG(int, codegen_level, 3, "LLVM code generator level");
ABSL_FLAG(bool, loop_vectorize, true, "LLVM loop vectorizer");
ABSL_FLAG(bool, slp_vectorize, true, "LLVM SLP vectorizer");
ABSL_FLAG(bool, loop_unroll, true, "LLVM loop unrolling");
ABSL_FLAG(bool, loop_interleave, true, "LLVM loop interleaving");
ABSL_FLAG(std::string, llvm_args, "", "space-separated LLVM command-line options (experiments, e.g. -disable-lsr)");
ABSL_FLAG(bool, staged, true, "time the stages separately (lower, translate, opt, codegen) before the full compile");
ABSL_FLAG(bool, noalias, true, "mark the kernel's pointer arguments noalias (as the runner does)");
ABSL_FLAG(bool, run, false, "also run and time the kernel (median of adaptive samples, 1 thread)");

using Clock = std::chrono::steady_clock;
static double msSince(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

int main(int argc, char **argv) {
  std::vector<char *> files = absl::ParseCommandLine(argc, argv);
  if (files.size() != 2) {
    std::fprintf(stderr, "usage: mlir-rl-compile [flags] FILE.mlir\n");
    return 2;
  }
  if (std::string args = absl::GetFlag(FLAGS_llvm_args); !args.empty()) {
    std::vector<std::string> words = absl::StrSplit(args, ' ', absl::SkipEmpty());
    std::vector<const char *> argv{"mlir-rl-compile"};
    for (const std::string &w : words) argv.push_back(w.c_str());
    llvm::cl::ParseCommandLineOptions(static_cast<int>(argv.size()), argv.data());
  }
  auto ctx = mlir_rl::support::createContext();
  mlir::OwningOpRef<mlir::ModuleOp> module = mlir::parseSourceFile<mlir::ModuleOp>(files[1], ctx.get());
  if (!module) return 1;
  auto analyzed = mlir_rl::runners::analyzeKernel(*module);
  if (!analyzed.ok()) {
    std::fprintf(stderr, "%s\n", std::string(analyzed.status().message()).c_str());
    return 1;
  }
  const mlir_rl::runners::KernelSignature &signature = *analyzed;
  mlir_rl::runners::CompileOptions options;
  options.llvm.optLevel = absl::GetFlag(FLAGS_opt_level);
  options.llvm.codegenLevel = absl::GetFlag(FLAGS_codegen_level);
  options.llvm.loopVectorization = absl::GetFlag(FLAGS_loop_vectorize);
  options.llvm.slpVectorization = absl::GetFlag(FLAGS_slp_vectorize);
  options.llvm.loopUnrolling = absl::GetFlag(FLAGS_loop_unroll);
  options.llvm.loopInterleaving = absl::GetFlag(FLAGS_loop_interleave);
  options.noaliasArguments = absl::GetFlag(FLAGS_noalias);
  if (absl::GetFlag(FLAGS_staged)) {
    mlir::OwningOpRef<mlir::ModuleOp> clone(module->clone());
    auto t = Clock::now();
    mlir_rl::runners::LoweringOptions lowering;
    lowering.printTiming = absl::GetFlag(FLAGS_mlir_timing);
    if (options.noaliasArguments) lowering.noaliasKernel = signature.name;
    absl::Status lowered = mlir_rl::runners::prepareKernel(*clone, signature.name);
    if (lowered.ok()) lowered = mlir_rl::runners::lowerToLLVM(*clone, lowering);
    if (!lowered.ok()) {
      std::fprintf(stderr, "%s\n", std::string(lowered.message()).c_str());
      return 1;
    }
    double lowerMs = msSince(t);
    if (std::string path = absl::GetFlag(FLAGS_dump_lowered); !path.empty()) {
      std::error_code ec;
      llvm::raw_fd_ostream out(path, ec);
      clone->print(out);
    }

    mlir_rl::support::initializeNativeTarget();
    t = Clock::now();
    llvm::LLVMContext llvmContext;
    std::unique_ptr<llvm::Module> llvmModule = mlir::translateModuleToLLVMIR(*clone, llvmContext);
    if (!llvmModule) return 1;
    double translateMs = msSince(t);
    if (std::string path = absl::GetFlag(FLAGS_dump_llvm); !path.empty()) {
      std::error_code ec;
      llvm::raw_fd_ostream out(path, ec);
      llvmModule->print(out, nullptr);
    }
    size_t instructions = 0;
    for (const llvm::Function &f : *llvmModule)
      for (const llvm::BasicBlock &b : f) instructions += b.size();

    auto builder = llvm::orc::JITTargetMachineBuilder::detectHost();
    int level = options.llvm.optLevel;
    int cg = options.llvm.codegenLevel;
    builder->setCodeGenOptLevel(cg >= 3   ? llvm::CodeGenOptLevel::Aggressive
                                : cg == 2 ? llvm::CodeGenOptLevel::Default
                                : cg == 1 ? llvm::CodeGenOptLevel::Less
                                          : llvm::CodeGenOptLevel::None);
    auto tm = builder->createTargetMachine();
    if (!tm) return 1;
    llvmModule->setDataLayout((*tm)->createDataLayout());
    llvmModule->setTargetTriple((*tm)->getTargetTriple().getTriple());
    t = Clock::now();
    auto transformer = mlir_rl::runners::makeLlvmOptimizer(options.llvm, tm->get());
    if (llvm::Error e = transformer(llvmModule.get())) {
      llvm::consumeError(std::move(e));
      return 1;
    }
    double optMs = msSince(t);
    size_t optimizedInstructions = 0;
    for (const llvm::Function &f : *llvmModule)
      for (const llvm::BasicBlock &b : f) optimizedInstructions += b.size();

    t = Clock::now();
    llvm::SmallVector<char, 0> object;
    {
      llvm::raw_svector_ostream os(object);
      llvm::legacy::PassManager pm;
      llvm::MCContext *mc = nullptr;
      if ((*tm)->addPassesToEmitMC(pm, mc, os)) return 1;
      pm.run(*llvmModule);
    }
    double codegenMs = msSince(t);
    std::printf(
        "lower %.1f ms | translate %.1f ms (%zu LLVM instructions) | opt O%d %.1f ms (%zu after) | codegen %.1f "
        "ms (%zu bytes) | ",
        lowerMs, translateMs, instructions, level, optMs, optimizedInstructions, codegenMs, object.size());
  }

  auto t = Clock::now();
  auto compiled = mlir_rl::runners::Compiler::compile(*module, options);
  double totalMs = msSince(t);
  if (!compiled.ok()) {
    std::fprintf(stderr, "%s\n", std::string(compiled.status().message()).c_str());
    return 1;
  }
  auto &kernel = *compiled;
  std::printf("Compiler::compile %.1f ms (lower %.1f + JIT %.1f)\n", totalMs, kernel->lowerMs(), kernel->jitMs());
  if (absl::GetFlag(FLAGS_run)) {
    std::vector<mlir_rl::runners::Buffer> inputs = mlir_rl::runners::makeInputs(signature, 1);
    mlir_rl::runners::TimingOptions timing;
    timing.budgetSeconds = 1.0;
    mlir_rl::runners::Timing r = kernel->time(inputs, timing);
    std::printf("run median %.4f ms (min %.4f, spread %.1f %%, %d runs)\n", r.medianNs / 1e6, r.minNs / 1e6,
                100 * r.spread, r.repetitions);
  }
  return 0;
}
