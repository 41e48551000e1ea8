// A small JSON writer: objects and arrays indented two spaces, "compact" arrays on one line.
#pragma once

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace mlir_rl::cli {

class JsonWriter {
 public:
  JsonWriter &beginObject() { return open('{', false); }
  JsonWriter &endObject() { return close('}'); }
  JsonWriter &beginArray(bool compact = false) { return open('[', compact); }
  JsonWriter &endArray() { return close(']'); }
  JsonWriter &key(const std::string &k) {
    separate();
    out_ += quote(k) + ": ";
    afterKey_ = true;
    return *this;
  }
  JsonWriter &value(const std::string &v) { return raw(quote(v)); }
  JsonWriter &value(const char *v) { return raw(quote(v)); }
  JsonWriter &value(bool v) { return raw(v ? "true" : "false"); }
  JsonWriter &value(int v) { return raw(std::to_string(v)); }
  JsonWriter &value(long long v) { return raw(std::to_string(v)); }
  JsonWriter &value(double v) {
    if (!std::isfinite(v)) return raw("null");
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.6g", v);
    return raw(buf);
  }
  JsonWriter &null() { return raw("null"); }
  const std::string &str() const { return out_; }

  static std::string quote(const std::string &s) {
    std::string q = "\"";
    for (unsigned char c : s) {
      switch (c) {
        case '"': q += "\\\""; break;
        case '\\': q += "\\\\"; break;
        case '\n': q += "\\n"; break;
        case '\r': q += "\\r"; break;
        case '\t': q += "\\t"; break;
        default:
          if (c < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            q += buf;
          } else {
            q += static_cast<char>(c);
          }
      }
    }
    return q + "\"";
  }

 private:
  struct Level {
    bool compact;
    bool first = true;
  };
  void separate() {
    if (afterKey_) {
      afterKey_ = false;
      return;
    }
    if (levels_.empty()) return;
    Level &l = levels_.back();
    if (!l.first) out_ += l.compact ? ", " : ",";
    if (!l.compact) out_ += "\n" + std::string(2 * levels_.size(), ' ');
    l.first = false;
  }
  JsonWriter &raw(const std::string &text) {
    separate();
    out_ += text;
    return *this;
  }
  JsonWriter &open(char c, bool compact) {
    separate();
    out_ += c;
    bool inherit = !levels_.empty() && levels_.back().compact;
    levels_.push_back({compact || inherit});
    return *this;
  }
  JsonWriter &close(char c) {
    Level l = levels_.back();
    levels_.pop_back();
    if (!l.compact && !l.first) out_ += "\n" + std::string(2 * levels_.size(), ' ');
    out_ += c;
    return *this;
  }
  std::string out_;
  std::vector<Level> levels_;
  bool afterKey_ = false;
};

}  // namespace mlir_rl::cli
