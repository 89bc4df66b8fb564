// msb images / rmi / load / image prune: the references in the state store
// and the blobs and base disks in the image store ($MSB_HOME/images). A
// reference pins a manifest digest; blobs live while some reference or some
// sandbox (its image_digest) holds them. Not pulling (orchestrator/images.cc)
// and not the store's mechanics (image/image_store.h).
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <iostream>
#include <memory>
#include <set>

#include <nlohmann/json.hpp>

#include "common/io.h"
#include "image/image_archive.h"
#include "image/image_store.h"
#include "cli/cli.h"
#include "cli/json_output.h"
#include "orchestrator/store.h"
#include "schema/image_ref.h"
#include "schema/values.h"
#include "vm/spec.h"

namespace msb::cli {
namespace {

using orchestrator::ImageRecord;
using orchestrator::SandboxRecord;
using orchestrator::SnapshotRecord;
using orchestrator::Store;

std::string ShortDigest(const std::string& digest) {
  size_t colon = digest.find(':');
  std::string hex = colon == std::string::npos ? digest : digest.substr(colon + 1);
  return hex.substr(0, 12);
}

std::string Age(int64_t since) {
  if (since <= 0) return "-";
  int64_t d = static_cast<int64_t>(::time(nullptr)) - since;
  if (d < 0) d = 0;
  if (d < 60) return std::to_string(d) + "s ago";
  if (d < 3600) return std::to_string(d / 60) + "m ago";
  if (d < 86400) return std::to_string(d / 3600) + "h ago";
  return std::to_string(d / 86400) + "d ago";
}

std::string SandboxName(const SandboxRecord& s) {
  return s.project == Store::kRunProject ? s.name : s.project + "/" + s.name;
}

std::string Cwd() {
  char buf[4096];
  return ::getcwd(buf, sizeof buf) != nullptr ? buf : "/";
}

std::string Home() {
  const char* h = ::getenv("HOME");
  return h != nullptr ? h : "/";
}

// A reference as the user typed it -> the stored reference ("busybox" ->
// docker.io/library/busybox:latest), when one matches.
Result<std::optional<ImageRecord>> FindImage(Store& store, const std::string& text) {
  MSB_TRY(auto exact, store.GetImage(text));
  if (exact) return exact;
  auto parsed = schema::ParseImage(text, Cwd(), Home());
  if (!parsed.ok()) return std::optional<ImageRecord>();
  return store.GetImage(parsed->reference);
}

// Sandboxes that hold `image`: they name the reference, or they were built
// from its digest and no other reference keeps that digest.
std::vector<SandboxRecord> UsersOf(const ImageRecord& image, const std::vector<SandboxRecord>& sandboxes,
                                   const std::vector<ImageRecord>& images) {
  bool digest_shared = std::any_of(images.begin(), images.end(), [&](const ImageRecord& o) {
    return o.reference != image.reference && o.digest == image.digest;
  });
  std::vector<SandboxRecord> out;
  for (const auto& s : sandboxes) {
    if (s.image_ref == image.reference || (!digest_shared && !image.digest.empty() && s.image_digest == image.digest)) {
      out.push_back(s);
    }
  }
  return out;
}

// Snapshots whose chain sits on `image` (on its digest or its base disk), by
// name, sorted; none when another reference keeps the digest.
std::vector<std::string> SnapshotsOn(const ImageRecord& image, const std::vector<SnapshotRecord>& snapshots,
                                     const std::vector<ImageRecord>& images) {
  bool digest_shared = std::any_of(images.begin(), images.end(), [&](const ImageRecord& o) {
    return o.reference != image.reference && o.digest == image.digest;
  });
  std::vector<std::string> out;
  if (digest_shared || image.digest.empty()) return out;
  const std::string hex = image.digest.size() > 7 ? image.digest.substr(7) : "";
  for (const auto& s : snapshots) {
    bool on = s.parent_digest == image.digest || (!image.base_disk.empty() && s.base_disk == image.base_disk) ||
              std::filesystem::path(s.base_disk).stem().string() == hex;
    if (on) out.push_back(s.name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Every digest that must stay: those of references and of sandboxes.
Result<std::set<std::string>> KeepRoots(Store& store) {
  std::set<std::string> keep;
  MSB_TRY(auto images, store.ListImages());
  for (const auto& i : images) keep.insert(i.digest);
  MSB_TRY(auto sandboxes, store.ListAllSandboxes());
  auto keep_disk = [&](const std::string& path) {
    std::string stem = std::filesystem::path(path).stem().string();
    if (stem.size() == 64) keep.insert("sha256:" + stem);
  };
  for (const auto& s : sandboxes) {
    keep.insert(s.image_digest);
    // Its base disk by name too: a local directory's disk is keyed apart
    // from the digest (storage/disk.h), so the digest alone would not keep it.
    if (auto spec = vm::ReadSpec(s.sandbox_dir); spec.ok()) keep_disk(spec->base_disk);
  }
  // A snapshot holds the image its chain sits on (each parent is held in
  // turn), and its base disk by name.
  MSB_TRY(auto snapshots, store.ListSnapshots());
  for (const auto& s : snapshots) {
    keep.insert(s.parent_digest);
    keep_disk(s.base_disk);
  }
  keep.erase("");
  return keep;
}

struct Stores {
  Store state;
  image::ImageStore images;
};

Result<Stores> OpenStores() {
  MSB_TRY(Store state, Store::Open(Store::DefaultPath()));
  MSB_TRY(image::ImageStore images, image::ImageStore::Open(image::DefaultImageRoot()));
  return Stores{std::move(state), std::move(images)};
}

int Images(bool json_out) {
  auto st = OpenStores();
  if (!st.ok()) return Fail(st.error().message());
  auto images = st->state.ListImages();
  if (!images.ok()) return Fail(images.error().message());
  auto sandboxes = st->state.ListAllSandboxes();
  if (!sandboxes.ok()) return Fail(sandboxes.error().message());
  nlohmann::json arr = nlohmann::json::array();
  std::vector<std::vector<std::string>> rows = {{"REFERENCE", "DIGEST", "SIZE", "CREATED", "IN USE"}};
  for (const auto& i : *images) {
    auto users = UsersOf(i, *sandboxes, *images);
    std::string by;
    for (const auto& u : users) by += (by.empty() ? "" : ", ") + SandboxName(u);
    arr.push_back(ImageJson(i, users));
    rows.push_back({i.reference, ShortDigest(i.digest), schema::FormatSize(static_cast<uint64_t>(i.size_bytes)),
                    Age(i.created_at), by.empty() ? "-" : by});
  }
  if (json_out) {
    std::cout << JsonText(arr);
    return 0;
  }
  PrintTable(rows);
  return 0;
}

std::string Freed(const image::PruneReport& r) {
  return std::to_string(r.blobs.size()) + " blob(s), " + std::to_string(r.partials.size()) +
         " partial download(s), " + std::to_string(r.disks.size()) + " base disk(s); " +
         schema::FormatSize(r.bytes) + " freed";
}

int Rmi(const std::vector<std::string>& refs) {
  auto st = OpenStores();
  if (!st.ok()) return Fail(st.error().message());
  Store& state = st->state;
  int rc = 0;
  for (const std::string& text : refs) {
    auto found = FindImage(state, text);
    if (!found.ok()) return Fail(found.error().message());
    if (!found->has_value()) {
      rc = Fail("no image " + text + " (see msb images)");
      continue;
    }
    const ImageRecord image = **found;
    auto gc = st->images.LockForGc();
    if (!gc.ok()) return Fail(gc.error().message());
    auto images = state.ListImages();
    auto sandboxes = state.ListAllSandboxes();
    if (!images.ok()) return Fail(images.error().message());
    if (!sandboxes.ok()) return Fail(sandboxes.error().message());
    auto users = UsersOf(image, *sandboxes, *images);
    if (!users.empty()) {
      std::string names, rm;
      for (const auto& u : users) {
        names += (names.empty() ? "" : ", ") + SandboxName(u) + " (" + orchestrator::ToString(u.status) + ")";
        rm += " " + (u.project == Store::kRunProject ? u.name : u.name + " -p " + u.project);
      }
      rc = Fail("image " + image.reference + " is used by sandbox " + names + "; remove " +
                (users.size() > 1 ? "them" : "it") + " first (msb rm" + rm + ", or msb down for a project)");
      continue;
    }
    // A snapshot sits on the image's base disk (its whole chain does) and
    // keeps it; untagging it would leave a disk nothing names.
    auto snapshots = state.ListSnapshots();
    if (!snapshots.ok()) return Fail(snapshots.error().message());
    auto on = SnapshotsOn(image, *snapshots, *images);
    if (!on.empty()) {
      std::string names;
      for (const auto& n : on) names += (names.empty() ? "" : ", ") + n;
      rc = Fail("image " + image.reference + " is the base of snapshot " + names + "; remove " +
                (on.size() > 1 ? "them" : "it") + " first (msb snapshot rm " + names.substr(0, names.find(',')) +
                (on.size() > 1 ? " ..." : "") + "), or keep the image");
      continue;
    }
    if (auto d = state.DeleteImage(image.reference); !d.ok()) {
      rc = Fail(d.error().message());
      continue;
    }
    std::cout << "Untagged " << image.reference << std::endl;
    auto keep = KeepRoots(state);
    if (!keep.ok()) return Fail(keep.error().message());
    auto report = st->images.RemoveImage(image.digest, *keep, *gc);
    if (!report.ok()) {
      rc = Fail("removing the blobs of " + image.reference + ": " + report.error().message() +
                " (msb image prune removes them later)");
      continue;
    }
    // A base disk recorded outside the store's own folders, once nobody has its digest.
    if (!image.base_disk.empty() && !keep->count(image.digest) &&
        image.base_disk.rfind(st->images.root() + "/", 0) == 0 && ::unlink(image.base_disk.c_str()) == 0) {
      report->disks.push_back(image.base_disk);
    }
    if (!report->blobs.empty() || !report->disks.empty()) {
      std::cout << "Deleted " << ShortDigest(image.digest) << ": " << Freed(*report) << std::endl;
    }
  }
  return rc;
}

int Prune(bool dry_run) {
  auto st = OpenStores();
  if (!st.ok()) return Fail(st.error().message());
  auto gc = st->images.LockForGc();
  if (!gc.ok()) return Fail(gc.error().message());
  auto keep = KeepRoots(st->state);
  if (!keep.ok()) return Fail(keep.error().message());
  auto report = st->images.Prune(*keep, *gc, dry_run);
  if (!report.ok()) return Fail(report.error().message());
  std::cout << (dry_run ? "Would delete " : "Deleted ") << Freed(*report) << std::endl;
  return 0;
}

// The references an archive's image is recorded under.
std::vector<std::string> ReferencesFor(const image::LoadedImage& img, const std::string& file, size_t index,
                                       size_t unnamed_total) {
  std::vector<std::string> out;
  std::string kind = image::ToString(img.format);
  for (const auto& name : img.names) {
    // A bare OCI tag ("v1") names the image only inside this archive.
    bool full = img.format == image::ArchiveFormat::kDockerArchive || name.find_first_of("/:@") != std::string::npos;
    if (full) {
      auto parsed = schema::ParseImage(name, Cwd(), Home());
      if (parsed.ok() && parsed->kind == schema::Image::Kind::kRegistry) {
        out.push_back(parsed->reference);
        continue;
      }
    }
    out.push_back(kind + ":" + file + ":" + name);
  }
  if (out.empty()) out.push_back(kind + ":" + file + (unnamed_total > 1 ? "#" + std::to_string(index) : ""));
  return out;
}

int Load(const std::string& file_arg, const std::vector<std::string>& tags) {
  std::string file = file_arg;
  if (file.empty() || file[0] != '/') file = Cwd() + "/" + file;
  std::vector<std::string> extra;
  for (const auto& t : tags) {
    auto parsed = schema::ParseImage(t, Cwd(), Home());
    if (!parsed.ok() || parsed->kind != schema::Image::Kind::kRegistry) {
      return Fail("load: --tag " + t + " is not an image reference like name:tag");
    }
    extra.push_back(parsed->reference);
  }
  auto st = OpenStores();
  if (!st.ok()) return Fail(st.error().message());
  auto import = st->images.LockForImport();
  if (!import.ok()) return Fail(import.error().message());
  auto loaded = image::LoadImageArchive(file, st->images);
  if (!loaded.ok()) return Fail("load: " + loaded.error().message());
  if (!tags.empty() && loaded->size() != 1) {
    return Fail("load: --tag names one image, but " + file + " holds " + std::to_string(loaded->size()));
  }
  size_t unnamed = static_cast<size_t>(std::count_if(loaded->begin(), loaded->end(),
                                                     [](const image::LoadedImage& i) { return i.names.empty(); }));
  std::vector<std::pair<std::string, const image::LoadedImage*>> records;
  for (size_t k = 0; k < loaded->size(); ++k) {
    const auto& img = (*loaded)[k];
    for (auto& r : ReferencesFor(img, file, k, unnamed)) records.emplace_back(std::move(r), &img);
    for (const auto& r : extra) records.emplace_back(r, &img);
  }
  Status saved = st->state.Transaction([&]() -> Status {
    for (const auto& [ref, img] : records) {
      ImageRecord rec;
      rec.reference = ref;
      rec.digest = img->manifest_digest;
      rec.size_bytes = img->size_bytes;
      rec.config_digest = img->config_digest;
      rec.media_type = img->media_type;
      MSB_TRY(auto old, st->state.GetImage(ref));
      if (old && old->digest == rec.digest) {
        rec.base_disk = old->base_disk;  // same image: its disk stays valid
        rec.created_at = old->created_at;
      }
      MSB_TRY_STATUS(st->state.UpsertImage(rec));
    }
    return OkStatus();
  });
  if (!saved.ok()) return Fail("load: " + saved.error().message());
  for (const auto& [ref, img] : records) {
    std::cout << "Loaded image " << ref << " (" << img->manifest_digest << ")" << std::endl;
  }
  return 0;
}

}  // namespace

void RegisterImageCommands(CLI::App& app) {
  auto add_ls = [](CLI::App* parent, const char* name) {
    auto json_out = std::make_shared<bool>(false);
    auto* cmd = parent->add_subcommand(name, "List image references, their pinned digests and the sandboxes using them");
    AddJsonFlags(cmd, json_out.get());
    OnRun(cmd, [json_out]() { return Images(*json_out); });
  };
  auto add_rm = [](CLI::App* parent, const char* name) {
    auto refs = std::make_shared<std::vector<std::string>>();
    auto* cmd = parent->add_subcommand(name, "Remove image references and the blobs only they held (refused while a "
                                             "sandbox uses one)");
    cmd->add_option("references", *refs, "image references (as msb images lists them, or as written)")->required();
    OnRun(cmd, [refs]() { return Rmi(*refs); });
  };
  auto add_load = [](CLI::App* parent, const char* name) {
    struct LoadArgs {
      std::string file;
      std::vector<std::string> tags;
    };
    auto a = std::make_shared<LoadArgs>();
    auto* cmd = parent->add_subcommand(name, "Load images from a docker-archive or oci-archive tar file");
    cmd->add_option("file", a->file, "the archive (docker save, skopeo docker-archive: or oci-archive:)")->required();
    cmd->add_option("-t,--tag", a->tags, "also record the (single) image under this reference")
        ->allow_extra_args(false);
    OnRun(cmd, [a]() { return Load(a->file, a->tags); });
  };
  add_ls(&app, "images");
  add_rm(&app, "rmi");
  add_load(&app, "load");

  auto* image = app.add_subcommand("image", "Manage images: ls, rm, load, prune");
  image->require_subcommand(1);
  add_ls(image, "ls");
  add_rm(image, "rm");
  add_load(image, "load");
  auto dry = std::make_shared<bool>(false);
  auto* prune = image->add_subcommand(
      "prune", "Remove blobs, partial downloads and base disks that no image reference or sandbox uses");
  prune->add_flag("--dry-run", *dry, "only say what would be removed");
  OnRun(prune, [dry]() { return Prune(*dry); });
}

}  // namespace msb::cli
