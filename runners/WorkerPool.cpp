#include "runners/WorkerPool.h"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <future>

#include <fcntl.h>
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

void closeFd(int &fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
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
      }
      closeFd(w->requestFd);
      closeFd(w->responseFd);
      closeFd(w->stderrFd);
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

bool WorkerPool::spawn(Worker &w, std::string &error) {
  int toWorker[2], fromWorker[2], errPipe[2];
  if (pipe2(toWorker, O_CLOEXEC) != 0 || pipe2(fromWorker, O_CLOEXEC) != 0 || pipe2(errPipe, O_CLOEXEC) != 0) {
    error = absl::StrCat("cannot create pipes: ", std::strerror(errno));
    return false;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, toWorker[0], 0);
  posix_spawn_file_actions_adddup2(&actions, fromWorker[1], 1);
  posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2);
  std::vector<std::string> args = {options_.runnerPath, absl::StrCat("--parent_pid=", getpid()),
                                   absl::StrCat("--memory_limit_mb=", options_.memoryLimitMb)};
  if (options_.pin) args.push_back(absl::StrCat("--cpus=", absl::StrJoin(w.cpus, ",")));
  std::vector<char *> argv;
  for (auto &a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  int rc = posix_spawn(&pid, options_.runnerPath.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(toWorker[0]);
  ::close(fromWorker[1]);
  ::close(errPipe[1]);
  if (rc != 0) {
    ::close(toWorker[1]);
    ::close(fromWorker[0]);
    ::close(errPipe[0]);
    error = absl::StrCat("cannot start ", options_.runnerPath, ": ", std::strerror(rc));
    return false;
  }
  fcntl(errPipe[0], F_SETFL, fcntl(errPipe[0], F_GETFL) | O_NONBLOCK);
  w.pid = pid;
  w.requestFd = toWorker[1];
  w.responseFd = fromWorker[0];
  w.stderrFd = errPipe[0];
  w.stderrTail.clear();
  return true;
}

void WorkerPool::drainStderr(Worker &w) {
  char buffer[4096];
  while (w.stderrFd >= 0) {
    ssize_t n = ::read(w.stderrFd, buffer, sizeof(buffer));
    if (n <= 0) break;
    w.stderrTail.append(buffer, static_cast<size_t>(n));
  }
  if (w.stderrTail.size() > 4096) w.stderrTail.erase(0, w.stderrTail.size() - 4096);
}

void WorkerPool::reap(Worker &w, ExecResult &result) {
  int status = 0;
  if (result.failure == FailureKind::Timeout) ::kill(w.pid, SIGKILL);
  // The exchange failed because the worker died (or we killed it): collect how.
  pid_t got = ::waitpid(w.pid, &status, 0);
  drainStderr(w);
  std::string tail = w.stderrTail;
  while (!tail.empty() && (tail.back() == '\n' || tail.back() == ' ')) tail.pop_back();
  if (size_t cut = tail.rfind('\n', tail.size() > 600 ? tail.size() - 600 : 0); tail.size() > 600)
    tail = tail.substr(cut == std::string::npos ? tail.size() - 600 : cut + 1);
  if (result.failure != FailureKind::Timeout && got == w.pid) {
    if (WIFEXITED(status) && WEXITSTATUS(status) == kOutOfMemoryExitCode) {
      result.failure = FailureKind::OutOfMemory;
      result.message = tail.empty() ? "out of memory" : tail;
    } else if (WIFSIGNALED(status)) {
      int sig = WTERMSIG(status);
      result.failure = FailureKind::Crash;
      result.message = absl::StrCat("the candidate crashed its worker: signal ", sig, " (", strsignal(sig), ")",
                                    tail.empty() ? "" : ": ", tail);
    } else {
      result.failure = FailureKind::Crash;
      result.message = absl::StrCat("the worker exited with status ", WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                                    tail.empty() ? "" : ": ", tail);
    }
  }
  closeFd(w.requestFd);
  closeFd(w.responseFd);
  closeFd(w.stderrFd);
  w.pid = 0;
}

ExecResult WorkerPool::execute(const ExecRequest &request) {
  Worker *w = nullptr;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    ++stats_.requests;
    available_.wait(lock, [&] {
      for (auto &candidate : workers_)
        if (!candidate->busy) return true;
      return false;
    });
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

  ExecResult result;
  if (w->pid == 0) {
    std::string error;
    bool spawned = false;
    runOnSpawner([&] { spawned = spawn(*w, error); });
    if (!spawned) {
      result.failure = FailureKind::Internal;
      result.message = error.empty() ? "the worker pool is shutting down" : error;
      release();
      return result;
    }
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.spawns;
  }

  std::string response;
  bool exchanged = writeFrame(w->requestFd, encode(request));
  if (exchanged) {
    // Wait for the answer while draining the worker's stderr; enforce the deadline.
    auto deadline = request.timeoutSeconds > 0
                        ? Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(request.timeoutSeconds))
                        : Clock::time_point::max();
    while (true) {
      int waitMs = -1;
      if (deadline != Clock::time_point::max()) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) {
          result.failure = FailureKind::Timeout;
          result.message = absl::StrCat("the candidate did not finish within ", request.timeoutSeconds,
                                        " s and was stopped");
          exchanged = false;
          break;
        }
        waitMs = static_cast<int>(std::min<int64_t>(left, 1000));
      }
      pollfd fds[2] = {{w->responseFd, POLLIN, 0}, {w->stderrFd, POLLIN, 0}};
      int n = ::poll(fds, 2, waitMs);
      if (n < 0 && errno == EINTR) continue;
      if (fds[1].revents & POLLIN) drainStderr(*w);
      if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
        exchanged = readFrame(w->responseFd, response) && decode(response, result);
        break;
      }
    }
  }
  if (!exchanged) {
    reap(*w, result);
    std::lock_guard<std::mutex> lock(mutex_);
    if (result.failure == FailureKind::Timeout) ++stats_.timeouts;
    else if (result.failure == FailureKind::OutOfMemory) ++stats_.outOfMemory;
    else ++stats_.crashes;
  } else {
    drainStderr(*w);
  }
  release();
  return result;
}

WorkerPoolStats WorkerPool::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

std::vector<pid_t> WorkerPool::workerPids() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<pid_t> pids;
  for (auto &w : workers_)
    if (w->pid > 0) pids.push_back(w->pid);
  return pids;
}

}  // namespace mlir_rl::runners
