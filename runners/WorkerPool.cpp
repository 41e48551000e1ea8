#include "runners/WorkerPool.h"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <future>
#include <iterator>
#include <optional>

#include <fcntl.h>
#include <glob.h>
#include <poll.h>
#include <sched.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

#include "runners/WorkerProtocol.h"
#include "support/Affinity.h"

extern char **environ;

namespace mlir_rl::runners {

namespace {

using Clock = std::chrono::steady_clock;

// The scheduler state of a process ('R', 'S', 'T' stopped, 't' traced, 'Z', ...) from /proc, or 0.
char processState(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t close = stat.rfind(')');  // the command name may hold spaces and parentheses
  return close != std::string::npos && close + 2 < stat.size() ? stat[close + 2] : 0;
}

void setNonBlocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

// The OpenMP runtime registers each process in /dev/shm and unregisters at exit, which a killed worker never
// reaches: remove what a reaped worker left.
void removeOpenMpRegistration(pid_t pid) {
  glob_t found{};
  if (::glob(absl::StrCat("/dev/shm/__KMP_REGISTERED_LIB_", pid, "_*").c_str(), 0, nullptr, &found) == 0)
    for (size_t i = 0; i < found.gl_pathc; ++i) ::unlink(found.gl_pathv[i]);
  globfree(&found);
}

}  // namespace

std::string WorkerPool::defaultRunnerPath() {
  char buffer[4096];
  ssize_t n = readlink("/proc/self/exe", buffer, sizeof(buffer) - 1);
  if (n <= 0) return "mlir-rl-runner";
  std::string self(buffer, static_cast<size_t>(n));
  return self.substr(0, self.rfind('/') + 1) + "mlir-rl-runner";
}

WorkerPool::WorkerPool(WorkerPoolOptions options) : options_(std::move(options)) {
  // A worker that dies while we write to it must not kill the server with SIGPIPE.
  std::signal(SIGPIPE, SIG_IGN);
  std::vector<int> cpus = support::allowedCpus();
  for (int i = 0; i < std::max(1, options_.workers); ++i) {
    auto w = std::make_unique<Worker>();
    w->index = i;
    for (int k = 0; k < options_.cpusPerWorker; ++k)
      w->cpus.push_back(cpus[(i * options_.cpusPerWorker + k) % cpus.size()]);
    workers_.push_back(std::move(w));
  }
  spawner_ = std::thread([this] {
    std::unique_lock<std::mutex> lock(spawnMutex_);
    while (true) {
      spawnCv_.wait(lock, [&] { return stopping_ || !spawnQueue_.empty(); });
      if (spawnQueue_.empty() && stopping_) return;
      auto task = std::move(spawnQueue_.front());
      spawnQueue_.pop_front();
      lock.unlock();
      task();
      lock.lock();
    }
  });
}

WorkerPool::~WorkerPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto &w : workers_) {
      if (w->pid > 0) {
        ::kill(w->pid, SIGKILL);
        ::waitpid(w->pid, nullptr, 0);
        removeOpenMpRegistration(w->pid);
      }
    }
  }
  {
    std::lock_guard<std::mutex> lock(spawnMutex_);
    stopping_ = true;
  }
  spawnCv_.notify_all();
  spawner_.join();
}

bool WorkerPool::runOnSpawner(const std::function<void()> &task) {
  std::promise<void> done;
  {
    std::lock_guard<std::mutex> lock(spawnMutex_);
    if (stopping_) return false;
    spawnQueue_.push_back([&] {
      task();
      done.set_value();
    });
  }
  spawnCv_.notify_one();
  done.get_future().wait();
  return true;
}

absl::Status WorkerPool::spawn(Worker &w) {
  support::Pipe toWorker = support::Pipe::create(O_CLOEXEC), fromWorker = support::Pipe::create(O_CLOEXEC),
                errPipe = support::Pipe::create(O_CLOEXEC);
  for (const support::Pipe *p : {&toWorker, &fromWorker, &errPipe})
    if (p->error != 0)  // the pipes made so far close with their owners
      return absl::InternalError(absl::StrCat("cannot create pipes: ", std::strerror(p->error)));
  // Most requests (candidate + reference IR) then fit in the pipe: one write, no wake-up per 64 KiB.
  fcntl(toWorker.write.get(), F_SETPIPE_SZ, 1 << 20);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, toWorker.read.get(), 0);
  posix_spawn_file_actions_adddup2(&actions, fromWorker.write.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, errPipe.write.get(), 2);
  std::vector<std::string> args = {options_.runnerPath, absl::StrCat("--parent_pid=", getpid()),
                                   absl::StrCat("--memory_limit_mb=", options_.memoryLimitMb)};
  if (options_.pin) args.push_back(absl::StrCat("--cpus=", absl::StrJoin(w.cpus, ",")));
  for (const std::string &extra : options_.extraArgs) args.push_back(extra);
  std::vector<char *> argv;
  for (auto &a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  int rc = posix_spawn(&pid, options_.runnerPath.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return absl::InternalError(absl::StrCat("cannot start ", options_.runnerPath, ": ", std::strerror(rc)));
  setNonBlocking(toWorker.write.get());
  setNonBlocking(fromWorker.read.get());
  setNonBlocking(errPipe.read.get());
  {
    std::lock_guard<std::mutex> lock(mutex_);  // cancelAll reads pids under the lock
    w.pid = pid;
  }
  w.requestFd = std::move(toWorker.write);
  w.responseFd = std::move(fromWorker.read);
  w.stderrFd = std::move(errPipe.read);
  w.stderrTail.clear();
  return absl::OkStatus();  // the worker's ends close here, in this process
}

void WorkerPool::drainStderr(Worker &w) {
  char buffer[4096];
  while (w.stderrFd) {
    ssize_t n = ::read(w.stderrFd.get(), buffer, sizeof(buffer));
    if (n <= 0) break;
    w.stderrTail.append(buffer, static_cast<size_t>(n));
  }
  if (w.stderrTail.size() > 4096) w.stderrTail.erase(0, w.stderrTail.size() - 4096);
}

void WorkerPool::reap(Worker &w, Ending ending, const ExecRequest &request, ExecResult &result) {
  pid_t pid = 0;
  {
    // From here on cancelAll no longer sees the pid, which waitpid frees for reuse.
    std::lock_guard<std::mutex> lock(mutex_);
    pid = std::exchange(w.pid, 0);
  }
  // A worker that missed a deadline may be stopped from outside (SIGSTOP, a debugger): then the time-out is not the
  // candidate's doing.
  char state = ending == Ending::Died ? 0 : processState(pid);
  if (ending != Ending::Died) ::kill(pid, SIGKILL);
  int status = 0;
  pid_t got = ::waitpid(pid, &status, 0);
  drainStderr(w);
  std::string tail = w.stderrTail;
  while (!tail.empty() && (tail.back() == '\n' || tail.back() == ' ')) tail.pop_back();
  if (size_t cut = tail.rfind('\n', tail.size() > 600 ? tail.size() - 600 : 0); tail.size() > 600)
    tail = tail.substr(cut == std::string::npos ? tail.size() - 600 : cut + 1);
  auto interrupted = [&](std::string message, ExecResult::Interruption why) {
    result.failure = FailureKind::Internal;
    result.interruption = why;
    result.message = std::move(message);
  };
  if (cancelled_) {
    std::lock_guard<std::mutex> lock(mutex_);
    interrupted(cancelReason_, ExecResult::Interruption::Cancelled);
  } else if (ending == Ending::CallerDeadline) {
    interrupted("abandoned: the caller's deadline passed before the evaluation finished",
                ExecResult::Interruption::CallerDeadline);
  } else if (ending == Ending::Deadline) {
    if (state == 'T' || state == 't')
      interrupted("the evaluation worker was stopped from outside (SIGSTOP or a debugger) and missed its deadline",
                  ExecResult::Interruption::External);
    else {
      result.failure = FailureKind::Timeout;
      result.message =
          absl::StrCat("the candidate did not finish within ", request.timeoutSeconds, " s and was stopped");
    }
  } else if (got == pid && WIFEXITED(status) && WEXITSTATUS(status) == kOutOfMemoryExitCode) {
    result.failure = FailureKind::OutOfMemory;
    result.message = tail.empty() ? "out of memory" : tail;
  } else if (got == pid && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) {
    // Candidates cannot send SIGKILL to themselves (the sandbox refuses kill()); the kernel's OOM killer, an
    // operator or a crashing host can.
    interrupted("the evaluation worker was killed from outside (SIGKILL: the host's OOM killer or an operator)",
                ExecResult::Interruption::External);
  } else if (got == pid && WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    result.failure = FailureKind::Crash;
    result.message = absl::StrCat("the candidate crashed its worker: signal ", sig, " (", strsignal(sig), ")",
                                  tail.empty() ? "" : ": ", tail);
  } else {
    result.failure = FailureKind::Crash;
    result.message =
        absl::StrCat("the worker exited with status ", got == pid && WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                     tail.empty() ? "" : ": ", tail);
  }
  w.requestFd.reset();
  w.responseFd.reset();
  w.stderrFd.reset();
  removeOpenMpRegistration(pid);
}

ExecResult WorkerPool::execute(const ExecRequest &request) {
  Worker *w = nullptr;
  ExecResult result;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    ++stats_.requests;
    available_.wait(lock, [&] {
      if (cancelled_) return true;
      for (auto &candidate : workers_)
        if (!candidate->busy) return true;
      return false;
    });
    if (cancelled_) {
      result.failure = FailureKind::Internal;
      result.interruption = ExecResult::Interruption::Cancelled;
      result.message = cancelReason_;
      return result;
    }
    for (auto &candidate : workers_)
      if (!candidate->busy) {
        w = candidate.get();
        break;
      }
    w->busy = true;
  }
  auto release = [&] {
    std::lock_guard<std::mutex> lock(mutex_);
    w->busy = false;
    available_.notify_one();
  };

  bool needsSpawn = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    needsSpawn = w->pid == 0;
  }
  if (needsSpawn) {
    absl::Status spawned = absl::UnavailableError("the worker pool is shutting down");
    runOnSpawner([&] { spawned = spawn(*w); });
    if (!spawned.ok()) {
      result.failure = FailureKind::Internal;
      result.message = std::string(spawned.message());
      release();
      return result;
    }
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.spawns;
  }

  // Two deadlines: the evaluation's own (its time-out: the candidate's fault) and the caller's (it stopped waiting).
  Deadline own = request.timeoutSeconds > 0 ? Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                                 std::chrono::duration<double>(request.timeoutSeconds))
                                            : Deadline::max();
  Deadline deadline = std::min(own, request.callerDeadline);
  auto missed = [&] { return Clock::now() >= own ? Ending::Deadline : Ending::CallerDeadline; };
  std::optional<Ending> failed;
  std::string response;
  // Non-blocking: a worker that stopped reading (frozen, SIGSTOPped) with a frame larger than the pipe cannot hold
  // this thread past the deadline.
  FrameIo io = writeFrame(w->requestFd.get(), encode(request), deadline);
  if (io == FrameIo::TimedOut)
    failed = missed();
  else if (io == FrameIo::Closed)
    failed = Ending::Died;
  while (!failed) {
    // Wait for the answer while draining the worker's stderr.
    int waitMs = 1000;
    if (deadline != Deadline::max()) {
      auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) {
        failed = missed();
        break;
      }
      waitMs = static_cast<int>(std::min<int64_t>(left, 1000));
    }
    pollfd fds[2] = {{w->responseFd.get(), POLLIN, 0}, {w->stderrFd.get(), POLLIN, 0}};
    int n = ::poll(fds, 2, waitMs);
    if (n < 0 && errno == EINTR) continue;
    if (fds[1].revents & POLLIN) drainStderr(*w);
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      io = readFrame(w->responseFd.get(), response, deadline);
      if (io == FrameIo::TimedOut)
        failed = missed();
      else if (io == FrameIo::Closed || !decode(response, result))
        failed = Ending::Died;
      break;
    }
  }
  if (failed) {
    reap(*w, *failed, request, result);
    std::lock_guard<std::mutex> lock(mutex_);
    switch (result.failure) {
      case FailureKind::Timeout: ++stats_.timeouts; break;
      case FailureKind::OutOfMemory: ++stats_.outOfMemory; break;
      case FailureKind::Internal: ++stats_.external; break;
      default: ++stats_.crashes; break;
    }
  } else {
    drainStderr(*w);
  }
  release();
  return result;
}

SandboxCheck WorkerPool::checkSandbox() const {
  SandboxCheck check;
  support::Pipe out = support::Pipe::create(O_CLOEXEC);
  if (out.error != 0) {
    check.output = absl::StrCat("cannot create a pipe: ", std::strerror(out.error));
    return check;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out.write.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, out.write.get(), 2);
  std::vector<std::string> args = {options_.runnerPath, "--sandbox_selftest", absl::StrCat("--parent_pid=", getpid())};
  for (const std::string &extra : options_.extraArgs) args.push_back(extra);
  std::vector<char *> argv;
  for (auto &a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  int rc = posix_spawn(&pid, options_.runnerPath.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  out.write.reset();
  if (rc != 0) {
    check.output = absl::StrCat("cannot start ", options_.runnerPath, ": ", std::strerror(rc));
    return check;
  }
  char buffer[4096];
  for (ssize_t n; (n = ::read(out.read.get(), buffer, sizeof(buffer))) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    check.output.append(buffer, static_cast<size_t>(n));
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  check.contained = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  return check;
}

void WorkerPool::cancelAll(const std::string &reason) {
  std::lock_guard<std::mutex> lock(mutex_);
  cancelReason_ = reason;
  cancelled_ = true;
  // The threads exchanging with these workers see them die and report the cancellation.
  for (auto &w : workers_)
    if (w->pid > 0) ::kill(w->pid, SIGKILL);
  available_.notify_all();
}

WorkerPoolStats WorkerPool::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  WorkerPoolStats s = stats_;
  for (auto &w : workers_) {
    s.busy += w->busy;
    s.live += w->pid > 0;
  }
  return s;
}

std::vector<pid_t> WorkerPool::workerPids() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<pid_t> pids;
  for (auto &w : workers_)
    if (w->pid > 0) pids.push_back(w->pid);
  return pids;
}

}  // namespace mlir_rl::runners
