// The build-tree and installed layouts of msb's parts; see install_layout.h.
#include "common/install_layout.h"

#include <unistd.h>

#include "common/io.h"

namespace msb {
namespace {

// The directory above the binary's: the build tree, or the install prefix.
std::string Prefix() {
  const std::string self = SelfDir();
  const auto slash = self.rfind('/');
  if (slash == std::string::npos) return self + "/..";
  return slash == 0 ? "/" : self.substr(0, slash);
}

}  // namespace

bool RunningFromBuildTree() {
  return ::access((Prefix() + "/CMakeCache.txt").c_str(), F_OK) == 0;
}

std::string LibexecPath(std::string_view name) {
  const std::string self = SelfDir();
  const std::string beside = self + "/" + std::string(name);
  const std::string installed = Prefix() + "/libexec/msb/" + std::string(name);
  if (::access(beside.c_str(), X_OK) == 0) return beside;
  if (::access(installed.c_str(), X_OK) == 0) return installed;
  return RunningFromBuildTree() ? beside : installed;
}

std::string InstallHint(std::string_view debian_package) {
  const std::string p(debian_package);
  if (RunningFromBuildTree()) return "run scripts/setup (Debian package " + p + ")";
  return "install the Debian package " + p + " (apt-get install " + p + ")";
}

}  // namespace msb
