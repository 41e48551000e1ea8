// What the server reports about itself, in the Prometheus text exposition format (0.0.4): GetMetrics returns it,
// --metrics_port serves it at /metrics for scrapers, and a summary goes to the log at an interval.
#pragma once

#include <array>
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace mlir_rl::server {

// Samples grouped by metric name, each name with its HELP and TYPE lines once.
class MetricsText {
 public:
  void counter(const std::string &name, const std::string &help, double value, const std::string &labels = "");
  void gauge(const std::string &name, const std::string &help, double value, const std::string &labels = "");
  std::string str() const;
  // "name{labels}" -> value, every sample.
  std::vector<std::pair<std::string, double>> samples() const;

 private:
  struct Sample {
    std::string suffix, labels;  // suffix: "_bucket", "_sum", "_count" of a histogram, else empty
    double value;
  };
  struct Family {
    std::string help, type;
    std::vector<Sample> samples;
  };
  void add(const std::string &name, const std::string &help, const char *type, const std::string &suffix, double value,
           const std::string &labels);
  std::map<std::string, Family> families_;
  friend class CallMetrics;
};

// Calls per method and status code, and a latency histogram per method. Lock-free.
class CallMetrics {
 public:
  explicit CallMetrics(std::vector<std::string> methods);
  void record(size_t method, int code, double seconds);
  void write(MetricsText &out) const;
  const std::vector<std::string> &methods() const { return methods_; }

 private:
  static constexpr std::array<double, 12> kBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05,
                                                      0.1,    0.5,   1,      5,     30,   120};
  static constexpr int kCodes = 17;
  struct PerMethod {
    std::array<std::atomic<int64_t>, kCodes> codes{};
    std::array<std::atomic<int64_t>, kBuckets.size() + 1> buckets{};  // the last is +Inf
    std::atomic<int64_t> sumMicros{0};
  };
  std::vector<std::string> methods_;
  std::unique_ptr<PerMethod[]> perMethod_;
};

// The process's resident set size in bytes (from /proc/self/statm), 0 when unknown.
double residentBytes();

// Serves `render()` at http://<address>:<port>/metrics (libmicrohttpd's own thread) until destroyed.
class MetricsEndpoint {
 public:
  static std::unique_ptr<MetricsEndpoint> start(const std::string &address, int port,
                                                std::function<std::string()> render, std::string &error);
  ~MetricsEndpoint();
  int port() const { return port_; }

 private:
  MetricsEndpoint() = default;
  struct Daemon;
  Daemon *daemon_ = nullptr;
  std::function<std::string()> render_;
  int port_ = 0;
};

}  // namespace mlir_rl::server
