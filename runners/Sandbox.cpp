#include "runners/Sandbox.h"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <initializer_list>

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"

namespace mlir_rl::runners {

namespace {

void note(SandboxReport &r, const std::string &what) { absl::StrAppend(&r.notes, r.notes.empty() ? "" : "; ", what); }

std::string errnoText(int e) { return absl::StrCat(std::strerror(e), " (", e, ")"); }

bool setLimit(int resource, rlim_t value) {
  rlimit limit{value, value};
  return setrlimit(resource, &limit) == 0;
}

}  // namespace

std::string SandboxReport::summary() const {
  std::string s = absl::StrCat(ownUser ? "own unprivileged user" : "the server's user", ", ",
                               networkNamespace ? "no network (own namespace)" : "network namespace unavailable", ", ",
                               seccomp ? "seccomp allow-list" : "NO seccomp filter", ", ",
                               limits ? "resource limits" : "resource limits incomplete");
  if (!notes.empty()) absl::StrAppend(&s, " [", notes, "]");
  return s;
}

void dropPrivileges(const std::string &user, int parentPid, SandboxReport &r) {
  if (geteuid() == 0) {
    if (unshare(CLONE_NEWNET) == 0)
      r.networkNamespace = true;
    else
      note(r, "network namespace: " + errnoText(errno));
    uid_t uid = 65534;
    gid_t gid = 65534;
    if (const passwd *pw = getpwnam(user.c_str())) {
      uid = pw->pw_uid;
      gid = pw->pw_gid;
    } else {
      note(r, absl::StrCat("no user '", user, "': using uid 65534"));
    }
    if (setgroups(0, nullptr) == 0 && setgid(gid) == 0 && setuid(uid) == 0 && geteuid() != 0)
      r.ownUser = true;
    else
      note(r, "dropping root: " + errnoText(errno));
  } else {
    // Unprivileged: a user namespace of its own (the kernel may allow one) brings a network namespace.
    if (unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0)
      r.networkNamespace = true;
    else
      note(r, "user+network namespace: " + errnoText(errno));
  }
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) note(r, "no_new_privs: " + errnoText(errno));
  // A change of user clears the parent-death signal: set it again, and make sure the parent did not die meanwhile.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (parentPid != 0 && getppid() != parentPid) _exit(1);
}

void restrict(int64_t memoryLimitMb, SandboxReport &r) {
  bool limits = setLimit(RLIMIT_FSIZE, 0) && setLimit(RLIMIT_CORE, 0) && setLimit(RLIMIT_NOFILE, 128);
  if (memoryLimitMb > 0 && kAddressSpaceLimitWorks)
    limits = limits && setLimit(RLIMIT_AS, static_cast<rlim_t>(memoryLimitMb) << 20);
  r.limits = limits;
  if (!limits) note(r, "setrlimit: " + errnoText(errno));

  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
  if (!ctx) {
    note(r, "seccomp_init failed");
    return;
  }
  bool ok = true;
  auto allow = [&](const char *name, std::initializer_list<scmp_arg_cmp> args = {}) {
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) return;  // not a system call on this architecture
    ok &= seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, nr, static_cast<unsigned>(args.size()), args.begin()) == 0;
  };
  // Memory, including executable memory for the JIT's code.
  for (const char *name : {"mmap", "munmap", "mprotect", "mremap", "madvise", "brk", "mincore", "membarrier"})
    allow(name);
  // Threads (LLVM's pool, OpenMP) and their synchronization; processes are refused below.
  for (const char *name :
       {"futex", "set_robust_list", "get_robust_list", "rseq", "set_tid_address", "exit", "exit_group", "gettid",
        "getpid", "getppid", "sched_yield", "sched_getaffinity", "sched_setaffinity", "sched_getparam",
        "sched_getscheduler", "sched_get_priority_max", "sched_get_priority_min", "getcpu", "arch_prctl"})
    allow(name);
  allow("clone", {SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD)});
  // Signals: handlers and masks, and signals to its own threads only (abort() raises through tgkill).
  for (const char *name : {"rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack"}) allow(name);
  allow("tgkill", {SCMP_A0(SCMP_CMP_EQ, static_cast<scmp_datum_t>(getpid()))});
  // Time and identity.
  for (const char *name : {"clock_gettime", "clock_getres", "gettimeofday", "nanosleep", "clock_nanosleep", "getrandom",
                           "getrusage", "times", "sysinfo", "uname", "getuid", "geteuid", "getgid", "getegid"})
    allow(name);
  allow("prlimit64", {SCMP_A2(SCMP_CMP_EQ, 0)});  // reading limits only
  allow("prctl", {SCMP_A0(SCMP_CMP_EQ, PR_SET_NAME)});
  allow("prctl", {SCMP_A0(SCMP_CMP_EQ, PR_GET_NAME)});
  // Its pipes and the files it reads (its libraries, /proc and /sys facts): nothing opened for writing.
  for (const char *name : {"read",       "readv",      "pread64", "write",     "writev",     "close", "fstat",
                           "newfstatat", "statx",      "lseek",   "poll",      "ppoll",      "fcntl", "getdents64",
                           "readlink",   "readlinkat", "access",  "faccessat", "faccessat2", "getcwd"})
    allow(name);
  const scmp_datum_t writeFlags = O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND;
  allow("openat", {SCMP_A2(SCMP_CMP_MASKED_EQ, writeFlags, 0)});
  allow("open", {SCMP_A1(SCMP_CMP_MASKED_EQ, writeFlags, 0)});
  allow("ioctl", {SCMP_A1(SCMP_CMP_EQ, TCGETS)});  // isatty
#ifdef MLIR_RL_SANITIZED
  // Instrumented builds only: the sanitizer runtime tells readable memory from unreadable by writing it into a pipe
  // of its own (UBSan's vptr check on every virtual call, ASan's reports). Refused, every vptr looks invalid.
  for (const char *name : {"pipe", "pipe2"}) allow(name);
#endif
  // glibc tries clone3 first and falls back to clone (whose flags the filter can read) on ENOSYS.
  ok &= seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), seccomp_syscall_resolve_name("clone3"), 0) == 0;
  if (ok && seccomp_load(ctx) == 0)
    r.seccomp = true;
  else
    note(r, "seccomp: " + errnoText(errno));
  seccomp_release(ctx);
}

std::string probeSandbox(int parentPid) {
  std::string out;
  auto attempt = [&out](const char *what, bool refused, int error) {
    absl::StrAppend(&out, what, ": ", refused ? absl::StrCat("refused (", std::strerror(error), ")") : "ALLOWED", "\n");
  };
  errno = 0;
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  attempt("socket(AF_INET)", s < 0, errno);
  s = ::socket(AF_UNIX, SOCK_STREAM, 0);
  attempt("socket(AF_UNIX)", s < 0, errno);
  std::string path = absl::StrCat("/tmp/mlir-rl-sandbox-probe-", getpid());
  int fd = ::open(path.c_str(), O_CREAT | O_WRONLY, 0600);
  attempt("create a file in /tmp", fd < 0, errno);
  if (fd >= 0) ::unlink(path.c_str());
  fd = ::open("/dev/null", O_WRONLY);
  attempt("open /dev/null for writing", fd < 0, errno);
  fd = ::open("/proc/self/status", O_RDONLY);
  attempt("read /proc/self/status (must stay allowed)", fd < 0, errno);
  if (fd >= 0) ::close(fd);
  pid_t child = ::fork();
  if (child == 0) _exit(0);
  if (child > 0) ::waitpid(child, nullptr, 0);
  attempt("fork", child < 0, errno);
  char *argv[] = {const_cast<char *>("/bin/true"), nullptr};
  int rc = ::execve("/bin/true", argv, nullptr);  // returns only when refused
  attempt("execve", rc < 0, errno);
  rc = ::kill(parentPid > 0 ? parentPid : 1, 0);
  attempt("signal the parent", rc < 0, errno);
  long traced = ::ptrace(PTRACE_ATTACH, parentPid > 0 ? parentPid : 1, nullptr, nullptr);
  attempt("ptrace the parent", traced < 0, errno);
  rc = ::setuid(0);
  attempt("setuid(0)", rc < 0, errno);
  rc = ::unlink("/tmp");
  attempt("unlink", rc < 0, errno);
  return out;
}

}  // namespace mlir_rl::runners
