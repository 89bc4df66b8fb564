// /etc/passwd and /etc/group parsing for ResolveUser (users.h).
#include "agentd/users.h"

#include <charconv>
#include <optional>

#include "common/io.h"

namespace msb::agent {
namespace {

// No iostreams in agentd: they would add a locale machinery to the static binary.
std::vector<std::string> Split(const std::string& text, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    size_t c = text.find(sep, start);
    out.push_back(text.substr(start, c == std::string::npos ? std::string::npos : c - start));
    if (c == std::string::npos) return out;
    start = c + 1;
  }
}

std::optional<uint32_t> ParseId(const std::string& s) {
  if (s.empty()) return std::nullopt;
  uint32_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

struct PasswdEntry {
  std::string name;
  uid_t uid;
  gid_t gid;
  std::string home;
};

std::vector<PasswdEntry> ReadPasswd(const std::string& path) {
  std::vector<PasswdEntry> out;
  auto text = ReadFile(path);
  if (!text.ok()) return out;
  for (const auto& line : Split(*text, '\n')) {
    auto f = Split(line, ':');
    if (f.size() < 7 || f[0].empty()) continue;
    auto uid = ParseId(f[2]);
    auto gid = ParseId(f[3]);
    if (!uid || !gid) continue;
    out.push_back({f[0], *uid, *gid, f[5]});
  }
  return out;
}

struct GroupEntry {
  std::string name;
  gid_t gid;
  std::vector<std::string> members;
};

std::vector<GroupEntry> ReadGroups(const std::string& path) {
  std::vector<GroupEntry> out;
  auto text = ReadFile(path);
  if (!text.ok()) return out;
  for (const auto& line : Split(*text, '\n')) {
    auto f = Split(line, ':');
    if (f.size() < 4 || f[0].empty()) continue;
    auto gid = ParseId(f[2]);
    if (!gid) continue;
    GroupEntry g{f[0], *gid, {}};
    for (const auto& m : Split(f[3], ','))
      if (!m.empty()) g.members.push_back(m);
    out.push_back(std::move(g));
  }
  return out;
}

}  // namespace

Result<Identity> ResolveUser(const std::string& spec, const std::string& etc_dir) {
  Identity id;
  id.home = "/";
  std::string user = spec, group;
  if (auto c = spec.find(':'); c != std::string::npos) {
    user = spec.substr(0, c);
    group = spec.substr(c + 1);
    if (group.empty())
      return Error(ErrorCode::kInvalidArgument, "user \"" + spec + "\": empty group after ':'");
  }
  if (user.empty()) return Error(ErrorCode::kInvalidArgument, "user \"" + spec + "\": empty user name");

  auto passwd = ReadPasswd(etc_dir + "/passwd");
  const PasswdEntry* entry = nullptr;
  if (auto uid = ParseId(user)) {
    id.uid = *uid;
    for (const auto& e : passwd)
      if (e.uid == *uid) { entry = &e; break; }
  } else {
    for (const auto& e : passwd)
      if (e.name == user) { entry = &e; break; }
    if (entry == nullptr)
      return Error(ErrorCode::kNotFound, "user \"" + user + "\" not found in " + etc_dir + "/passwd");
    id.uid = entry->uid;
  }
  if (entry != nullptr) {
    id.gid = entry->gid;
    if (!entry->home.empty()) id.home = entry->home;
  }

  auto groups = ReadGroups(etc_dir + "/group");
  if (!group.empty()) {
    if (auto gid = ParseId(group)) {
      id.gid = *gid;
    } else {
      bool found = false;
      for (const auto& g : groups)
        if (g.name == group) { id.gid = g.gid; found = true; break; }
      if (!found)
        return Error(ErrorCode::kNotFound, "group \"" + group + "\" not found in " + etc_dir + "/group");
    }
  }
  if (entry != nullptr) {
    for (const auto& g : groups)
      for (const auto& m : g.members)
        if (m == entry->name && g.gid != id.gid) id.groups.push_back(g.gid);
  }
  return id;
}

}  // namespace msb::agent
