// Per-thread capture of MLIR diagnostics.
//
// Sessions share one MLIRContext, and a context's diagnostic handlers are global to it, so a handler registered by
// one thread would also swallow another thread's messages. Instead `createContext` installs one handler that
// forwards each diagnostic to the DiagnosticCapture active on the emitting thread (or to stderr when none is).
#pragma once

#include <string>

namespace mlir_rl::support {

class DiagnosticCapture {
 public:
  DiagnosticCapture();
  ~DiagnosticCapture();
  DiagnosticCapture(const DiagnosticCapture &) = delete;
  DiagnosticCapture &operator=(const DiagnosticCapture &) = delete;

  // Returns the messages captured so far (one per line, "location: severity: message") and clears them.
  std::string take();
  void append(const std::string &line);

 private:
  std::string text_;
  DiagnosticCapture *previous_;
};

// The capture active on this thread, or null.
DiagnosticCapture *activeCapture();

}  // namespace mlir_rl::support

namespace mlir {
class Location;
}

namespace mlir_rl::support {

// "file:line:col" for file locations (what editors and users expect), MLIR's own form otherwise.
std::string formatLocation(mlir::Location loc);

}  // namespace mlir_rl::support
