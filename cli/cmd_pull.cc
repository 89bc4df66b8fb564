// msb pull: fetch (or import) images and build their base disks ahead of use,
// refreshing a pinned tag.
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "cli/cli.h"
#include "orchestrator/images.h"
#include "schema/image_ref.h"

namespace msb::cli {
namespace {

struct PullArgs {
  std::vector<std::string> references;
  bool quiet = false;
  bool no_unpack = false;
  RegistryFlags registry;
};

int Pull(const PullArgs& a) {
  auto store = orchestrator::Store::Open(orchestrator::Store::DefaultPath());
  if (!store.ok()) return Fail(store.error().message());
  std::string home = std::getenv("HOME") ? std::getenv("HOME") : "";
  std::string cwd = std::filesystem::current_path().string();
  int rc = 0;
  for (const auto& text : a.references) {
    auto image = schema::ParseImage(text, cwd, home);
    if (!image.ok()) {
      rc = Fail("image " + text + ": " + image.error().message());
      continue;
    }
    orchestrator::ImageOptions io;
    io.refresh = true;
    io.unpack = !a.no_unpack;
    io.quiet = a.quiet;
    io.insecure_registries = a.registry.insecure;
    io.registry_cas = a.registry.cas;
    auto r = orchestrator::EnsureImage(*store, *image, io);
    if (!r.ok()) {
      rc = Fail("image " + text + ": " + r.error().message());
      continue;
    }
    std::cout << r->reference << " " << r->digest << "\n";
  }
  return rc;
}

}  // namespace

void RegisterPullCommand(CLI::App& app) {
  auto a = std::make_shared<PullArgs>();
  auto* cmd = app.add_subcommand("pull", "Fetch images (registry, oci-layout:, ./dir) and build their base disks");
  cmd->add_option("reference", a->references, "image references")->required();
  cmd->add_flag("-q,--quiet", a->quiet, "no progress output");
  cmd->add_flag("--no-unpack", a->no_unpack, "fetch only; build the base disk at first use");
  AddRegistryFlags(cmd, &a->registry);
  OnRun(cmd, [a]() { return Pull(*a); });
}

}  // namespace msb::cli
