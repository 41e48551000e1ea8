#include "support/Diagnostics.h"

#include "llvm/Support/raw_ostream.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Location.h"

namespace mlir_rl::support {

namespace {
thread_local DiagnosticCapture *tlsCapture = nullptr;
}

DiagnosticCapture::DiagnosticCapture() : previous_(tlsCapture) { tlsCapture = this; }
DiagnosticCapture::~DiagnosticCapture() { tlsCapture = previous_; }

std::string DiagnosticCapture::take() {
  std::string out;
  out.swap(text_);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

void DiagnosticCapture::append(const std::string &line) {
  text_ += line;
  text_ += '\n';
}

DiagnosticCapture *activeCapture() { return tlsCapture; }

std::string formatLocation(mlir::Location loc) {
  std::string out;
  llvm::raw_string_ostream os(out);
  if (auto file = mlir::dyn_cast<mlir::FileLineColLoc>(loc)) {
    os << file.getFilename().getValue() << ":" << file.getLine() << ":" << file.getColumn();
  } else {
    os << loc;
  }
  return os.str();
}

}  // namespace mlir_rl::support
