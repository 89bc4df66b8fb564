// Resolving a Sandboxfile `user:` ("", "uid", "uid:gid", "name", "name:group")
// against the guest root's /etc/passwd and /etc/group, read as plain files
// (a static agentd has no NSS). Not a general account database.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "common/result.h"

namespace msb::agent {

struct Identity {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups, from /etc/group
  std::string home;           // "/" when unknown
};

// etc_dir is normally "/etc". An unknown name is an error; an unknown numeric
// uid is not (it runs with gid 0 unless given, and home "/").
Result<Identity> ResolveUser(const std::string& spec, const std::string& etc_dir = "/etc");

}  // namespace msb::agent
