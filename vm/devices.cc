// Volume disks and virtio-fs shares in the spec and on the QEMU command line
// (devices.h).
#include "vm/devices.h"

#include "vm/qemu_cmdline.h"

namespace msb::vm {

std::string VolumeSerial(size_t index) { return "msb-vol-" + std::to_string(index); }
std::string ShareTag(size_t index) { return "msbfs" + std::to_string(index); }
std::string ShareSocket(const std::string& dir, size_t index) {
  return dir + "/fs" + std::to_string(index) + ".sock";
}

nlohmann::json DisksToJson(const std::vector<VmDisk>& disks) {
  nlohmann::json a = nlohmann::json::array();
  for (const auto& d : disks) a.push_back({{"path", d.path}, {"serial", d.serial}, {"read_only", d.read_only}});
  return a;
}

nlohmann::json SharesToJson(const std::vector<VmShare>& shares) {
  nlohmann::json a = nlohmann::json::array();
  for (const auto& s : shares) a.push_back({{"source", s.source}, {"tag", s.tag}, {"read_only", s.read_only}});
  return a;
}

std::vector<VmDisk> DisksFromJson(const nlohmann::json& j) {
  std::vector<VmDisk> out;
  if (j.is_null()) return out;
  for (const auto& e : j.get_ref<const nlohmann::json::array_t&>()) {
    out.push_back({e.at("path").get<std::string>(), e.at("serial").get<std::string>(),
                   e.at("read_only").get<bool>()});
  }
  return out;
}

std::vector<VmShare> SharesFromJson(const nlohmann::json& j) {
  std::vector<VmShare> out;
  if (j.is_null()) return out;
  for (const auto& e : j.get_ref<const nlohmann::json::array_t&>()) {
    out.push_back({e.at("source").get<std::string>(), e.at("tag").get<std::string>(),
                   e.at("read_only").get<bool>()});
  }
  return out;
}

void AttachVolumesAndShares(const std::vector<VmDisk>& disks, const std::vector<VmShare>& shares,
                            const std::string& dir, QemuCommandLine& cmd) {
  for (size_t i = 0; i < disks.size(); ++i) cmd.AttachBlock("vol" + std::to_string(i), disks[i]);
  for (size_t i = 0; i < shares.size(); ++i) {
    cmd.AttachVhostUserFs("fs" + std::to_string(i), ShareSocket(dir, i), shares[i].tag);
  }
}

}  // namespace msb::vm
