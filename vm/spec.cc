// VmSpec serialisation, and the sandbox's QEMU command line composed from
// vm/qemu_cmdline.h (where the facts behind each flag are written down).
#include "vm/spec.h"

#include <unistd.h>

#include <cstdlib>

#include "agent/protocol.h"
#include "common/install_layout.h"
#include "common/io.h"
#include "vm/qemu_cmdline.h"

namespace msb::vm {
namespace {

nlohmann::json SecretsToJson(const std::vector<VmSecret>& secrets) {
  nlohmann::json a = nlohmann::json::array();
  for (const auto& s : secrets) {
    a.push_back({{"name", s.name}, {"source", s.source}, {"from", s.from}, {"allow", s.allow},
                 {"inject", {{"headers", s.inject_headers}, {"basic_auth", s.inject_basic_auth},
                             {"query", s.inject_query}, {"body", s.inject_body}}}});
  }
  return a;
}

std::vector<VmSecret> SecretsFromJson(const nlohmann::json& a) {
  std::vector<VmSecret> out;
  for (const auto& e : a) {
    VmSecret s;
    s.name = e.at("name").get<std::string>();
    s.source = e.at("source").get<std::string>();
    s.from = e.at("from").get<std::string>();
    s.allow = e.at("allow").get<std::vector<std::string>>();
    const auto& in = e.at("inject");
    s.inject_headers = in.at("headers").get<bool>();
    s.inject_basic_auth = in.at("basic_auth").get<bool>();
    s.inject_query = in.at("query").get<bool>();
    s.inject_body = in.at("body").get<bool>();
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace

nlohmann::json ToJson(const VmSpec& s) {
  return nlohmann::json{{"project", s.project},        {"name", s.name},
                        {"dir", s.dir},                {"cpus", s.cpus},
                        {"memory_bytes", s.memory_bytes}, {"accel", s.accel},
                        {"kernel", s.kernel},          {"initramfs", s.initramfs},
                        {"base_disk", s.base_disk},    {"upper_disk", s.upper_disk},
                        {"lower_disks", s.lower_disks},
                        {"boot", s.boot},              {"boot_timeout_ms", s.boot_timeout_ms},
                        {"tsc_khz", s.tsc_khz},        {"boot_mode", s.boot_mode},        {"log_max_bytes", s.log_max_bytes},        {"policy", s.policy},
                        {"stop_timeout_ms", s.stop_timeout_ms},
                        {"volumes", DisksToJson(s.volumes)}, {"shares", SharesToJson(s.shares)},
                        {"network", s.network ? ToJson(*s.network) : nlohmann::json()},
                        {"secrets", SecretsToJson(s.secrets)}};
}

nlohmann::json ToJson(const VmNetwork& n) {
  nlohmann::json ports = nlohmann::json::array();
  for (const auto& p : n.ports) {
    ports.push_back({{"host_ip", p.host_ip}, {"host_port", p.host_port},
                     {"guest_port", p.guest_port}, {"proto", p.proto}});
  }
  return nlohmann::json{{"mac", n.mac},           {"gateway_mac", n.gateway_mac},
                        {"ipv4", n.ipv4},         {"prefix4", n.prefix4},
                        {"gateway4", n.gateway4}, {"ipv6", n.ipv6},
                        {"prefix6", n.prefix6},   {"gateway6", n.gateway6},
                        {"mtu", n.mtu},           {"profile", n.profile},
                        {"rules", n.rules},       {"dns_servers", n.dns_servers},
                        {"rebind_protection", n.rebind_protection},
                        {"ports", ports},         {"group_dir", n.group_dir},
                        {"group_name", n.group_name}, {"tls_ca_file", n.tls_ca_file}};
}

Result<VmNetwork> VmNetworkFromJson(const nlohmann::json& j) {
  VmNetwork n;
  try {
    n.mac = j.value("mac", n.mac);
    n.gateway_mac = j.value("gateway_mac", n.gateway_mac);
    n.ipv4 = j.value("ipv4", n.ipv4);
    n.prefix4 = j.value("prefix4", n.prefix4);
    n.gateway4 = j.value("gateway4", n.gateway4);
    n.ipv6 = j.value("ipv6", n.ipv6);
    n.prefix6 = j.value("prefix6", n.prefix6);
    n.gateway6 = j.value("gateway6", n.gateway6);
    n.mtu = j.value("mtu", n.mtu);
    n.profile = j.value("profile", n.profile);
    n.rules = j.value("rules", n.rules);
    n.dns_servers = j.value("dns_servers", n.dns_servers);
    n.rebind_protection = j.value("rebind_protection", n.rebind_protection);
    if (j.contains("ports")) {
      for (const auto& p : j.at("ports")) {
        VmNetwork::Port port;
        port.host_ip = p.at("host_ip").get<std::string>();
        port.host_port = p.at("host_port").get<int>();
        port.guest_port = p.at("guest_port").get<int>();
        port.proto = p.at("proto").get<std::string>();
        n.ports.push_back(std::move(port));
      }
    }
    n.group_dir = j.value("group_dir", n.group_dir);
    n.group_name = j.value("group_name", n.group_name);
    n.tls_ca_file = j.value("tls_ca_file", n.tls_ca_file);
  } catch (const nlohmann::json::exception& e) {
    return Error(ErrorCode::kInvalidArgument, std::string("malformed network in the sandbox spec: ") + e.what());
  }
  return n;
}

Result<VmSpec> VmSpecFromJson(const nlohmann::json& j) {
  VmSpec s;
  try {
    s.project = j.at("project").get<std::string>();
    s.name = j.at("name").get<std::string>();
    s.dir = j.at("dir").get<std::string>();
    s.cpus = j.at("cpus").get<int>();
    s.memory_bytes = j.at("memory_bytes").get<uint64_t>();
    s.accel = j.at("accel").get<std::string>();
    s.kernel = j.at("kernel").get<std::string>();
    s.initramfs = j.at("initramfs").get<std::string>();
    s.base_disk = j.at("base_disk").get<std::string>();
    s.upper_disk = j.at("upper_disk").get<std::string>();
    if (j.contains("lower_disks")) s.lower_disks = j.at("lower_disks").get<std::vector<std::string>>();
    s.boot = j.at("boot");
    s.boot_timeout_ms = j.at("boot_timeout_ms").get<int>();
    s.stop_timeout_ms = j.at("stop_timeout_ms").get<int>();
    s.tsc_khz = j.value("tsc_khz", uint64_t{0});
    s.boot_mode = j.value("boot_mode", std::string("auto"));
    s.log_max_bytes = j.value("log_max_bytes", kDefaultLogMaxBytes);
    if (j.contains("volumes")) s.volumes = DisksFromJson(j["volumes"]);
    if (j.contains("shares")) s.shares = SharesFromJson(j["shares"]);
    if (j.contains("policy")) s.policy = j["policy"];
    if (j.contains("secrets")) s.secrets = SecretsFromJson(j["secrets"]);
    if (j.contains("network") && !j["network"].is_null()) {
      auto n = VmNetworkFromJson(j["network"]);
      if (!n.ok()) return n.error();
      s.network = std::move(*n);
    }
  } catch (const nlohmann::json::exception& e) {
    return Error(ErrorCode::kInvalidArgument, std::string("malformed sandbox spec: ") + e.what());
  }
  return s;
}

Status WriteSpec(const VmSpec& spec) {
  return WriteFileAtomic(spec.SpecPath(), ToJson(spec).dump(2) + "\n", 0600);
}

Result<VmSpec> ReadSpec(const std::string& dir) {
  MSB_TRY(std::string text, ReadFile(dir + "/spec.json"));
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) return Error(ErrorCode::kInvalidArgument, "malformed " + dir + "/spec.json");
  return VmSpecFromJson(j);
}

namespace {
std::string ExtraKernelArgs(const VmSpec& s) {
  return s.tsc_khz != 0 ? "tsc_early_khz=" + std::to_string(s.tsc_khz) : "";
}
}  // namespace

std::string KernelCmdline(const VmSpec& s) { return MicrovmKernelCmdline(ExtraKernelArgs(s)); }

std::string LowerSerial(size_t index) { return agent::kLowerSerialPrefix + std::to_string(index); }

// The order is the guest's device order: console, QMP, agent port, base,
// lower layers, upper, volumes, shares, network, rng. Keep it: transports and serials do
// not move between restarts.
std::vector<std::string> QemuArgv(const VmSpec& s, const std::string& qemu) {
  MicrovmConfig m;
  m.qemu = qemu;
  m.kvm = s.accel == "kvm";
  m.cpus = s.cpus;
  m.memory_mib = s.memory_bytes >> 20;
  // Only with shares. Otherwise guest RAM is anonymous memory, which QEMU
  // asks to back with transparent huge pages: loading a booted template
  // (vm/template.h) reads every page of guest RAM to see that it is zero,
  // one page fault per 4 KiB page of a memfd (2.5 s for 512 MiB on these
  // machines, bench/README.md) against one per 2 MiB huge page. Sandboxes with shares
  // never restore a template, so the two machines never meet in one stream.
  m.vhost_user = !s.shares.empty();
  m.kernel = s.kernel;
  m.initramfs = s.initramfs;
  m.kernel_args = ExtraKernelArgs(s);
  QemuCommandLine cmd = QemuCommandLine::ForMicrovm(m);
  cmd.AttachSerialSocket(s.ConsoleSocket());
  cmd.AttachQmp(s.QmpSocket());
  cmd.AttachAgentPort(s.AgentSocket());
  cmd.AttachBlock("base", VmDisk{s.base_disk, agent::kBaseSerial, true});
  for (size_t i = 0; i < s.lower_disks.size(); ++i) {
    cmd.AttachBlock("lower" + std::to_string(i), VmDisk{s.lower_disks[i], LowerSerial(i), true});
  }
  if (!s.upper_disk.empty()) cmd.AttachBlock("upper", VmDisk{s.upper_disk, agent::kUpperSerial, false});
  AttachVolumesAndShares(s.volumes, s.shares, s.dir, cmd);
  if (s.network) cmd.AttachStreamNetwork("net0", s.NetSocket(), s.network->mac);
  cmd.AttachRng();
  return std::move(cmd).TakeArgv();
}

Result<std::string> FindQemu() {
  if (const char* q = std::getenv("MSB_QEMU"); q != nullptr && *q != '\0') {
    if (::access(q, X_OK) != 0) {
      return Error(ErrorCode::kUnavailable, std::string("MSB_QEMU points at ") + q +
                                                ", which is not an executable");
    }
    return std::string(q);
  }
  const char* path = std::getenv("PATH");
  std::string p = path != nullptr ? path : "/usr/bin:/bin";
  size_t start = 0;
  while (start <= p.size()) {
    size_t end = p.find(':', start);
    std::string dir = p.substr(start, end == std::string::npos ? std::string::npos : end - start);
    std::string cand = (dir.empty() ? "." : dir) + "/qemu-system-x86_64";
    if (::access(cand.c_str(), X_OK) == 0) return cand;
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return Error(ErrorCode::kUnavailable,
               "qemu-system-x86_64 not found on PATH (nor MSB_QEMU set); " +
                   InstallHint("qemu-system-x86"));
}

}  // namespace msb::vm
