#include "orchestrator/images.h"

#include <set>

#include "common/io.h"
#include "fs/disk.h"

namespace msb::orchestrator {
namespace {

Result<ResolvedImage> EnsureLocalDir(const schema::Image& image, const ImageOptions& options) {
  ResolvedImage r;
  r.reference = image.reference;
  MSB_TRY(fs::TreeSummary sum, fs::HashTree(image.path));
  r.digest = "sha256:" + sum.sha256;
  if (options.fetch) {
    MSB_TRY(r.base_disk, fs::BuildBaseDiskFromDir(image.path, MsbHome() + "/images/local"));
  }
  return r;
}

}  // namespace

Result<ResolvedImage> EnsureImage(Store& store, const schema::Image& image,
                                  const ImageOptions& options) {
  switch (image.kind) {
    case schema::Image::Kind::kLocalDir:
      return EnsureLocalDir(image, options);
    default:
      break;
  }
  return Error(ErrorCode::kUnavailable,
               "image " + image.reference + ": " + schema::ToString(image.kind) +
                   " images cannot be run yet");
}

Result<std::map<std::string, ResolvedImage>> ResolveImages(Store& store,
                                                           const schema::Project& project,
                                                           const ImageOptions& options) {
  std::map<std::string, ResolvedImage> out;
  std::map<std::string, ResolvedImage> by_reference;  // each distinct image once
  for (const auto& [name, sb] : project.sandboxes) {
    auto it = by_reference.find(sb.image.reference);
    if (it == by_reference.end()) {
      auto r = EnsureImage(store, sb.image, options);
      if (!r.ok()) return r.error().Wrap("sandbox " + name + ": image " + sb.image.reference);
      it = by_reference.emplace(sb.image.reference, std::move(*r)).first;
    }
    out[name] = it->second;
  }
  return out;
}

std::map<std::string, std::string> DigestsOf(const std::map<std::string, ResolvedImage>& images) {
  std::map<std::string, std::string> d;
  for (const auto& [name, r] : images) d[name] = r.digest;
  return d;
}

void ApplyImageDefaults(const ImageDefaults& defaults, bool command_given,
                        agent::BootConfig& boot) {
  std::vector<std::string> argv = defaults.entrypoint;
  if (command_given) {
    argv.insert(argv.end(), boot.command.begin(), boot.command.end());
  } else {
    argv.insert(argv.end(), defaults.cmd.begin(), defaults.cmd.end());
  }
  boot.command = std::move(argv);
  // The image's variables first, each overridden by a sandbox variable of
  // the same name.
  std::set<std::string> own;
  for (const auto& e : boot.env) own.insert(e.substr(0, e.find('=')));
  std::vector<std::string> env;
  for (const auto& e : defaults.env) {
    if (!own.count(e.substr(0, e.find('=')))) env.push_back(e);
  }
  env.insert(env.end(), boot.env.begin(), boot.env.end());
  boot.env = std::move(env);
  if (boot.workdir.empty()) boot.workdir = defaults.workdir;
  if (boot.user.empty()) boot.user = defaults.user;
}

std::vector<std::string> RunArgv(const ImageDefaults& defaults,
                                 const std::vector<std::string>& command) {
  std::vector<std::string> argv = defaults.entrypoint;
  const auto& rest = command.empty() ? defaults.cmd : command;
  argv.insert(argv.end(), rest.begin(), rest.end());
  return argv;
}

}  // namespace msb::orchestrator
