// The top level of a Sandboxfile and finding and reading one from disk
// (sandboxfile.h). The per-sandbox keys are in sandbox.cc, the cross-field
// rules in checks.cc, the canonical form in canonical.cc.
#include "schema/sandboxfile.h"

#include <sys/stat.h>
#include <unistd.h>

#include <yaml-cpp/yaml.h>

#include "common/io.h"
#include "schema/loader.h"
#include "schema/values.h"

namespace msb::schema {
namespace {

using internal::Ctx;
using internal::Field;

using internal::KeyIndex;
using internal::kTopKeys;
using internal::kVolumeKeys;
constexpr size_t kName = KeyIndex(kTopKeys, "name");
constexpr size_t kSandboxes = KeyIndex(kTopKeys, "sandboxes");
constexpr size_t kVolumes = KeyIndex(kTopKeys, "volumes");
constexpr size_t kMeta = KeyIndex(kTopKeys, "meta");
constexpr size_t kBuilds = KeyIndex(kTopKeys, "builds");
constexpr size_t kModules = KeyIndex(kTopKeys, "modules");

std::string CurrentDir() {
  char buf[4096];
  if (::getcwd(buf, sizeof buf) == nullptr) return "/";
  return buf;
}

std::string AbsolutePath(const std::string& path) {
  auto abs = ResolveHostPath(path, CurrentDir(), "");
  return abs.ok() ? *abs : path;
}

std::string DirName(const std::string& abs) {
  size_t slash = abs.rfind('/');
  if (slash == std::string::npos || slash == 0) return "/";
  return abs.substr(0, slash);
}

std::string BaseName(const std::string& abs) {
  size_t slash = abs.rfind('/');
  return slash == std::string::npos ? abs : abs.substr(slash + 1);
}

bool IsDirectory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// Lines of text: calls fn(line, 1-based number) until it returns false.
template <typename F>
void ForEachLine(std::string_view text, F&& fn) {
  int number = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    std::string_view line = text.substr(pos, nl == std::string_view::npos ? nl : nl - pos);
    pos = nl == std::string_view::npos ? text.size() : nl + 1;
    if (!fn(line, ++number)) return;
  }
}

bool IsMarker(std::string_view line, std::string_view marker) {
  return line.substr(0, 3) == marker &&
         (line.size() == 3 || line[3] == ' ' || line[3] == '\t' || line[3] == '\r');
}

// Whether a line holds YAML content (not blank, not a comment).
bool IsContent(std::string_view line) {
  size_t i = line.find_first_not_of(" \t\r");
  return i != std::string_view::npos && line[i] != '#';
}

bool HasContent(std::string_view text) {
  bool found = false;
  ForEachLine(text, [&](std::string_view line, int) {
    found = IsContent(line) && !IsMarker(line, "---") && !IsMarker(line, "...");
    return !found;
  });
  return found;
}

// Where a second document starts: a "---" line after content, or content
// after a "..." line. Document markers are only ever at column 1.
Pos SecondDocument(std::string_view text) {
  bool content = false, ended = false;
  Pos at;
  ForEachLine(text, [&](std::string_view line, int number) {
    if (IsMarker(line, "---")) {
      if (content || ended) {
        at = Pos{number, 1};
        return false;
      }
      content = IsContent(line.substr(3));
      return true;
    }
    if (IsMarker(line, "...")) {
      ended = content || ended;
      return true;
    }
    if (line.substr(0, 1) == "%" && !content) return true;  // a directive
    if (IsContent(line)) {
      if (ended) {
        at = Pos{number, 1};
        return false;
      }
      content = true;
    }
    return true;
  });
  return at;
}

void LoadProject(Ctx& ctx, const YAML::Node& root, Project* project) {
  Field top = internal::MakeField(root, root, "");
  std::vector<Field> k = ctx.ReadMap(root, "", top.pos, kTopKeys, /*extensions=*/true);

  project->name = NameFromDirectory(BaseName(project->base_dir));
  if (k[kName].present) {
    if (auto s = ctx.Scalar(k[kName], "a project name")) {
      if (IsValidName(*s)) {
        project->name = *s;
        project->name_from_file = true;
      }
      else ctx.Error(k[kName].pos, k[kName].path, "invalid project name \"" + *s + "\": use " + kNameRule);
    }
  }
  if (k[kBuilds].present) {
    ctx.Error(internal::PosOf(k[kBuilds].key), "builds",
              "builds are not supported: msb runs sandboxes from images; build the root file "
              "system elsewhere and refer to it with image:");
  }
  if (k[kModules].present) {
    ctx.Error(internal::PosOf(k[kModules].key), "modules",
              "modules are not supported: declare every sandbox in this file");
  }
  if (k[kMeta].present) project->meta = internal::LoadMeta(ctx, k[kMeta]);

  if (k[kVolumes].present) {
    for (const Field& e : ctx.Entries(k[kVolumes].value, k[kVolumes].path, k[kVolumes].pos)) {
      const std::string& name = e.key.Scalar();
      if (!IsValidName(name)) {
        ctx.Error(internal::PosOf(e.key), e.path, "invalid volume name \"" + name + "\": use " + kNameRule);
        continue;
      }
      Volume v;
      v.pos = internal::PosOf(e.key);
      if (!ctx.ExpectMap(e, "a map with size")) continue;
      std::vector<Field> f = ctx.ReadMap(e.value, e.path, e.pos, kVolumeKeys);
      if (f[0].present) {
        if (auto size = ctx.Size(f[0], kVolumeKeys[0].value)) v.size = *size;
      }
      project->volumes[name] = v;
    }
  }

  // Optional, as in microsandbox's format: a file without it declares no sandboxes.
  if (k[kSandboxes].present) {
    for (const Field& e : ctx.Entries(k[kSandboxes].value, k[kSandboxes].path, k[kSandboxes].pos)) {
      const std::string& name = e.key.Scalar();
      if (!IsValidName(name)) {
        ctx.Error(internal::PosOf(e.key), e.path, "invalid sandbox name \"" + name + "\": use " + kNameRule);
      }
      if (auto sb = internal::LoadSandbox(ctx, e, name)) project->sandboxes[name] = std::move(*sb);
    }
  }
  internal::CheckProject(ctx, *project);
}

}  // namespace

Result<Project> ParseSandboxfile(std::string_view yaml, const std::string& path, const Env& env,
                                 const ParseOptions& options) {
  Diagnostics local;
  Diagnostics* diags = options.diagnostics ? options.diagnostics : &local;
  const size_t errors_before = diags->ErrorCount();
  const std::string display = options.display_name.empty() ? path : options.display_name;

  Project project;
  project.source_path = AbsolutePath(path);
  project.base_dir = DirName(project.source_path);
  Ctx ctx(display, project.base_dir, env, options.path_exists, diags);

  // YAML::Load reads the first document only. (YAML::LoadAll would find a
  // second one, but loops forever on a stray ',' in yaml-cpp 0.7.)
  YAML::Node root;
  bool parsed = false;
  try {
    root = YAML::Load(std::string(yaml));
    parsed = true;
  } catch (const YAML::Exception& e) {
    Pos pos = e.mark.is_null() ? Pos{} : Pos{e.mark.line + 1, e.mark.column + 1};
    ctx.Error(pos, "", "invalid YAML: " + e.msg);
  }
  if (parsed) {
    Pos second = SecondDocument(yaml);
    if (second.line > 0) {
      ctx.Error(second, "", "only one YAML document is allowed (found a second after ---)");
    } else if (root.IsNull()) {
      if (HasContent(yaml)) ctx.Error(Pos{1, 1}, "", "expected a map with a sandboxes: key at the top, got nothing");
      else ctx.Error(Pos{1, 1}, "", "the file is empty: expected a map with a sandboxes: key");
    } else if (!root.IsMap()) {
      ctx.Error(internal::PosOf(root), "",
                std::string("expected a map with a sandboxes: key at the top, got ") + internal::TypeName(root));
    } else {
      LoadProject(ctx, root, &project);
    }
  }
  diags->Sort();
  if (diags->ErrorCount() > errors_before) {
    std::string text = diags->ToString();
    if (!text.empty()) text.pop_back();
    return Error(ErrorCode::kInvalidArgument, std::move(text));
  }
  return project;
}

Result<std::string> FindSandboxfile(const LoadOptions& options) {
  std::string dir = options.dir;
  if (!options.file.empty()) {
    if (!IsDirectory(options.file)) {
      if (!Exists(options.file)) return Error(ErrorCode::kNotFound, "no such file: " + options.file);
      return options.file;
    }
    dir = options.file;
  }
  for (const char* name : kDefaultFileNames) {
    std::string candidate = dir.empty() ? std::string(name) : dir + "/" + name;
    if (Exists(candidate) && !IsDirectory(candidate)) return candidate;
  }
  return Error(ErrorCode::kNotFound, std::string("no ") + kDefaultFileNames[0] + " or " +
                                         kDefaultFileNames[1] + " in " +
                                         AbsolutePath(dir.empty() ? "." : dir) + " (use -f FILE)");
}

Result<Project> LoadSandboxfile(const LoadOptions& options) {
  MSB_TRY(std::string path, FindSandboxfile(options));
  MSB_TRY(std::string text, ReadFile(path));
  Diagnostics local;
  Diagnostics* diags = options.diagnostics ? options.diagnostics : &local;
  const size_t errors_before = diags->ErrorCount();
  Env env;
  if (options.env) {
    env = *options.env;
  } else {
    size_t slash = path.rfind('/');
    std::string dotenv = (slash == std::string::npos ? std::string() : path.substr(0, slash + 1)) + ".env";
    if (Exists(dotenv)) {
      MSB_TRY(std::string env_text, ReadFile(dotenv));
      env = ParseDotEnv(env_text, dotenv, diags);
    }
    for (auto& [key, value] : ProcessEnv()) env[key] = value;  // the environment wins
  }
  ParseOptions parse;
  parse.display_name = path;
  parse.path_exists = Exists;
  parse.diagnostics = diags;
  auto project = ParseSandboxfile(text, path, env, parse);
  if (project.ok() && diags->ErrorCount() > errors_before) {
    std::string all = diags->ToString();
    if (!all.empty()) all.pop_back();
    return Error(ErrorCode::kInvalidArgument, std::move(all));
  }
  return project;
}

}  // namespace msb::schema
