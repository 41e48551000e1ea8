#include "support/Context.h"

#include <mutex>

#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Target/LLVMIR/Dialect/All.h"

#include "support/Diagnostics.h"

namespace mlir_rl::support {

namespace {

std::string severityName(mlir::DiagnosticSeverity severity) {
  switch (severity) {
    case mlir::DiagnosticSeverity::Error: return "error";
    case mlir::DiagnosticSeverity::Warning: return "warning";
    case mlir::DiagnosticSeverity::Note: return "note";
    case mlir::DiagnosticSeverity::Remark: return "remark";
  }
  return "diagnostic";
}

std::string render(mlir::Diagnostic &diag) {
  std::string out;
  llvm::raw_string_ostream os(out);
  os << formatLocation(diag.getLocation()) << ": " << severityName(diag.getSeverity()) << ": " << diag.str();
  for (mlir::Diagnostic &note : diag.getNotes())
    os << "\n  " << formatLocation(note.getLocation()) << ": note: " << note.str();
  return os.str();
}

}  // namespace

void initializeNativeTarget() {
  static std::once_flag once;
  std::call_once(once, [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
    llvm::InitializeNativeTargetAsmParser();
  });
}

std::unique_ptr<mlir::MLIRContext> createContext() {
  mlir::DialectRegistry registry;
  mlir::registerAllDialects(registry);
  mlir::registerAllExtensions(registry);
  mlir::registerAllToLLVMIRTranslations(registry);
  return createContext(registry);
}

std::unique_ptr<mlir::MLIRContext> createContext(const mlir::DialectRegistry &dialects) {
  static std::once_flag passes;
  std::call_once(passes, [] { mlir::registerAllPasses(); });
  initializeNativeTarget();

  auto ctx = std::make_unique<mlir::MLIRContext>(dialects);
  ctx->loadAllAvailableDialects();
  ctx->getDiagEngine().registerHandler([](mlir::Diagnostic &diag) {
    // Remarks (e.g. from the transform interpreter) are noise for users; keep errors, warnings and notes.
    if (diag.getSeverity() == mlir::DiagnosticSeverity::Remark) return mlir::success();
    if (DiagnosticCapture *capture = activeCapture()) {
      capture->append(render(diag));
    } else {
      llvm::errs() << render(diag) << "\n";
    }
    return mlir::success();
  });
  return ctx;
}

}  // namespace mlir_rl::support
