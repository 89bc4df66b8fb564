// Internal to schema/: the YAML walk that turns a parsed document into the
// model, recording a diagnostic (with position and key path) for every
// problem instead of stopping at the first. Not a public header.
#pragma once

#include <yaml-cpp/yaml.h>

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "schema/diagnostics.h"
#include "schema/interpolate.h"
#include "schema/keys.h"
#include "schema/model.h"

namespace msb::schema::internal {

// A key of a map as the schema saw it: present or not, where it is.
struct Field {
  bool present = false;
  YAML::Node key;
  YAML::Node value;
  std::string path;  // "sandboxes.web.memory"
  Pos pos;           // the value's position, else the key's
};

// Where a value that a cross-field rule needs came from.
struct PortUse {
  std::string sandbox;
  std::string path;
  Pos pos;
  PortMapping port;
};
struct VolumeUse {
  std::string path;
  Pos pos;
  std::string name;
  bool read_only = false;
};
struct DependencyUse {
  std::string from;
  std::string to;
  std::string path;
  Pos pos;
  DependCondition condition;
};

// Everything a walk needs; one per parse, on the parsing thread.
class Ctx {
 public:
  Ctx(std::string file, std::string base_dir, const Env& env,
      std::function<bool(const std::string&)> path_exists, Diagnostics* diags);

  const std::string& base_dir() const { return base_dir_; }
  const std::string& home() const { return home_; }
  const std::function<bool(const std::string&)>& path_exists() const { return path_exists_; }

  void Error(Pos pos, const std::string& path, std::string message);
  void Warning(Pos pos, const std::string& path, std::string message);

  // Reads a map's keys against the table keys: unknown keys (with a
  // suggestion), duplicate keys and non-string keys are errors; "<<" merge
  // keys are followed; keys starting with "x-" are skipped when extensions.
  // Returns one Field per entry of keys. A null node is an empty map.
  std::vector<Field> ReadMap(const YAML::Node& node, const std::string& path, Pos at,
                             const std::vector<std::string_view>& keys, bool extensions = false);
  // The same against a table of keys.h.
  template <size_t N>
  std::vector<Field> ReadMap(const YAML::Node& node, const std::string& path, Pos at, const Key (&keys)[N],
                             bool extensions = false) {
    std::vector<std::string_view> names;
    for (const Key& k : keys) names.push_back(k.name);
    return ReadMap(node, path, at, names, extensions);
  }
  // Every entry of a map whose keys are free-form (sandbox names, env names).
  std::vector<Field> Entries(const YAML::Node& node, const std::string& path, Pos at);
  // Items of a sequence; path gets "[i]". A null node is an empty list.
  std::vector<Field> Items(const Field& f);

  // The interpolated text of a scalar; records an error and returns nullopt
  // for other node types or bad substitutions. expected says what was wanted.
  // Between BeginVerbatim and EndVerbatim the text is taken as written ($ and
  // all), for `scripts`.
  std::optional<std::string> Scalar(const Field& f, const char* expected);
  void BeginVerbatim() { verbatim_ = true; }
  void EndVerbatim() { verbatim_ = false; }
  std::optional<bool> Bool(const Field& f);
  std::optional<int64_t> Int(const Field& f, int64_t min, int64_t max);
  std::optional<uint64_t> Size(const Field& f, uint64_t plain_unit, uint64_t min, uint64_t max);
  std::optional<int64_t> Duration(const Field& f, int64_t min_ms);
  // The same with the bounds of a key's Value (keys.h).
  std::optional<int64_t> Int(const Field& f, const Value& v) { return Int(f, v.min, v.max); }
  std::optional<uint64_t> Size(const Field& f, const Value& v) {
    return Size(f, v.unit, static_cast<uint64_t>(v.min), static_cast<uint64_t>(v.max));
  }
  std::optional<int64_t> Duration(const Field& f, const Value& v) { return Duration(f, v.min); }
  // A list of strings (a lone string is refused).
  std::optional<std::vector<std::string>> StringList(const Field& f, const char* expected);
  // A command: a non-empty list of strings, or a string run by `shell -c`.
  std::optional<std::vector<std::string>> Command(const Field& f, const std::string& shell);
  // Whether the node is a map (null counts as an empty one); records an error if not.
  bool ExpectMap(const Field& f, const char* expected);

  // Recorded by LoadSandbox for CheckProject.
  std::vector<PortUse> ports;
  std::vector<VolumeUse> volume_uses;
  std::vector<DependencyUse> dependencies;

 private:
  std::string file_;
  std::string base_dir_;
  const Env& env_;
  std::string home_;
  std::function<bool(const std::string&)> path_exists_;
  Diagnostics* diags_;
  bool verbatim_ = false;
};

Pos PosOf(const YAML::Node& node);
Field MakeField(const YAML::Node& key, const YAML::Node& value, std::string path);
const char* TypeName(const YAML::Node& node);

// sandbox.cc: one sandbox entry; returns nullopt only when it is not a map.
std::optional<Sandbox> LoadSandbox(Ctx& ctx, const Field& f, const std::string& name);

// security.cc: a sandbox's `security` map, its level expanded; strict also
// sets sb->network.policy, so it runs before the network is loaded.
void LoadSecurity(Ctx& ctx, const Field& f, Sandbox* sb);

// sandbox.cc: informational `meta` (top level or per sandbox).
Meta LoadMeta(Ctx& ctx, const Field& f);

// checks.cc: the rules that span fields and sandboxes (dependencies and
// their cycles, published ports, declared volumes, bind sources).
void CheckProject(Ctx& ctx, const Project& project);

}  // namespace msb::schema::internal
