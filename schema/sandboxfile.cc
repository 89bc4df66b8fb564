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

enum TopKey : size_t { kName, kSandboxes, kVolumes, kMeta, kBuilds, kModules };
const std::vector<std::string_view> kTopKeys = {"name", "sandboxes", "volumes", "meta", "builds",
                                                "modules"};
const std::vector<std::string_view> kVolumeKeys = {"size"};
constexpr uint64_t kMinVolume = 16 * kMiB;
constexpr uint64_t kMaxVolume = 16 * 1024 * kGiB;

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

void LoadProject(Ctx& ctx, const YAML::Node& root, Project* project) {
  Field top = internal::MakeField(root, root, "");
  std::vector<Field> k = ctx.ReadMap(root, "", top.pos, kTopKeys, /*extensions=*/true);

  project->name = NameFromDirectory(BaseName(project->base_dir));
  if (k[kName].present) {
    if (auto s = ctx.Scalar(k[kName], "a project name")) {
      if (IsValidName(*s)) project->name = *s;
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
        if (auto size = ctx.Size(f[0], 1, kMinVolume, kMaxVolume)) v.size = *size;
      }
      project->volumes[name] = v;
    }
  }

  if (!k[kSandboxes].present) {
    ctx.Error(top.pos, "", "missing required key \"sandboxes\" (a map of sandbox names to their settings)");
  } else {
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

  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(std::string(yaml));
  } catch (const YAML::Exception& e) {
    Pos pos = e.mark.is_null() ? Pos{} : Pos{e.mark.line + 1, e.mark.column + 1};
    ctx.Error(pos, "", "invalid YAML: " + e.msg);
  }
  if (diags->ErrorCount() == errors_before) {
    if (docs.empty() || docs[0].IsNull()) {
      ctx.Error(Pos{1, 1}, "", "the file is empty: expected a map with a sandboxes: key");
    } else if (docs.size() > 1) {
      ctx.Error(internal::PosOf(docs[1]), "", "only one YAML document is allowed (found a second after ---)");
    } else if (!docs[0].IsMap()) {
      ctx.Error(internal::PosOf(docs[0]), "",
                std::string("expected a map with a sandboxes: key at the top, got ") + internal::TypeName(docs[0]));
    } else {
      LoadProject(ctx, docs[0], &project);
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
