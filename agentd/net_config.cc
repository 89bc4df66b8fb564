// ConfigureNetwork: see net_config.h. Plain ioctls on the interface, no
// netlink library: agentd is static and small.
#include "agentd/net_config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <dirent.h>

#include "common/fd.h"
#include "common/io.h"

namespace msb::agent {
namespace {

// in6_ifreq and in6_rtmsg from <linux/ipv6.h>/<linux/ipv6_route.h>, which
// clash with the libc headers when included together.
struct In6Ifreq {
  in6_addr addr;
  uint32_t prefixlen;
  int ifindex;
};
struct In6Rtmsg {
  in6_addr dst, src, gateway;
  uint32_t type;
  uint16_t dst_len, src_len;
  uint32_t metric;
  unsigned long info;
  uint32_t flags;
  int ifindex;
};

// /proc/sys files take a plain write (no temporary file and rename).
void WriteProc(const std::string& path, const char* value) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (fd) (void)!::write(fd.get(), value, std::strlen(value));
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The interface whose MAC is mac, from /sys/class/net.
Result<std::string> FindInterface(const std::string& mac) {
  std::string want = Lower(mac);
  DIR* d = ::opendir("/sys/class/net");
  if (d == nullptr) return Error::FromErrno("network: cannot list /sys/class/net");
  std::string found;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == ".." || name == "lo") continue;
    auto addr = ReadFile("/sys/class/net/" + name + "/address");
    if (!addr.ok()) continue;
    std::string a = Lower(*addr);
    while (!a.empty() && (a.back() == '\n' || a.back() == ' ')) a.pop_back();
    if (a == want) {
      found = name;
      break;
    }
  }
  ::closedir(d);
  if (found.empty())
    return Error(ErrorCode::kNotFound, "network: no interface has the MAC " + mac +
                                           " (is the virtio-net device attached?)");
  return found;
}

Status Ioctl(int fd, unsigned long req, void* arg, const std::string& what) {
  if (::ioctl(fd, req, arg) != 0) return Error::FromErrno("network: " + what);
  return OkStatus();
}

sockaddr_in V4(const std::string& text, const std::string& what, Status* st) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  if (inet_pton(AF_INET, text.c_str(), &a.sin_addr) != 1)
    *st = Error(ErrorCode::kInvalidArgument, "network: " + what + " \"" + text + "\" is not an IPv4 address");
  return a;
}

Status ConfigureV4(int fd, const std::string& ifname, const NetworkConfig& c) {
  Status st = OkStatus();
  sockaddr_in addr = V4(c.ipv4, "ipv4", &st);
  MSB_TRY_STATUS(st);
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, ifname.c_str(), IFNAMSIZ - 1);
  std::memcpy(&ifr.ifr_addr, &addr, sizeof(addr));
  MSB_TRY_STATUS(Ioctl(fd, SIOCSIFADDR, &ifr, "SIOCSIFADDR " + ifname + " " + c.ipv4));
  sockaddr_in mask{};
  mask.sin_family = AF_INET;
  mask.sin_addr.s_addr = htonl(c.prefix4 == 0 ? 0 : ~uint32_t{0} << (32 - c.prefix4));
  std::memcpy(&ifr.ifr_netmask, &mask, sizeof(mask));
  MSB_TRY_STATUS(Ioctl(fd, SIOCSIFNETMASK, &ifr, "SIOCSIFNETMASK " + ifname));
  return OkStatus();
}

Status RouteV4(int fd, const std::string& ifname, const NetworkConfig& c) {
  if (c.gateway4.empty()) return OkStatus();
  Status st = OkStatus();
  sockaddr_in gw = V4(c.gateway4, "gateway4", &st);
  MSB_TRY_STATUS(st);
  rtentry rt{};
  sockaddr_in any{};
  any.sin_family = AF_INET;
  std::memcpy(&rt.rt_dst, &any, sizeof(any));
  std::memcpy(&rt.rt_genmask, &any, sizeof(any));
  std::memcpy(&rt.rt_gateway, &gw, sizeof(gw));
  rt.rt_flags = RTF_UP | RTF_GATEWAY;
  std::string dev = ifname;
  rt.rt_dev = dev.data();
  return Ioctl(fd, SIOCADDRT, &rt, "default route via " + c.gateway4);
}

Status ConfigureV6(const std::string& ifname, int ifindex, const NetworkConfig& c) {
  if (c.ipv6.empty()) return OkStatus();
  UniqueFd fd(::socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd) return Error::FromErrno("network: IPv6 socket (is IPv6 in the guest kernel?)");
  In6Ifreq req{};
  if (inet_pton(AF_INET6, c.ipv6.c_str(), &req.addr) != 1)
    return Error(ErrorCode::kInvalidArgument, "network: ipv6 \"" + c.ipv6 + "\" is not an IPv6 address");
  req.prefixlen = static_cast<uint32_t>(c.prefix6);
  req.ifindex = ifindex;
  MSB_TRY_STATUS(Ioctl(fd.get(), SIOCSIFADDR, &req, "SIOCSIFADDR " + ifname + " " + c.ipv6));
  if (c.gateway6.empty()) return OkStatus();
  In6Rtmsg rt{};
  if (inet_pton(AF_INET6, c.gateway6.c_str(), &rt.gateway) != 1)
    return Error(ErrorCode::kInvalidArgument, "network: gateway6 \"" + c.gateway6 + "\" is not an IPv6 address");
  rt.flags = RTF_UP | RTF_GATEWAY;
  rt.metric = 1;
  rt.ifindex = ifindex;
  return Ioctl(fd.get(), SIOCADDRT, &rt, "default IPv6 route via " + c.gateway6);
}

}  // namespace

std::string HostsFile(const NetworkConfig& c, const std::string& hostname) {
  std::string s = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";
  if (!hostname.empty()) {
    s += c.ipv4 + "\t" + hostname + "\n";
    if (!c.ipv6.empty()) s += c.ipv6 + "\t" + hostname + "\n";
  }
  return s;
}

std::string ResolvConf(const NetworkConfig& c) {
  if (c.dns.empty()) return "";
  return "nameserver " + c.dns + "\n";
}

Status ConfigureNetwork(const NetworkConfig& c, const std::string& hostname) {
  MSB_TRY(std::string ifname, FindInterface(c.mac));
  // No duplicate address detection and no router advertisements: the address
  // is static and the host's stack is the only other node on the link.
  for (const char* key : {"accept_dad", "dad_transmits", "accept_ra", "autoconf"}) {
    WriteProc("/proc/sys/net/ipv6/conf/" + ifname + "/" + key, "0\n");
  }
  UniqueFd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd) return Error::FromErrno("network: socket");
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, ifname.c_str(), IFNAMSIZ - 1);
  ifr.ifr_mtu = c.mtu;
  MSB_TRY_STATUS(Ioctl(fd.get(), SIOCSIFMTU, &ifr, "MTU " + std::to_string(c.mtu) + " on " + ifname));
  MSB_TRY_STATUS(ConfigureV4(fd.get(), ifname, c));
  MSB_TRY_STATUS(Ioctl(fd.get(), SIOCGIFFLAGS, &ifr, "SIOCGIFFLAGS " + ifname));
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP | IFF_RUNNING);
  MSB_TRY_STATUS(Ioctl(fd.get(), SIOCSIFFLAGS, &ifr, "bringing " + ifname + " up"));
  MSB_TRY_STATUS(RouteV4(fd.get(), ifname, c));
  int ifindex = static_cast<int>(if_nametoindex(ifname.c_str()));
  MSB_TRY_STATUS(ConfigureV6(ifname, ifindex, c));
  (void)MakeDirs("/etc", 0755);
  // A symlinked resolv.conf (systemd-resolved images) would point elsewhere.
  ::unlink("/etc/resolv.conf");
  // Rewritten at every boot: not flushed (common/io.h ReplaceFile).
  MSB_TRY_STATUS(ReplaceFile("/etc/resolv.conf", ResolvConf(c), 0644));
  MSB_TRY_STATUS(ReplaceFile("/etc/hosts", HostsFile(c, hostname), 0644));
  return OkStatus();
}

}  // namespace msb::agent
