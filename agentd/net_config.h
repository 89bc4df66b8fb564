// agentd's network set-up as the guest's PID 1: the interface with the MAC the
// host gave is brought up with its static IPv4/IPv6 addresses, MTU and default
// routes (ioctl; IPv6 through in6_ifreq/in6_rtmsg with duplicate address
// detection off, so the address is usable at once), and /etc/resolv.conf and
// /etc/hosts are written in the new root (the overlay's upper layer: the
// image is not modified). Not DHCP, not a network manager: nothing is renewed.
#pragma once

#include <string>

#include "agent/messages.h"
#include "common/result.h"

namespace msb::agent {

// Must run after the switch into the new root (it writes /etc there and
// needs /proc and /sys). Errors name the step and the interface.
Status ConfigureNetwork(const NetworkConfig& config, const std::string& hostname);

// The text of /etc/hosts and /etc/resolv.conf for config (pure; tested).
std::string HostsFile(const NetworkConfig& config, const std::string& hostname);
std::string ResolvConf(const NetworkConfig& config);

}  // namespace msb::agent
