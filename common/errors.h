// Error types and CHECK macros shared by every module.
// Library code throws; only `main` turns an error into a message and an exit code.
#pragma once

#include <cstdio>
#include <sstream>
#include <stdexcept>
#include <string>

namespace switchyard {

/// Any failure Switchyard reports to the user. The message is one line.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Bad user input (config file, --set override, command line): exit code 2, nothing started.
/// `field` is the dotted config path at fault (e.g. "router.top_k", "bench.router_shapes[1].top_k")
/// when there is one, so the loader can point at the line of the .pbtxt that set it.
class ConfigError : public Error {
 public:
  explicit ConfigError(const std::string& message, std::string field = {})
      : Error(message), field_(std::move(field)) {}
  const std::string& field() const { return field_; }

 private:
  std::string field_;
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

/// "12.3 s": a duration as messages and logs print it.
inline std::string seconds_text(double s) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f s", s);
  return text;
}
}  // namespace detail

}  // namespace switchyard

/// SY_CHECK(cond, "message parts", ...) throws switchyard::Error naming file and line.
#define SY_CHECK(cond, ...)                                                          \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      throw ::switchyard::Error(                                                     \
          ::switchyard::detail::concat(__FILE__, ":", __LINE__, ": ", __VA_ARGS__)); \
    }                                                                                \
  } while (0)
