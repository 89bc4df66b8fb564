// Where msb's own parts are, found from the running binary (/proc/self/exe):
// beside it in a build tree (build/bin/msb, build/bin/agentd), or under its
// prefix once installed (bin/msb, libexec/msb/agentd). Nothing else is read
// from either tree at run time: the guest kernel's config fragment is
// compiled in (vm/kernel.h). Not the user's state: $MSB_HOME (io.h MsbHome).
#pragma once

#include <string>
#include <string_view>

namespace msb {

// True when the running binary sits in a CMake build tree (its parent holds
// CMakeCache.txt), false when it was installed (`cmake --install`).
bool RunningFromBuildTree();

// A helper program msb runs (agentd): beside the binary in a build tree,
// else <prefix>/libexec/msb/<name>. The first path that is executable; when
// neither is, the one this layout expects (for the error message).
std::string LibexecPath(std::string_view name);

// How to get a missing Debian package, for error messages: from a build tree
// "run scripts/setup (Debian package P)", installed "install the Debian
// package P (apt-get install P)".
std::string InstallHint(std::string_view debian_package);

}  // namespace msb
