#include "support/Diagnostics.h"

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

}  // namespace mlir_rl::support
