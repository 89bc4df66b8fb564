// The QEMU microvm command line (qemu_cmdline.h): the machine and one small
// function per device. Nothing here runs QEMU.
#include "vm/qemu_cmdline.h"

#include "agent/protocol.h"
#include "common/result.h"

namespace msb::vm {

std::string QemuEscape(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    out += c;
    if (c == ',') out += ',';
  }
  return out;
}

std::string MicrovmKernelCmdline(std::string_view extra) {
  std::string c = "console=ttyS0 quiet panic=-1 reboot=t";
  if (!extra.empty()) c += " " + std::string(extra);
  return c;
}

QemuCommandLine QemuCommandLine::ForMicrovm(const MicrovmConfig& m) {
  const std::string mem = std::to_string(m.memory_mib) + "M";
  QemuCommandLine c;
  c.vhost_user_ = m.vhost_user;
  c.Add({m.qemu, "-M", "microvm,rtc=on", "-accel",
         m.kvm ? std::string("kvm") : "tcg,tb-size=" + std::to_string(kTcgCacheMiB), "-cpu",
         m.kvm ? "host" : "max", "-smp", std::to_string(m.cpus), "-m", mem});
  if (m.vhost_user) {
    c.Add({"-object", "memory-backend-memfd,id=mem,size=" + mem + ",share=on", "-machine",
           "memory-backend=mem", "-global", "virtio-mmio.force-legacy=false"});
  }
  c.Add({"-nodefaults", "-no-user-config", "-nographic", "-no-reboot"});
  // QEMU's own seccomp filter: no obsolete calls, no set*id, no fork or exec,
  // no scheduler or affinity changes (vm/jail.h is the rest of its jail).
  c.Add({"-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"});
  c.Add({"-kernel", m.kernel});
  if (!m.initramfs.empty()) c.Add({"-initrd", m.initramfs});
  c.Add({"-append", MicrovmKernelCmdline(m.kernel_args)});
  return c;
}

void QemuCommandLine::Add(std::initializer_list<std::string> args) {
  argv_.insert(argv_.end(), args);
}

void QemuCommandLine::AttachSerialConsole(const std::string& log_path) {
  Add({"-chardev", "file,id=con,path=" + QemuEscape(log_path), "-serial", "chardev:con"});
}

void QemuCommandLine::AttachSerialSocket(const std::string& socket) {
  Add({"-chardev", "socket,id=con,path=" + QemuEscape(socket), "-serial", "chardev:con"});
}

void QemuCommandLine::AttachSerialStdio() { Add({"-serial", "stdio"}); }

void QemuCommandLine::AttachQmp(const std::string& socket) {
  Add({"-chardev", "socket,id=qmp,path=" + QemuEscape(socket), "-mon", "chardev=qmp,mode=control"});
}

void QemuCommandLine::AttachAgentPort(const std::string& socket) {
  Add({"-device", "virtio-serial-device", "-chardev", "socket,id=agent,path=" + QemuEscape(socket),
       "-device", "virtserialport,chardev=agent,name=" + QemuEscape(agent::kPortName)});
  ++transports_;
}

void QemuCommandLine::AttachBlock(std::string_view id, const VmDisk& disk) {
  const std::string drive = QemuEscape(id);
  Add({"-drive", "id=" + drive + ",file=" + QemuEscape(disk.path) + ",format=raw,if=none" +
                     (disk.read_only ? ",readonly=on" : ",discard=unmap"),
       "-device", "virtio-blk-device,drive=" + drive + ",serial=" + QemuEscape(disk.serial)});
  ++transports_;
}

void QemuCommandLine::AttachVhostUserFs(std::string_view id, const std::string& socket,
                                        std::string_view tag) {
  MSB_CHECK(vhost_user_, "vhost-user-fs needs a machine with MicrovmConfig::vhost_user");
  const std::string chardev = QemuEscape(id);
  Add({"-chardev", "socket,id=" + chardev + ",path=" + QemuEscape(socket), "-device",
       "vhost-user-fs-device,chardev=" + chardev + ",tag=" + QemuEscape(tag)});
  ++transports_;
}

void QemuCommandLine::AttachStreamNetwork(std::string_view id, const std::string& socket,
                                          std::string_view mac) {
  const std::string netdev = QemuEscape(id);
  Add({"-netdev", "stream,id=" + netdev + ",server=off,addr.type=unix,addr.path=" + QemuEscape(socket),
       "-device", "virtio-net-device,netdev=" + netdev + ",mac=" + QemuEscape(mac)});
  ++transports_;
}

void QemuCommandLine::AttachRng() {
  Add({"-object", "rng-random,id=rng,filename=/dev/urandom", "-device", "virtio-rng-device,rng=rng"});
  ++transports_;
}

}  // namespace msb::vm
