// The QEMU microvm command line (vm/qemu_cmdline.h): the sandbox's whole line
// as golden text (devices and their order, which fix the guest's slots and
// serials), comma escaping of every path kind, the agent port's name and the
// transport count. Pure: nothing is started.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "agent/protocol.h"
#include "schema/model.h"
#include "vm/qemu_cmdline.h"
#include "vm/spec.h"

namespace msb::vm {
namespace {

// One option and its value a line ("-m 768M"); argv[0] alone on the first.
std::string Lines(const std::vector<std::string>& argv) {
  std::string out;
  for (size_t i = 0; i < argv.size(); ++i) {
    out += argv[i];
    if (i > 0 && i + 1 < argv.size() && argv[i + 1][0] != '-') out += " " + argv[++i];
    out += "\n";
  }
  return out;
}

// The virtio-mmio devices a command line asks for (each takes one transport).
int VirtioDevices(const std::vector<std::string>& argv) {
  int n = 0;
  for (size_t i = 0; i + 1 < argv.size(); ++i) {
    if (argv[i] != "-device") continue;
    const std::string& d = argv[i + 1];
    if (d.rfind("virtio-", 0) == 0 || d.rfind("vhost-user-", 0) == 0) ++n;
  }
  return n;
}

int Count(const std::vector<std::string>& argv, const std::string& x) {
  return static_cast<int>(std::count(argv.begin(), argv.end(), x));
}

// Every kind of device a sandbox has, with commas in every host path.
VmSpec FullSpec() {
  VmSpec s;
  s.dir = "/run/s,b";
  s.kernel = "/k,1";
  s.initramfs = "/i,1";
  s.base_disk = "/img/b,ase.ext4";
  s.upper_disk = "/run/s,b/upper.ext4";
  s.cpus = 2;
  s.memory_bytes = 768ull << 20;
  s.tsc_khz = 2400000;
  s.volumes = {{"/home/v/data.ext4", VolumeSerial(0), false}, {"/home/v/a,b.ext4", VolumeSerial(1), true}};
  s.shares = {{"/src", ShareTag(0), false}, {"/cfg", ShareTag(1), true}};
  s.network = VmNetwork{};
  return s;
}

TEST(QemuCmdlineTest, TheSandboxLineAsGoldenText) {
  EXPECT_EQ(Lines(QemuArgv(FullSpec(), "qemu")),
            "qemu\n"
            "-M microvm,rtc=on\n"
            "-accel tcg,tb-size=128\n"
            "-cpu max\n"
            "-smp 2\n"
            "-m 768M\n"
            "-object memory-backend-memfd,id=mem,size=768M,share=on\n"
            "-machine memory-backend=mem\n"
            "-global virtio-mmio.force-legacy=false\n"
            "-nodefaults\n"
            "-no-user-config\n"
            "-nographic\n"
            "-no-reboot\n"
            "-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny\n"
            "-kernel /k,1\n"
            "-initrd /i,1\n"
            "-append console=ttyS0 quiet panic=-1 reboot=t tsc_early_khz=2400000\n"
            "-chardev socket,id=con,path=/run/s,,b/console.sock\n"
            "-serial chardev:con\n"
            "-chardev socket,id=qmp,path=/run/s,,b/qmp.sock\n"
            "-mon chardev=qmp,mode=control\n"
            "-device virtio-serial-device\n"
            "-chardev socket,id=agent,path=/run/s,,b/agent.sock\n"
            "-device virtserialport,chardev=agent,name=msb.agent\n"
            "-drive id=base,file=/img/b,,ase.ext4,format=raw,if=none,readonly=on\n"
            "-device virtio-blk-device,drive=base,serial=msb-base\n"
            "-drive id=upper,file=/run/s,,b/upper.ext4,format=raw,if=none,discard=unmap\n"
            "-device virtio-blk-device,drive=upper,serial=msb-upper\n"
            "-drive id=vol0,file=/home/v/data.ext4,format=raw,if=none,discard=unmap\n"
            "-device virtio-blk-device,drive=vol0,serial=msb-vol-0\n"
            "-drive id=vol1,file=/home/v/a,,b.ext4,format=raw,if=none,readonly=on\n"
            "-device virtio-blk-device,drive=vol1,serial=msb-vol-1\n"
            "-chardev socket,id=fs0,path=/run/s,,b/fs0.sock\n"
            "-device vhost-user-fs-device,chardev=fs0,tag=msbfs0\n"
            "-chardev socket,id=fs1,path=/run/s,,b/fs1.sock\n"
            "-device vhost-user-fs-device,chardev=fs1,tag=msbfs1\n"
            "-netdev stream,id=net0,server=off,addr.type=unix,addr.path=/run/s,,b/net.sock\n"
            "-device virtio-net-device,netdev=net0,mac=52:54:00:6d:73:02\n"
            "-object rng-random,id=rng,filename=/dev/urandom\n"
            "-device virtio-rng-device,rng=rng\n");
}

TEST(QemuCmdlineTest, EscapeDoublesEveryComma) {
  EXPECT_EQ(QemuEscape(""), "");
  EXPECT_EQ(QemuEscape("/plain/path"), "/plain/path");
  EXPECT_EQ(QemuEscape(","), ",,");
  EXPECT_EQ(QemuEscape("a,b,,c,"), "a,,b,,,,c,,");
}

// An unescaped comma in any option value would end it early: check that no
// value holds a lone comma inside a path of FullSpec, whatever its kind.
TEST(QemuCmdlineTest, EveryPathKindIsEscaped) {
  const auto a = QemuArgv(FullSpec(), "qemu");
  for (const char* path : {"/run/s,b/console.sock", "/run/s,b/qmp.sock", "/run/s,b/agent.sock",
                                  "/img/b,ase.ext4", "/run/s,b/upper.ext4", "/home/v/a,b.ext4",
                                  "/run/s,b/fs0.sock", "/run/s,b/fs1.sock", "/run/s,b/net.sock"}) {
    const std::string escaped = QemuEscape(path);
    int found = 0;
    for (const std::string& v : a) {
      if (v.find(escaped) != std::string::npos) ++found;
      // The raw path may only appear as part of its escaped form.
      if (v.find(path) != std::string::npos) {
        EXPECT_NE(v.find(escaped), std::string::npos) << v;
      }
    }
    EXPECT_EQ(found, 1) << path;
  }
  // -kernel, -initrd and -append are taken whole by QEMU: not escaped.
  EXPECT_EQ(Count(a, "/k,1"), 1);
  EXPECT_EQ(Count(a, "/i,1"), 1);
}

TEST(QemuCmdlineTest, CallerStringsInDeviceOptionsAreEscaped) {
  MicrovmConfig m;
  m.qemu = "qemu";
  m.kernel = "/k";
  m.vhost_user = true;
  QemuCommandLine c = QemuCommandLine::ForMicrovm(m);
  c.AttachBlock("d,0", {"/x", "ser,ial", false});
  c.AttachVhostUserFs("f,0", "/s", "t,ag");
  c.AttachStreamNetwork("n,0", "/n", "52:54:00:00:00:01");
  const auto& a = c.argv();
  EXPECT_EQ(Count(a, "id=d,,0,file=/x,format=raw,if=none,discard=unmap"), 1);
  EXPECT_EQ(Count(a, "virtio-blk-device,drive=d,,0,serial=ser,,ial"), 1);
  EXPECT_EQ(Count(a, "vhost-user-fs-device,chardev=f,,0,tag=t,,ag"), 1);
  EXPECT_EQ(Count(a, "virtio-net-device,netdev=n,,0,mac=52:54:00:00:00:01"), 1);
}

TEST(QemuCmdlineTest, TheAgentPortHasTheProtocolsName) {
  MicrovmConfig m;
  m.qemu = "qemu";
  m.kernel = "/k";
  QemuCommandLine c = QemuCommandLine::ForMicrovm(m);
  c.AttachAgentPort("/w/agent.sock");
  const auto& a = c.argv();
  EXPECT_EQ(Count(a, std::string("virtserialport,chardev=agent,name=") + agent::kPortName), 1);
  EXPECT_EQ(Count(a, "virtio-serial-device"), 1);
  EXPECT_EQ(Count(a, "socket,id=agent,path=/w/agent.sock"), 1);
  // The sandbox's port is the same one.
  VmSpec s = FullSpec();
  EXPECT_EQ(Count(QemuArgv(s, "qemu"), std::string("virtserialport,chardev=agent,name=") + agent::kPortName), 1);
}

TEST(QemuCmdlineTest, TransportsCountEveryVirtioDevice) {
  const VmSpec s = FullSpec();
  MicrovmConfig m;
  m.qemu = "qemu";
  m.kernel = s.kernel;
  m.vhost_user = true;
  QemuCommandLine c = QemuCommandLine::ForMicrovm(m);
  EXPECT_EQ(c.transports(), 0);
  c.AttachSerialConsole(s.ConsoleLog());
  c.AttachQmp(s.QmpSocket());
  EXPECT_EQ(c.transports(), 0);  // the UART and the monitor are no virtio devices
  c.AttachAgentPort(s.AgentSocket());
  c.AttachBlock("base", {s.base_disk, agent::kBaseSerial, true});
  c.AttachBlock("upper", {s.upper_disk, agent::kUpperSerial, false});
  c.AttachStreamNetwork("net0", s.NetSocket(), s.network->mac);
  c.AttachRng();
  // msb's own devices are the ones the schema reserves.
  EXPECT_EQ(c.transports(), schema::kSystemDevices);
  EXPECT_EQ(VirtioDevices(c.argv()), c.transports());
  AttachVolumesAndShares(s.volumes, s.shares, s.dir, c);
  EXPECT_EQ(c.transports(), schema::kSystemDevices + 4);
  EXPECT_EQ(VirtioDevices(c.argv()), c.transports());
  // The same devices as the sandbox's own line.
  EXPECT_EQ(VirtioDevices(QemuArgv(s, "qemu")), c.transports());
}

TEST(QemuCmdlineTest, SharedMemoryOnlyWhenAsked) {
  MicrovmConfig m;
  m.qemu = "qemu";
  m.kernel = "/k";
  m.memory_mib = 256;
  m.kvm = true;
  QemuCommandLine plain = QemuCommandLine::ForMicrovm(m);
  EXPECT_EQ(Lines(plain.argv()),
            "qemu\n-M microvm,rtc=on\n-accel kvm\n-cpu host\n-smp 1\n-m 256M\n-nodefaults\n-no-user-config\n"
            "-nographic\n-no-reboot\n"
            "-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny\n"
            "-kernel /k\n-append console=ttyS0 quiet panic=-1 reboot=t\n");
  m.vhost_user = true;
  const auto shared = QemuCommandLine::ForMicrovm(m).argv();
  EXPECT_EQ(Count(shared, "memory-backend-memfd,id=mem,size=256M,share=on"), 1);
  EXPECT_EQ(Count(shared, "virtio-mmio.force-legacy=false"), 1);
}

TEST(QemuCmdlineDeathTest, VhostUserFsNeedsSharedMemory) {
  MicrovmConfig m;
  m.qemu = "qemu";
  m.kernel = "/k";
  QemuCommandLine c = QemuCommandLine::ForMicrovm(m);
  EXPECT_DEATH(c.AttachVhostUserFs("fs0", "/s", "msbfs0"), "vhost_user");
}

TEST(QemuCmdlineTest, KernelCmdline) {
  EXPECT_EQ(MicrovmKernelCmdline(""), "console=ttyS0 quiet panic=-1 reboot=t");
  EXPECT_EQ(MicrovmKernelCmdline("tsc_early_khz=1"), "console=ttyS0 quiet panic=-1 reboot=t tsc_early_khz=1");
  VmSpec s;
  EXPECT_EQ(KernelCmdline(s), "console=ttyS0 quiet panic=-1 reboot=t");
}

}  // namespace
}  // namespace msb::vm
