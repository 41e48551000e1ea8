#include "server/Metrics.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <functional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace mlir_rl::server {

void MetricsText::add(const std::string &name, const std::string &help, const char *type, const std::string &suffix,
                      double value, const std::string &labels) {
  Family &f = families_[name];
  if (f.type.empty()) {
    f.help = help;
    f.type = type;
  }
  f.samples.push_back({suffix, labels, value});
}

void MetricsText::counter(const std::string &name, const std::string &help, double value, const std::string &labels) {
  add(name, help, "counter", "", value, labels);
}

void MetricsText::gauge(const std::string &name, const std::string &help, double value, const std::string &labels) {
  add(name, help, "gauge", "", value, labels);
}

std::string MetricsText::str() const {
  std::string out;
  for (const auto &[name, f] : families_) {
    absl::StrAppend(&out, "# HELP ", name, " ", f.help, "\n# TYPE ", name, " ", f.type, "\n");
    for (const Sample &s : f.samples)
      absl::StrAppend(&out, name, s.suffix, s.labels.empty() ? "" : "{" + s.labels + "}", " ",
                      absl::StrFormat("%.17g", s.value), "\n");
  }
  return out;
}

std::vector<std::pair<std::string, double>> MetricsText::samples() const {
  std::vector<std::pair<std::string, double>> out;
  for (const auto &[name, f] : families_)
    for (const Sample &s : f.samples)
      out.emplace_back(absl::StrCat(name, s.suffix, s.labels.empty() ? "" : "{" + s.labels + "}"), s.value);
  return out;
}

CallMetrics::CallMetrics(std::vector<std::string> methods)
    : methods_(std::move(methods)), perMethod_(new PerMethod[methods_.size()]) {}

void CallMetrics::record(size_t method, int code, double seconds) {
  PerMethod &m = perMethod_[method];
  m.codes[static_cast<size_t>(code >= 0 && code < kCodes ? code : 2)].fetch_add(1, std::memory_order_relaxed);
  size_t b = 0;
  while (b < kBuckets.size() && seconds > kBuckets[b]) ++b;
  m.buckets[b].fetch_add(1, std::memory_order_relaxed);
  m.sumMicros.fetch_add(static_cast<int64_t>(seconds * 1e6), std::memory_order_relaxed);
}

void CallMetrics::write(MetricsText &out) const {
  static const char *const codeNames[kCodes] = {
      "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
      "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
      "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
      "DATA_LOSS", "UNAUTHENTICATED"};
  for (size_t i = 0; i < methods_.size(); ++i) {
    const PerMethod &m = perMethod_[i];
    int64_t total = 0;
    for (int c = 0; c < kCodes; ++c) {
      int64_t n = m.codes[c].load(std::memory_order_relaxed);
      total += n;
      if (n > 0)
        out.counter("mlir_rl_calls_total", "RPCs answered, by method and status code", static_cast<double>(n),
                    absl::StrCat("method=\"", methods_[i], "\",code=\"", codeNames[c], "\""));
    }
    if (total == 0) continue;
    int64_t cumulative = 0;
    for (size_t b = 0; b <= kBuckets.size(); ++b) {
      cumulative += m.buckets[b].load(std::memory_order_relaxed);
      std::string le = b < kBuckets.size() ? absl::StrFormat("%g", kBuckets[b]) : "+Inf";
      out.add("mlir_rl_call_seconds", "RPC latency by method", "histogram", "_bucket", static_cast<double>(cumulative),
              absl::StrCat("method=\"", methods_[i], "\",le=\"", le, "\""));
    }
    std::string label = absl::StrCat("method=\"", methods_[i], "\"");
    out.add("mlir_rl_call_seconds", "RPC latency by method", "histogram", "_sum",
            static_cast<double>(m.sumMicros.load(std::memory_order_relaxed)) * 1e-6, label);
    out.add("mlir_rl_call_seconds", "RPC latency by method", "histogram", "_count", static_cast<double>(cumulative),
            label);
  }
}

double residentBytes() {
  std::ifstream in("/proc/self/statm");
  long pages = 0, resident = 0;
  if (!(in >> pages >> resident)) return 0;
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE));
}

struct MetricsEndpoint::Daemon {
  MHD_Daemon *mhd = nullptr;
};

namespace {

MHD_Result answer(void *cls, MHD_Connection *connection, const char *url, const char *method, const char *,
                  const char *, size_t *, void **) {
  auto *render = static_cast<std::function<std::string()> *>(cls);
  std::string body;
  unsigned status = MHD_HTTP_OK;
  const char *type = "text/plain; version=0.0.4; charset=utf-8";
  if (std::strcmp(method, "GET") != 0 && std::strcmp(method, "HEAD") != 0) {
    status = MHD_HTTP_METHOD_NOT_ALLOWED;
    body = "only GET\n";
  } else if (std::strcmp(url, "/metrics") != 0) {
    status = MHD_HTTP_NOT_FOUND;
    body = "mlir-rl-server serves /metrics only\n";
  } else {
    body = (*render)();
  }
  MHD_Response *response = MHD_create_response_from_buffer(body.size(), body.data(), MHD_RESPMEM_MUST_COPY);
  MHD_add_response_header(response, "Content-Type", type);
  MHD_Result ok = MHD_queue_response(connection, status, response);
  MHD_destroy_response(response);
  return ok;
}

}  // namespace

std::unique_ptr<MetricsEndpoint> MetricsEndpoint::start(const std::string &address, int port,
                                                        std::function<std::string()> render, std::string &error) {
  std::unique_ptr<MetricsEndpoint> endpoint(new MetricsEndpoint());
  endpoint->render_ = std::move(render);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, address.c_str(), &addr.sin_addr) != 1) {
    error = absl::StrCat("--metrics_address '", address, "' is not an IPv4 address");
    return nullptr;
  }
  MHD_Daemon *mhd =
      MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, static_cast<uint16_t>(port), nullptr,
                       nullptr, &answer, &endpoint->render_, MHD_OPTION_SOCK_ADDR, &addr, MHD_OPTION_CONNECTION_LIMIT,
                       16u, MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
  if (!mhd) {
    error = absl::StrCat("cannot serve metrics on ", address, ":", port);
    return nullptr;
  }
  endpoint->daemon_ = new Daemon{mhd};
  const MHD_DaemonInfo *info = MHD_get_daemon_info(mhd, MHD_DAEMON_INFO_BIND_PORT);
  endpoint->port_ = info ? info->port : port;
  return endpoint;
}

MetricsEndpoint::~MetricsEndpoint() {
  if (daemon_) {
    MHD_stop_daemon(daemon_->mhd);
    delete daemon_;
  }
}

}  // namespace mlir_rl::server
