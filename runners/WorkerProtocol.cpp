#include "runners/WorkerProtocol.h"

#include <cerrno>
#include <cstdint>
#include <cstring>

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>

namespace mlir_rl::runners {

namespace {

class Writer {
 public:
  template <typename T>
  void pod(T value) {
    out_.append(reinterpret_cast<const char *>(&value), sizeof(T));
  }
  void str(const std::string &s) {
    pod<uint64_t>(s.size());
    out_ += s;
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

class Reader {
 public:
  explicit Reader(const std::string &in) : in_(in) {}
  template <typename T>
  bool pod(T &value) {
    if (pos_ + sizeof(T) > in_.size()) return false;
    std::memcpy(&value, in_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return true;
  }
  bool str(std::string &s) {
    uint64_t n = 0;
    if (!pod(n) || pos_ + n > in_.size()) return false;
    s.assign(in_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  bool done() const { return pos_ == in_.size(); }

 private:
  const std::string &in_;
  size_t pos_ = 0;
};

void timing(Writer &w, const Timing &t) {
  w.pod(t.medianNs);
  w.pod(t.minNs);
  w.pod(t.spread);
  w.pod<int32_t>(t.repetitions);
  w.pod<uint8_t>(t.raced);
}
bool timing(Reader &r, Timing &t) {
  int32_t reps = 0;
  uint8_t raced = 0;
  bool ok = r.pod(t.medianNs) && r.pod(t.minNs) && r.pod(t.spread) && r.pod(reps) && r.pod(raced);
  t.repetitions = reps;
  t.raced = raced != 0;
  return ok;
}

}  // namespace

std::string encode(const ExecRequest &q) {
  Writer w;
  w.str(q.candidateIR);
  w.str(q.referenceIR);
  w.pod(q.seed);
  w.pod<int32_t>(q.numThreads);
  w.pod<int32_t>(q.timing.minRepetitions);
  w.pod<int32_t>(q.timing.maxRepetitions);
  w.pod(q.timing.targetSpread);
  w.pod(q.timing.budgetSeconds);
  w.pod(q.timing.minSampleSeconds);
  w.pod(q.timing.raceAgainstNs);
  w.pod(q.timing.raceFactor);
  w.pod<int32_t>(q.timing.raceMinRepetitions);
  w.pod(q.timing.longSampleSeconds);
  w.pod<uint8_t>(q.time);
  w.pod(q.timeoutSeconds);
  return w.take();
}

bool decode(const std::string &bytes, ExecRequest &q) {
  Reader r(bytes);
  int32_t threads = 0, minReps = 0, maxReps = 0, raceMinReps = 0;
  uint8_t time = 0;
  bool ok = r.str(q.candidateIR) && r.str(q.referenceIR) && r.pod(q.seed) && r.pod(threads) && r.pod(minReps) &&
            r.pod(maxReps) && r.pod(q.timing.targetSpread) && r.pod(q.timing.budgetSeconds) &&
            r.pod(q.timing.minSampleSeconds) && r.pod(q.timing.raceAgainstNs) && r.pod(q.timing.raceFactor) &&
            r.pod(raceMinReps) && r.pod(q.timing.longSampleSeconds) && r.pod(time) && r.pod(q.timeoutSeconds) &&
            r.done();
  q.numThreads = threads;
  q.timing.minRepetitions = minReps;
  q.timing.maxRepetitions = maxReps;
  q.timing.raceMinRepetitions = raceMinReps;
  q.time = time != 0;
  return ok;
}

std::string encode(const ExecResult &e) {
  Writer w;
  w.pod<int32_t>(static_cast<int32_t>(e.failure));
  w.str(e.message);
  w.pod<uint8_t>(e.correct);
  w.pod(e.maxAbsError);
  timing(w, e.timing);
  w.pod(e.lowerMs);
  w.pod(e.jitMs);
  return w.take();
}

bool decode(const std::string &bytes, ExecResult &e) {
  Reader r(bytes);
  int32_t kind = 0;
  uint8_t correct = 0;
  bool ok = r.pod(kind) && r.str(e.message) && r.pod(correct) && r.pod(e.maxAbsError) && timing(r, e.timing) &&
            r.pod(e.lowerMs) && r.pod(e.jitMs) && r.done();
  e.failure = static_cast<FailureKind>(kind);
  e.correct = correct != 0;
  return ok;
}

namespace {

// Waits until `fd` is ready for `events` or the deadline passes (false). EINTR restarts the wait.
bool waitFor(int fd, short events, Deadline deadline) {
  while (true) {
    int timeoutMs = -1;
    if (deadline != Deadline::max()) {
      auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
      if (left <= 0) return false;
      timeoutMs = static_cast<int>(std::min<int64_t>(left, 1 << 30));
    }
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, timeoutMs);
    if (n < 0 && errno == EINTR) continue;
    return n != 0;  // ready, hung up or failed: the next read or write says which
  }
}

FrameIo transfer(int fd, char *data, size_t n, bool writing, Deadline deadline) {
  size_t done = 0;
  while (done < n) {
    ssize_t k = writing ? ::write(fd, data + done, n - done) : ::read(fd, data + done, n - done);
    if (k > 0) {
      done += static_cast<size_t>(k);
      continue;
    }
    if (k < 0 && errno == EINTR) continue;
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!waitFor(fd, writing ? POLLOUT : POLLIN, deadline)) return FrameIo::TimedOut;
      continue;
    }
    return FrameIo::Closed;  // EOF, EPIPE, ...
  }
  return FrameIo::Done;
}

}  // namespace

FrameIo writeFrame(int fd, const std::string &payload, Deadline deadline) {
  uint64_t n = payload.size();
  FrameIo io = transfer(fd, reinterpret_cast<char *>(&n), sizeof(n), /*writing=*/true, deadline);
  if (io != FrameIo::Done) return io;
  return transfer(fd, const_cast<char *>(payload.data()), payload.size(), /*writing=*/true, deadline);
}

FrameIo readFrame(int fd, std::string &payload, Deadline deadline) {
  uint64_t n = 0;
  FrameIo io = transfer(fd, reinterpret_cast<char *>(&n), sizeof(n), /*writing=*/false, deadline);
  if (io != FrameIo::Done) return io;
  if (n > (uint64_t{1} << 34)) return FrameIo::Closed;  // 16 GiB: a corrupt length, not a message
  payload.resize(n);
  return transfer(fd, payload.data(), n, /*writing=*/false, deadline);
}

bool writeFrame(int fd, const std::string &payload) {
  return writeFrame(fd, payload, Deadline::max()) == FrameIo::Done;
}
bool readFrame(int fd, std::string &payload) { return readFrame(fd, payload, Deadline::max()) == FrameIo::Done; }

}  // namespace mlir_rl::runners
