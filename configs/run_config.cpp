// Text-format loading and reflection-based overrides for RunConfig.
#include "configs/run_config.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <sstream>

#include "common/errors.h"

namespace switchyard {
namespace pb = google::protobuf;

namespace {

// Keeps the first parse error with its position; the parser reports lines and columns 0-based.
class FirstErrorCollector : public pb::io::ErrorCollector {
 public:
  explicit FirstErrorCollector(std::string source) : source_(std::move(source)) {}
  void AddError(int line, pb::io::ColumnNumber column, const std::string& message) override {
    if (first_.empty())
      first_ = detail::concat(source_, ":", line + 1, ":", column + 1, ": ", message);
  }
  void AddWarning(int, pb::io::ColumnNumber, const std::string&) override {}
  const std::string& first() const { return first_; }

 private:
  std::string source_;
  std::string first_;
};

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  std::string cur;
  std::istringstream is(s);
  while (std::getline(is, cur, sep)) parts.push_back(cur);
  if (!s.empty() && s.back() == sep) parts.emplace_back();
  return parts;
}

template <typename Int>
bool parse_int(const std::string& text, Int& out) {
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, out);
  return ec == std::errc() && ptr == end && !text.empty();
}

bool parse_double(const std::string& text, double& out) {
  if (text.empty()) return false;
  char* end = nullptr;
  errno = 0;
  out = std::strtod(text.c_str(), &end);
  return errno == 0 && end == text.c_str() + text.size() && std::isfinite(out);
}

std::string type_name(const pb::FieldDescriptor* f) {
  if (f->type() == pb::FieldDescriptor::TYPE_ENUM) {
    std::string names;
    for (int i = 0; i < f->enum_type()->value_count(); ++i)
      names += (i ? "|" : "") + f->enum_type()->value(i)->name();
    return "one of " + names;
  }
  return f->type_name();
}

// Sets one scalar (or appends to a repeated scalar) from text; returns false on a bad value.
bool set_scalar(pb::Message& msg, const pb::FieldDescriptor* f, const std::string& text) {
  const pb::Reflection* r = msg.GetReflection();
  const bool rep = f->is_repeated();
  switch (f->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT32: {
      int32_t v;
      if (!parse_int(text, v)) return false;
      rep ? r->AddInt32(&msg, f, v) : r->SetInt32(&msg, f, v);
      return true;
    }
    case pb::FieldDescriptor::CPPTYPE_INT64: {
      int64_t v;
      if (!parse_int(text, v)) return false;
      rep ? r->AddInt64(&msg, f, v) : r->SetInt64(&msg, f, v);
      return true;
    }
    case pb::FieldDescriptor::CPPTYPE_UINT32: {
      uint32_t v;
      if (!parse_int(text, v)) return false;
      rep ? r->AddUInt32(&msg, f, v) : r->SetUInt32(&msg, f, v);
      return true;
    }
    case pb::FieldDescriptor::CPPTYPE_UINT64: {
      uint64_t v;
      if (!parse_int(text, v)) return false;
      rep ? r->AddUInt64(&msg, f, v) : r->SetUInt64(&msg, f, v);
      return true;
    }
    case pb::FieldDescriptor::CPPTYPE_FLOAT:
    case pb::FieldDescriptor::CPPTYPE_DOUBLE: {
      double v;
      if (!parse_double(text, v)) return false;
      if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_FLOAT) {
        if (std::fabs(v) > std::numeric_limits<float>::max()) return false;
        rep ? r->AddFloat(&msg, f, float(v)) : r->SetFloat(&msg, f, float(v));
      } else {
        rep ? r->AddDouble(&msg, f, v) : r->SetDouble(&msg, f, v);
      }
      return true;
    }
    case pb::FieldDescriptor::CPPTYPE_BOOL: {
      bool v;
      if (text == "true" || text == "1")
        v = true;
      else if (text == "false" || text == "0")
        v = false;
      else
        return false;
      rep ? r->AddBool(&msg, f, v) : r->SetBool(&msg, f, v);
      return true;
    }
    case pb::FieldDescriptor::CPPTYPE_ENUM: {
      std::string upper = text;
      std::transform(upper.begin(), upper.end(), upper.begin(), ::toupper);
      const pb::EnumValueDescriptor* v = f->enum_type()->FindValueByName(upper);
      if (!v) return false;
      rep ? r->AddEnum(&msg, f, v) : r->SetEnum(&msg, f, v);
      return true;
    }
    case pb::FieldDescriptor::CPPTYPE_STRING:
      rep ? r->AddString(&msg, f, text) : r->SetString(&msg, f, text);
      return true;
    case pb::FieldDescriptor::CPPTYPE_MESSAGE:
      return false;
  }
  return false;
}

// Where in the parsed text `field_path` (e.g. "bench.router_shapes[1].top_k") was set, as
// "LINE:COL", or "" when the text did not set it.
std::string locate(const pb::TextFormat::ParseInfoTree& root, const std::string& field_path) {
  const pb::Descriptor* d = RunConfig::descriptor();
  const pb::TextFormat::ParseInfoTree* tree = &root;
  const std::vector<std::string> parts = split(field_path, '.');
  for (size_t i = 0; i < parts.size(); ++i) {
    std::string name = parts[i];
    int index = -1;
    if (auto open = name.find('['); open != std::string::npos) {
      index = std::atoi(name.c_str() + open + 1);
      name = name.substr(0, open);
    }
    const pb::FieldDescriptor* f = d ? d->FindFieldByName(name) : nullptr;
    if (!f || f->is_repeated() != (index >= 0)) return "";
    if (i + 1 == parts.size()) {
      auto loc = tree->GetLocation(f, index);
      return loc.line < 0 ? "" : detail::concat(loc.line + 1, ":", loc.column + 1);
    }
    if (f->cpp_type() != pb::FieldDescriptor::CPPTYPE_MESSAGE) return "";
    tree = tree->GetTreeForNested(f, index);
    if (!tree) return "";
    d = f->message_type();
  }
  return "";
}

RunConfig parse_with_locations(const std::string& text, const std::string& source,
                               pb::TextFormat::ParseInfoTree* tree) {
  RunConfig config;
  pb::TextFormat::Parser parser;
  FirstErrorCollector errors(source);
  parser.RecordErrorsTo(&errors);
  if (tree) parser.WriteLocationsTo(tree);
  if (!parser.ParseFromString(text, &config)) {
    throw ConfigError(errors.first().empty() ? source + ": cannot parse config" : errors.first());
  }
  return config;
}

std::string read_config_text(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path + ": cannot open config file");
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

}  // namespace

RunConfig parse_run_config(const std::string& text, const std::string& source) {
  return parse_with_locations(text, source, nullptr);
}

RunConfig load_run_config_file(const std::string& path) {
  return parse_run_config(read_config_text(path), path);
}

void apply_override(RunConfig& config, const std::string& assignment) {
  const auto eq = assignment.find('=');
  const std::string where = "--set " + assignment;
  if (eq == std::string::npos || eq == 0)
    throw ConfigError(where + ": expected path.to.field=value");
  const std::string path = assignment.substr(0, eq);
  const std::string value = assignment.substr(eq + 1);

  pb::Message* msg = &config;
  const std::vector<std::string> parts = split(path, '.');
  for (size_t i = 0; i < parts.size(); ++i) {
    const pb::Descriptor* d = msg->GetDescriptor();
    const pb::FieldDescriptor* f = d->FindFieldByName(parts[i]);
    if (!f) throw ConfigError(where + ": no field '" + parts[i] + "' in " + d->name());
    const bool last = i + 1 == parts.size();
    if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      if (f->is_repeated())
        throw ConfigError(where + ": '" + parts[i] +
                          "' is a list of messages; set it in the config file");
      // Mutating a oneof member selects it; `router.hash=` alone selects an empty member.
      pb::Message* child = msg->GetReflection()->MutableMessage(msg, f);
      if (last) {
        if (!value.empty())
          throw ConfigError(where + ": '" + parts[i] + "' is a message; name one of its fields");
        return;
      }
      msg = child;
      continue;
    }
    if (!last)
      throw ConfigError(where + ": '" + parts[i] + "' is a " + f->type_name() + ", not a message");
    if (f->is_repeated()) {
      msg->GetReflection()->ClearField(msg, f);
      for (const std::string& item : split(value, ','))
        if (!set_scalar(*msg, f, item))
          throw ConfigError(where + ": '" + item + "' is not a valid " + type_name(f));
    } else if (!set_scalar(*msg, f, value)) {
      throw ConfigError(where + ": '" + value + "' is not a valid " + type_name(f));
    }
    return;
  }
}

RunConfig build_run_config(const std::string& path, const std::vector<std::string>& overrides) {
  pb::TextFormat::ParseInfoTree locations;
  RunConfig config =
      path.empty() ? RunConfig() : parse_with_locations(read_config_text(path), path, &locations);
  for (const std::string& o : overrides) apply_override(config, o);
  try {
    validate_run_config(config);
  } catch (const ConfigError& e) {
    // Point at the .pbtxt line that set the field, unless a --set (named in the message's
    // value already) overrode it.
    bool overridden = false;
    for (const std::string& o : overrides) overridden |= o.rfind(e.field() + "=", 0) == 0;
    const std::string where = path.empty() || overridden ? "" : locate(locations, e.field());
    if (where.empty()) throw;
    throw ConfigError(path + ":" + where + ": " + e.what(), e.field());
  }
  return config;
}

std::string to_text(const RunConfig& config) {
  std::string out;
  pb::TextFormat::PrintToString(config, &out);
  return out;
}

}  // namespace switchyard
