// msb export kubernetes: the Sandboxfile as Kubernetes objects
// (orchestrator/kube_export.h decides them). This file parses flags, prints
// the warnings and writes the YAML: one stream to stdout, or one file per
// object into a directory that appears whole or not at all.
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>

#include "cli/cli.h"
#include "common/fd.h"
#include "common/io.h"
#include "orchestrator/kube_export.h"

namespace msb::cli {
namespace {

namespace fs = std::filesystem;

struct ExportFlags {
  ProjectFlags project;
  std::string output = "-";
  std::string runtime_class = orchestrator::kDefaultRuntimeClass;
  std::string name_space;
  std::string publish_as = "clusterip";
  std::string fqdn_policy = "comment";
  bool allow_host_path = false;
};

// Whether dir holds only what an export writes: regular *.yaml files.
bool HoldsOnlyExport(const fs::path& dir, std::string* offender) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    std::string name = entry.path().filename().string();
    if (!entry.is_regular_file() || name.size() < 6 || name.substr(name.size() - 5) != ".yaml") {
      *offender = entry.path().string();
      return false;
    }
  }
  if (ec) {
    *offender = dir.string() + " (" + ec.message() + ")";
    return false;
  }
  return true;
}

Status WriteFile(const fs::path& path, const std::string& text) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666 & ~UserUmask()));
  if (!fd) return Error::FromErrno("creating " + path.string());
  if (::fchmod(fd.get(), 0666 & ~UserUmask()) != 0) return Error::FromErrno("setting the mode of " + path.string());
  if (auto st = WriteAll(fd.get(), text); !st.ok()) return st;
  if (::fsync(fd.get()) != 0) return Error::FromErrno("writing " + path.string());
  return OkStatus();
}

// Writes every object into a fresh directory beside dir, then puts it in
// dir's place: renamed into place when dir does not exist, exchanged with
// it (renameat2 RENAME_EXCHANGE) when it holds a previous export, which is
// then removed. An error leaves dir as it was.
Status WriteDirectory(const fs::path& dir, const orchestrator::KubeExport& exported) {
  fs::path target = fs::absolute(dir).lexically_normal();
  if (target.filename().empty()) target = target.parent_path();
  std::error_code ec;
  bool exists = fs::exists(target, ec);
  if (exists) {
    if (!fs::is_directory(target, ec)) {
      return Error(ErrorCode::kInvalidArgument, target.string() + " exists and is not a directory");
    }
    std::string offender;
    if (!HoldsOnlyExport(target, &offender)) {
      return Error(ErrorCode::kInvalidArgument,
                   target.string() + " holds " + offender +
                       ", which is not a file an export writes; give -o an empty or new directory");
    }
  }
  std::string tmpl = (target.parent_path() / ("." + target.filename().string() + ".msb-export-XXXXXX")).string();
  if (::mkdtemp(tmpl.data()) == nullptr) return Error::FromErrno("creating a directory beside " + target.string());
  fs::path tmp = tmpl;
  auto cleanup = [&tmp] {
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
  };
  if (::chmod(tmp.c_str(), 0777 & ~UserUmask()) != 0) {
    auto err = Error::FromErrno("setting the mode of " + tmp.string());
    cleanup();
    return err;
  }
  for (const auto& obj : exported.objects) {
    if (auto st = WriteFile(tmp / obj.FileName(), orchestrator::KubeYaml(obj)); !st.ok()) {
      cleanup();
      return st;
    }
  }
  if (!exists) {
    if (::rename(tmp.c_str(), target.c_str()) != 0) {
      auto err = Error::FromErrno("renaming " + tmp.string() + " to " + target.string());
      cleanup();
      return err;
    }
    return OkStatus();
  }
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, target.c_str(), RENAME_EXCHANGE) != 0) {
    auto err = Error::FromErrno("exchanging " + tmp.string() + " with " + target.string());
    cleanup();
    return err;
  }
  cleanup();  // now the previous export
  return OkStatus();
}

int Export(const ExportFlags& flags) {
  orchestrator::KubeExportOptions options;
  options.runtime_class = flags.runtime_class;
  options.name_space = flags.name_space;
  options.publish_as = flags.publish_as == "nodeport"       ? orchestrator::PublishAs::kNodePort
                       : flags.publish_as == "loadbalancer" ? orchestrator::PublishAs::kLoadBalancer
                                                            : orchestrator::PublishAs::kClusterIp;
  options.fqdn_policy =
      flags.fqdn_policy == "cilium" ? orchestrator::FqdnPolicy::kCilium : orchestrator::FqdnPolicy::kComment;
  options.allow_host_path = flags.allow_host_path;
  auto project = LoadProjectOrReport(flags.project);
  if (!project) return 1;
  auto exported = orchestrator::ExportKubernetes(*project, options);
  if (!exported.ok()) return Fail(exported.error().message());
  for (const auto& w : exported->warnings) std::fprintf(stderr, "msb: warning: %s\n", w.c_str());
  if (flags.output == "-") {
    std::string text = orchestrator::KubeYamlStream(*exported);
    std::fwrite(text.data(), 1, text.size(), stdout);
    return std::fflush(stdout) == 0 ? 0 : Fail(std::string("writing to stdout: ") + std::strerror(errno));
  }
  if (auto st = WriteDirectory(flags.output, *exported); !st.ok()) return Fail(st.error().message());
  std::fprintf(stderr, "msb: wrote %zu objects to %s\n", exported->objects.size(), flags.output.c_str());
  return 0;
}

}  // namespace

void RegisterExportCommands(CLI::App& app) {
  auto* exp = app.add_subcommand("export", "Write the Sandboxfile as another system's configuration");
  exp->require_subcommand(1);
  auto flags = std::make_shared<ExportFlags>();
  auto* cmd = exp->add_subcommand(
      "kubernetes", "Kubernetes objects whose pods run in Kata Containers microVMs (README.md \"Kubernetes\")");
  AddProjectFlags(cmd, &flags->project);
  cmd->add_option("-o,--output", flags->output,
                  "- (the default): one YAML stream on stdout; DIR: one file per object, <kind>-<name>.yaml")
      ->type_name("DIR|-");
  cmd->add_option("--runtime-class", flags->runtime_class, "the pods' runtimeClassName (default kata-qemu)")
      ->type_name("NAME");
  cmd->add_option("--namespace", flags->name_space, "the objects' namespace (default: none written)")
      ->type_name("NS");
  cmd->add_option("--publish-as", flags->publish_as, "the type of the Service of published ports")
      ->check(CLI::IsMember({"clusterip", "nodeport", "loadbalancer"}));
  cmd->add_option("--fqdn-policy", flags->fqdn_policy,
                  "host-name rules: a CiliumNetworkPolicy (cilium), or a comment and a warning (comment, the default)")
      ->check(CLI::IsMember({"cilium", "comment"}));
  cmd->add_flag("--allow-host-path", flags->allow_host_path,
                "export bind mounts as hostPath volumes (else they are an error)");
  OnRun(cmd, [flags] { return Export(*flags); });
}

}  // namespace msb::cli
