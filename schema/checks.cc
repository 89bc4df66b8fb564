// Rules that span sandboxes: depends_on targets and cycles, published host
// addresses, named volumes. Each error is placed where the offending value is.
#include <algorithm>
#include <functional>
#include <map>
#include <tuple>

#include "schema/loader.h"
#include "schema/values.h"

namespace msb::schema::internal {
namespace {

bool IsWildcard(const std::string& ip) { return ip == "0.0.0.0" || ip == "::"; }
bool IsV6(const std::string& ip) { return ip.find(':') != std::string::npos; }

// Whether two listeners would fight over one socket address.
bool Overlaps(const PortMapping& a, const PortMapping& b) {
  if (a.host_port != b.host_port || a.protocol != b.protocol) return false;
  if (a.host_ip == b.host_ip) return true;
  // "::" also takes IPv4 on Linux (dual stack); 0.0.0.0 takes every IPv4 address.
  if (a.host_ip == "::" || b.host_ip == "::") return true;
  if (IsV6(a.host_ip) != IsV6(b.host_ip)) return false;
  return IsWildcard(a.host_ip) || IsWildcard(b.host_ip);
}

void CheckDependencies(Ctx& ctx, const Project& project) {
  std::vector<std::string_view> names;
  for (const auto& [name, sb] : project.sandboxes) names.push_back(name);
  for (const DependencyUse& d : ctx.dependencies) {
    auto it = project.sandboxes.find(d.to);
    if (it == project.sandboxes.end()) {
      ctx.Error(d.pos, d.path, "depends on unknown sandbox \"" + d.to + "\"" + DidYouMean(d.to, names));
      continue;
    }
    if (d.condition == DependCondition::kHealthy && !it->second.healthcheck) {
      ctx.Error(d.pos, d.path,
                "condition healthy needs a healthcheck on sandbox \"" + d.to + "\", which has none");
    }
  }
  // Depth-first search in name order; each back edge is one cycle, reported
  // at the depends_on entry that closes it.
  enum Color { kWhite, kGray, kBlack };
  std::map<std::string, Color> color;
  std::vector<std::string> stack;
  std::function<void(const std::string&)> visit = [&](const std::string& name) {
    color[name] = kGray;
    stack.push_back(name);
    for (const auto& [dep, info] : project.sandboxes.at(name).depends_on) {
      if (!project.sandboxes.count(dep)) continue;
      Color c = color[dep];
      if (c == kWhite) {
        visit(dep);
      } else if (c == kGray) {
        auto from = std::find(stack.begin(), stack.end(), dep);
        std::string cycle;
        for (auto it = from; it != stack.end(); ++it) cycle += *it + " -> ";
        cycle += dep;
        ctx.Error(info.pos, "sandboxes." + name + ".depends_on", "depends_on cycle: " + cycle);
      }
    }
    stack.pop_back();
    color[name] = kBlack;
  };
  for (const auto& [name, sb] : project.sandboxes) {
    if (color[name] == kWhite) visit(name);
  }
}

void CheckPorts(Ctx& ctx) {
  const std::vector<PortUse>& ports = ctx.ports;
  // Only listeners on one port and protocol can overlap.
  std::map<std::pair<uint16_t, Protocol>, std::vector<size_t>> by_port;
  for (size_t i = 0; i < ports.size(); ++i) {
    std::vector<size_t>& earlier = by_port[{ports[i].port.host_port, ports[i].port.protocol}];
    earlier.push_back(i);
    for (size_t j : earlier) {
      if (j == i) break;
      if (!Overlaps(ports[i].port, ports[j].port)) continue;
      const PortMapping& p = ports[i].port;
      std::string addr = (IsV6(p.host_ip) ? "[" + p.host_ip + "]" : p.host_ip) + ":" +
                         std::to_string(p.host_port) + "/" + ToString(p.protocol);
      ctx.Error(ports[i].pos, ports[i].path,
                "host address " + addr + " is already published by " + ports[j].path + " (line " +
                    std::to_string(ports[j].pos.line) + ")");
      break;
    }
  }
}

void CheckVolumes(Ctx& ctx, const Project& project) {
  std::vector<std::string_view> declared;
  for (const auto& [name, v] : project.volumes) declared.push_back(name);
  for (const VolumeUse& use : ctx.volume_uses) {
    if (project.volumes.count(use.name)) continue;
    ctx.Error(use.pos, use.path,
              "volume \"" + use.name + "\" is not declared in the top-level volumes section" +
                  DidYouMean(use.name, declared) + " (a host path starts with ./ or /)");
  }
  // A named volume is an ext4 disk: one VM may write it, or any number read
  // it, never both (QEMU's image lock would refuse the second VM at boot).
  std::map<std::string, std::vector<const VolumeUse*>> by_name;
  for (const VolumeUse& use : ctx.volume_uses) by_name[use.name].push_back(&use);
  for (auto& [name, uses] : by_name) {
    std::sort(uses.begin(), uses.end(), [](const VolumeUse* a, const VolumeUse* b) {
      return std::tie(a->pos.line, a->pos.column) < std::tie(b->pos.line, b->pos.column);
    });
    const bool writer = std::any_of(uses.begin(), uses.end(), [](const VolumeUse* u) { return !u->read_only; });
    if (!writer) continue;
    for (size_t i = 1; i < uses.size(); ++i) {
      ctx.Error(uses[i]->pos, uses[i]->path,
                "volume \"" + name + "\" is also mounted by " + uses[0]->path + " (line " +
                    std::to_string(uses[0]->pos.line) +
                    ") and one of them writes to it: a volume is a disk only one VM may write; "
                    "mount it :ro everywhere, or share a host directory with a bind mount");
    }
  }
}

}  // namespace

void CheckProject(Ctx& ctx, const Project& project) {
  CheckDependencies(ctx, project);
  CheckPorts(ctx);
  CheckVolumes(ctx, project);
}

}  // namespace msb::schema::internal
