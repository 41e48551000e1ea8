// Messages between the server and `mlir-rl-runner` workers: length-prefixed frames over pipes. Both ends are the
// same build on the same machine, so numbers travel in native byte order.
#pragma once

#include <string>

#include "runners/Executor.h"

namespace mlir_rl::runners {

std::string encode(const ExecRequest &request);
bool decode(const std::string &bytes, ExecRequest &request);
std::string encode(const ExecResult &result);
bool decode(const std::string &bytes, ExecResult &result);

// Whole-frame I/O on a file descriptor (retries on EINTR and short transfers). False on EOF or error.
bool writeFrame(int fd, const std::string &payload);
bool readFrame(int fd, std::string &payload);

// The same with a deadline, for non-blocking descriptors (the server's ends of a worker's pipes): a worker that
// stopped reading or writing (frozen, SIGSTOPped) cannot hold the caller past the deadline.
enum class FrameIo { Done, Closed, TimedOut };
FrameIo writeFrame(int fd, const std::string &payload, Deadline deadline);
FrameIo readFrame(int fd, std::string &payload, Deadline deadline);

}  // namespace mlir_rl::runners
