// What an evaluation worker may do once it serves requests: the least it needs to compile and run candidates.
//
// Uploaded kernels are validated before they run (env/Validation.h), so that they cannot reach memory outside
// their buffers; the sandbox is the second line, for the case where validation or MLIR/LLVM has a hole:
//   * its own unprivileged user (nobody) when started as root; no new privileges ever (PR_SET_NO_NEW_PRIVS);
//   * no network: a network namespace of its own (as root, or through an unprivileged user namespace where the
//     kernel allows one), and no socket() in the system-call filter either way;
//   * no writable files: files open read-only only, no file may grow (RLIMIT_FSIZE 0), no core dumps;
//   * a seccomp allow-list of the system calls a worker makes (memory, threads, time, reading its libraries,
//     its pipes); anything else fails with EPERM; threads only (clone without CLONE_THREAD is refused), signals
//     to its own threads only;
//   * resource limits: address space (RLIMIT_AS), open files.
// Entered in two stages: `dropPrivileges` first thing in main (namespaces need a single-threaded process), then
// `restrict` after start-up (the MLIR context, the OpenMP runtime and the JIT's libraries loaded).
#pragma once

#include <cstdint>
#include <string>

namespace mlir_rl::runners {

// An address-space limit cannot work under AddressSanitizer or ThreadSanitizer (their shadow memory reserves
// terabytes of address space at start-up): instrumented builds (scripts/sanitize.sh) run without one.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kAddressSpaceLimitWorks = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr bool kAddressSpaceLimitWorks = false;
#else
inline constexpr bool kAddressSpaceLimitWorks = true;
#endif
#else
inline constexpr bool kAddressSpaceLimitWorks = true;
#endif

struct SandboxReport {
  bool ownUser = false;  // runs as an unprivileged user of its own (not the server's)
  bool networkNamespace = false;
  bool seccomp = false;
  bool limits = false;
  std::string notes;  // what could not be done, and why
  std::string summary() const;
};

// Stage 1 (single-threaded): a network namespace of its own, then the unprivileged user `user` (when root). `parentPid`
// is checked again afterwards, and the parent-death signal set again (a change of user clears it).
void dropPrivileges(const std::string &user, int parentPid, SandboxReport &report);

// Stage 2: resource limits (`memoryLimitMb` of address space, 0: none), then the system-call allow-list.
void restrict(int64_t memoryLimitMb, SandboxReport &report);

// Tries what a sandboxed worker must not be able to do (open a socket, create or write a file, start a process,
// signal its parent, ptrace) and returns one line per attempt, "<what>: refused (<errno>)" or "<what>: ALLOWED".
std::string probeSandbox(int parentPid);

}  // namespace mlir_rl::runners
