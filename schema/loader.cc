// The typed accessors of the YAML walk (loader.h): maps checked against key
// tables, scalars interpolated, values parsed, every problem recorded.
#include "schema/loader.h"

#include <algorithm>
#include <map>

#include "schema/values.h"

namespace msb::schema::internal {
namespace {

// Names other tools use for our keys; offered when edit distance finds nothing.
constexpr struct { std::string_view from, to; } kKeyHints[] = {
    {"environment", "envs"},   {"env", "envs"},          {"env_vars", "envs"},
    {"mem_limit", "memory"},   {"mem", "memory"},        {"working_dir", "workdir"},
    {"entrypoint", "command"}, {"cmd", "command"},       {"mounts", "volumes"},
    {"expose", "ports"},       {"dependencies", "depends_on"}, {"requires", "depends_on"},
    {"health_check", "healthcheck"}, {"restart_policy", "restart"}, {"networks", "network"},
    {"networking", "network"}, {"rootfs", "image"},      {"vcpus", "cpus"},
};

std::string Join(const std::string& path, std::string_view key) {
  return path.empty() ? std::string(key) : path + "." + std::string(key);
}

std::string UnknownKeyMessage(std::string_view name, const std::vector<std::string_view>& keys) {
  std::string hint = DidYouMean(name, keys);
  if (hint.empty()) {
    for (const auto& h : kKeyHints) {
      if (h.from == name && std::find(keys.begin(), keys.end(), h.to) != keys.end()) {
        hint = "; did you mean \"" + std::string(h.to) + "\"?";
      }
    }
  }
  if (hint.empty() && keys.size() <= 8) {
    std::string list;
    for (std::string_view k : keys) list += (list.empty() ? "" : ", ") + std::string(k);
    hint = " (expected one of: " + list + ")";
  }
  return "unknown key" + hint;
}

// Well-formed UTF-8 (no overlongs, surrogates or values past U+10FFFF).
bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    int n = (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2 : (c & 0xF8) == 0xF0 ? 3 : -1;
    if (n < 0 || i + static_cast<size_t>(n) >= s.size()) return false;
    uint32_t cp = c & (0x3F >> n);
    for (int k = 1; k <= n; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + static_cast<size_t>(k)]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += static_cast<size_t>(n) + 1;
  }
  return true;
}

bool IsMergeKey(const YAML::Node& key) { return key.IsScalar() && key.Scalar() == "<<" && key.Tag() == "?"; }

}  // namespace

Pos PosOf(const YAML::Node& node) {
  YAML::Mark m = node.Mark();
  if (m.is_null() || m.line < 0) return {};
  return {m.line + 1, m.column + 1};
}

Field MakeField(const YAML::Node& key, const YAML::Node& value, std::string path) {
  Field f;
  f.present = true;
  f.key = key;
  f.value = value;
  f.path = std::move(path);
  f.pos = value.IsNull() ? Pos{} : PosOf(value);
  if (f.pos.line == 0) f.pos = PosOf(key);
  return f;
}

const char* TypeName(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null: return "nothing (null)";
    case YAML::NodeType::Scalar: return "a string";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a map";
    case YAML::NodeType::Undefined: break;
  }
  return "nothing";
}

Ctx::Ctx(std::string file, std::string base_dir, const Env& env,
         std::function<bool(const std::string&)> path_exists, Diagnostics* diags)
    : file_(std::move(file)),
      base_dir_(std::move(base_dir)),
      env_(env),
      path_exists_(std::move(path_exists)),
      diags_(diags) {
  auto it = env_.find("HOME");
  if (it != env_.end()) home_ = it->second;
}

void Ctx::Error(Pos pos, const std::string& path, std::string message) {
  diags_->Error(file_, pos, path, std::move(message));
}

void Ctx::Warning(Pos pos, const std::string& path, std::string message) {
  diags_->Warning(file_, pos, path, std::move(message));
}

std::vector<Field> Ctx::ReadMap(const YAML::Node& node, const std::string& path, Pos at,
                                const std::vector<std::string_view>& keys, bool extensions) {
  std::vector<Field> out(keys.size());
  std::vector<bool> explicit_key(keys.size(), false);
  if (node.IsNull()) return out;
  if (!node.IsMap()) {
    Error(at, path, std::string("expected a map, got ") + TypeName(node));
    return out;
  }
  auto place = [&](const YAML::Node& k, const YAML::Node& v, bool merged) {
    if (!k.IsScalar()) {
      Error(PosOf(k), path, "keys must be strings, got " + std::string(TypeName(k)));
      return;
    }
    const std::string& name = k.Scalar();
    if (extensions && name.rfind("x-", 0) == 0) return;
    auto it = std::find(keys.begin(), keys.end(), name);
    if (it == keys.end()) {
      Error(PosOf(k), Join(path, name), UnknownKeyMessage(name, keys));
      return;
    }
    size_t i = static_cast<size_t>(it - keys.begin());
    if (out[i].present) {
      if (!merged && explicit_key[i]) {
        Error(PosOf(k), Join(path, name),
              "duplicate key (first at line " + std::to_string(PosOf(out[i].key).line) + ")");
      }
      return;  // explicit keys win over merged ones; earlier merges over later
    }
    out[i] = MakeField(k, v, Join(path, name));
    explicit_key[i] = !merged;
  };
  std::vector<YAML::Node> merges;
  for (auto it = node.begin(); it != node.end(); ++it) {
    if (IsMergeKey(it->first)) {
      merges.push_back(it->second);
      continue;
    }
    place(it->first, it->second, false);
  }
  for (const YAML::Node& m : merges) {
    std::vector<YAML::Node> sources;
    if (m.IsMap()) sources.push_back(m);
    if (m.IsSequence()) {
      for (auto it = m.begin(); it != m.end(); ++it) sources.push_back(*it);
    }
    if (sources.empty()) Error(PosOf(m), path, "a << merge key needs a map or a list of maps");
    for (const YAML::Node& src : sources) {
      if (!src.IsMap()) {
        Error(PosOf(src), path, "a << merge key needs a map or a list of maps");
        continue;
      }
      for (auto it = src.begin(); it != src.end(); ++it) {
        if (!IsMergeKey(it->first)) place(it->first, it->second, true);
      }
    }
  }
  return out;
}

std::vector<Field> Ctx::Entries(const YAML::Node& node, const std::string& path, Pos at) {
  std::vector<Field> out;
  if (node.IsNull()) return out;
  if (!node.IsMap()) {
    Error(at, path, std::string("expected a map, got ") + TypeName(node));
    return out;
  }
  std::map<std::string_view, size_t> seen;  // views into the nodes' scalars
  auto add = [&](const YAML::Node& k, const YAML::Node& v, bool merged) {
    if (!k.IsScalar()) {
      Error(PosOf(k), path, "keys must be strings, got " + std::string(TypeName(k)));
      return;
    }
    auto [it, fresh] = seen.emplace(k.Scalar(), out.size());
    if (!fresh) {
      if (!merged) {
        Error(PosOf(k), Join(path, k.Scalar()),
              "duplicate key (first at line " + std::to_string(PosOf(out[it->second].key).line) + ")");
      }
      return;
    }
    out.push_back(MakeField(k, v, Join(path, k.Scalar())));
  };
  std::vector<YAML::Node> merges;
  for (auto it = node.begin(); it != node.end(); ++it) {
    if (IsMergeKey(it->first)) merges.push_back(it->second);
    else add(it->first, it->second, false);
  }
  for (const YAML::Node& m : merges) {
    if (!m.IsMap()) {
      Error(PosOf(m), path, "a << merge key needs a map");
      continue;
    }
    for (auto it = m.begin(); it != m.end(); ++it) {
      if (!IsMergeKey(it->first)) add(it->first, it->second, true);
    }
  }
  return out;
}

std::vector<Field> Ctx::Items(const Field& f) {
  std::vector<Field> out;
  if (f.value.IsNull()) return out;
  if (!f.value.IsSequence()) {
    Error(f.pos, f.path, std::string("expected a list, got ") + TypeName(f.value));
    return out;
  }
  size_t i = 0;
  for (auto it = f.value.begin(); it != f.value.end(); ++it, ++i) {
    Field item = MakeField(f.key, *it, f.path + "[" + std::to_string(i) + "]");
    out.push_back(std::move(item));
  }
  return out;
}

std::optional<std::string> Ctx::Scalar(const Field& f, const char* expected) {
  if (!f.value.IsScalar()) {
    Error(f.pos, f.path, std::string("expected ") + expected + ", got " + TypeName(f.value));
    return std::nullopt;
  }
  const std::string& raw = f.value.Scalar();
  if (raw.find('\0') != std::string::npos) {
    Error(f.pos, f.path, "NUL characters are not allowed");
    return std::nullopt;
  }
  if (!IsValidUtf8(raw)) {
    Error(f.pos, f.path, "the text is not valid UTF-8");
    return std::nullopt;
  }
  if (verbatim_) return raw;
  std::vector<std::string> unset;
  auto r = Interpolate(raw, env_, &unset);
  if (!r.ok()) {
    Error(f.pos, f.path, r.error().message());
    return std::nullopt;
  }
  for (const std::string& name : unset) {
    Warning(f.pos, f.path, "variable " + name + " is not set; using an empty string");
  }
  return std::move(r).value();
}

std::optional<bool> Ctx::Bool(const Field& f) {
  auto s = Scalar(f, "true or false");
  if (!s) return std::nullopt;
  if (*s == "true" || *s == "True" || *s == "TRUE") return true;
  if (*s == "false" || *s == "False" || *s == "FALSE") return false;
  static constexpr std::string_view kYaml11[] = {"y",   "Y",   "yes", "Yes", "YES", "n",  "N",
                                                 "no",  "No",  "NO",  "on",  "On",  "ON", "off",
                                                 "Off", "OFF"};
  if (std::find(std::begin(kYaml11), std::end(kYaml11), *s) != std::end(kYaml11)) {
    Error(f.pos, f.path,
          "\"" + *s + "\" is a YAML 1.1 boolean; Sandboxfiles are YAML 1.2: write true or false");
  } else {
    Error(f.pos, f.path, "expected true or false, got \"" + *s + "\"");
  }
  return std::nullopt;
}

std::optional<int64_t> Ctx::Int(const Field& f, int64_t min, int64_t max) {
  auto s = Scalar(f, "an integer");
  if (!s) return std::nullopt;
  auto v = ParseInteger(*s, min, max);
  if (!v.ok()) {
    Error(f.pos, f.path, v.error().message());
    return std::nullopt;
  }
  return *v;
}

std::optional<uint64_t> Ctx::Size(const Field& f, uint64_t plain_unit, uint64_t min, uint64_t max) {
  auto s = Scalar(f, "a size like 512M or 1G");
  if (!s) return std::nullopt;
  auto v = ParseSize(*s, plain_unit);
  if (!v.ok()) {
    Error(f.pos, f.path, v.error().message());
    return std::nullopt;
  }
  if (*v < min || *v > max) {
    std::string why = *v < min ? "at least " + FormatSize(min) : "at most " + FormatSize(max);
    std::string hint;
    if (plain_unit == 1 && *v < min && s->find_first_not_of("0123456789") == std::string::npos) {
      hint = " (a plain number counts bytes; did you mean " + *s + "M?)";
    }
    Error(f.pos, f.path, "expected " + why + ", got \"" + *s + "\"" + hint);
    return std::nullopt;
  }
  return *v;
}

std::optional<int64_t> Ctx::Duration(const Field& f, int64_t min_ms) {
  auto s = Scalar(f, "a duration like 5s");
  if (!s) return std::nullopt;
  auto v = ParseDuration(*s);
  if (!v.ok()) {
    Error(f.pos, f.path, v.error().message());
    return std::nullopt;
  }
  if (*v < min_ms) {
    Error(f.pos, f.path, "expected at least " + FormatDuration(min_ms) + ", got \"" + *s + "\"");
    return std::nullopt;
  }
  return *v;
}

std::optional<std::vector<std::string>> Ctx::StringList(const Field& f, const char* expected) {
  if (!f.value.IsNull() && !f.value.IsSequence()) {
    Error(f.pos, f.path, std::string("expected a list of ") + expected + ", got " + TypeName(f.value));
    return std::nullopt;
  }
  std::vector<std::string> out;
  bool ok = true;
  for (const Field& item : Items(f)) {
    auto s = Scalar(item, expected);
    if (s) out.push_back(std::move(*s));
    else ok = false;
  }
  if (!ok) return std::nullopt;
  return out;
}

std::optional<std::vector<std::string>> Ctx::Command(const Field& f, const std::string& shell) {
  constexpr const char* kExpected = "a command: a list of strings, or a string run by `shell -c`";
  if (f.value.IsScalar()) {
    auto s = Scalar(f, kExpected);
    if (!s) return std::nullopt;
    if (s->find_first_not_of(" \t\n") == std::string::npos) {
      Error(f.pos, f.path, "the command is empty");
      return std::nullopt;
    }
    return std::vector<std::string>{shell, "-c", *s};
  }
  if (!f.value.IsSequence()) {
    Error(f.pos, f.path, std::string("expected ") + kExpected + ", got " + TypeName(f.value));
    return std::nullopt;
  }
  auto list = StringList(f, "strings");
  if (!list) return std::nullopt;
  if (list->empty()) {
    Error(f.pos, f.path, "the command is empty");
    return std::nullopt;
  }
  return list;
}

bool Ctx::ExpectMap(const Field& f, const char* expected) {
  if (f.value.IsNull() || f.value.IsMap()) return true;
  Error(f.pos, f.path, std::string("expected ") + expected + ", got " + TypeName(f.value));
  return false;
}

}  // namespace msb::schema::internal
