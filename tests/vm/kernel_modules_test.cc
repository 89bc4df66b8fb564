// Tests of vm/kernel_modules.h on stand-in modules: minimal ELF files with a
// .modinfo section written by the test. The real modules of Debian's kernel
// are loaded by a real guest in tests/integration/debian_kernel_test.cc.
#include "vm/kernel_modules.h"

#include <elf.h>
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "common/io.h"
#include "vm/initramfs.h"
#include "vm/kernel.h"

namespace msb::vm {
namespace {

// An ELF64 relocatable object with a section-name table and a .modinfo
// section holding `modinfo` (NUL-separated key=value entries).
std::string FakeModule(const std::string& modinfo) {
  const std::string names = std::string("\0.shstrtab\0.modinfo\0", 20);
  Elf64_Ehdr eh{};
  std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS64;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_ident[EI_VERSION] = EV_CURRENT;
  eh.e_type = ET_REL;
  eh.e_machine = EM_X86_64;
  eh.e_ehsize = sizeof eh;
  eh.e_shentsize = sizeof(Elf64_Shdr);
  eh.e_shnum = 3;
  eh.e_shstrndx = 1;
  const uint64_t names_off = sizeof eh;
  const uint64_t info_off = names_off + names.size();
  eh.e_shoff = info_off + modinfo.size();
  Elf64_Shdr sh[3]{};
  sh[1].sh_name = 1;
  sh[1].sh_type = SHT_STRTAB;
  sh[1].sh_offset = names_off;
  sh[1].sh_size = names.size();
  sh[2].sh_name = 11;
  sh[2].sh_type = SHT_PROGBITS;
  sh[2].sh_offset = info_off;
  sh[2].sh_size = modinfo.size();
  std::string out(reinterpret_cast<const char*>(&eh), sizeof eh);
  out += names;
  out += modinfo;
  out.append(reinterpret_cast<const char*>(sh), sizeof sh);
  return out;
}

std::string Info(const std::string& depends) {
  return std::string("license=GPL") + '\0' + "depends=" + depends + '\0' + "vermagic=6.1" + '\0';
}

class ModulesDir : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/msb-modules-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void Add(const std::string& rel, const std::string& depends) {
    std::filesystem::create_directories(std::filesystem::path(dir_ + "/" + rel).parent_path());
    ASSERT_TRUE(WriteFileAtomic(dir_ + "/" + rel, FakeModule(Info(depends))).ok());
  }
  std::vector<std::string> Names(const std::vector<std::string>& paths) {
    std::vector<std::string> out;
    for (const auto& p : paths) out.push_back(std::filesystem::path(p).stem().string());
    return out;
  }
  std::string dir_;
};

TEST(ModuleDepends, ReadsTheDependsEntry) {
  auto d = ModuleDepends(FakeModule(Info("virtio,virtio_ring,net-failover")), "m.ko");
  ASSERT_TRUE(d.ok()) << d.error().message();
  EXPECT_EQ(*d, (std::vector<std::string>{"virtio", "virtio_ring", "net_failover"}));
  auto none = ModuleDepends(FakeModule(Info("")), "m.ko");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TEST(ModuleDepends, RejectsWhatIsNotAModuleNamingTheFile) {
  for (const std::string& bad : {std::string("not an elf file at all, but long enough to have a header in it......"),
                                 std::string("\x7f" "ELF"), std::string()}) {
    auto d = ModuleDepends(bad, "/x/bad.ko");
    ASSERT_FALSE(d.ok());
    EXPECT_NE(d.error().message().find("/x/bad.ko"), std::string::npos) << d.error().message();
  }
  std::string no_modinfo = FakeModule(Info("a"));
  // Rename the section: ".modinfo" -> ".modinfX".
  no_modinfo[sizeof(Elf64_Ehdr) + 18] = 'X';
  auto d = ModuleDepends(no_modinfo, "m.ko");
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.error().message().find("no .modinfo"), std::string::npos);
}

// Any truncation or corruption of a module gives an answer or an error, never
// a read outside the bytes (run under ASan in the sanitizer build).
RC_GTEST_PROP(ModuleDepends, CorruptedInputIsBounded, (unsigned cut, unsigned flip, uint8_t value)) {
  std::string m = FakeModule(Info("virtio,virtio_ring"));
  m[flip % m.size()] = static_cast<char>(value);
  m.resize(cut % (m.size() + 1));
  auto d = ModuleDepends(m, "m.ko");
  if (d.ok()) RC_ASSERT(d->size() <= m.size());
}

TEST_F(ModulesDir, DependenciesComeFirstEachOnce) {
  Add("kernel/drivers/virtio/virtio_ring.ko", "");
  Add("kernel/drivers/virtio/virtio.ko", "virtio_ring");
  Add("kernel/drivers/virtio/virtio_mmio.ko", "virtio,virtio_ring");
  Add("kernel/drivers/char/hw_random/virtio-rng.ko", "virtio,virtio_ring");
  Add("kernel/fs/fuse/fuse.ko", "");
  Add("kernel/fs/fuse/virtiofs.ko", "fuse,virtio,virtio_ring");
  Add("kernel/fs/unused.ko", "");
  auto order = ModuleLoadOrder(dir_, {"virtio_mmio", "virtio_rng", "virtiofs"});
  ASSERT_TRUE(order.ok()) << order.error().message();
  EXPECT_EQ(Names(*order),
            (std::vector<std::string>{"virtio_ring", "virtio", "virtio_mmio", "virtio-rng", "fuse", "virtiofs"}));
}

TEST_F(ModulesDir, AMissingModuleOrACycleIsNamed) {
  Add("a.ko", "b");
  auto missing = ModuleLoadOrder(dir_, {"a"});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().message(), "kernel module b (needed by a) is not in " + dir_);
  Add("b.ko", "c");
  Add("c.ko", "a");
  auto cycle = ModuleLoadOrder(dir_, {"a"});
  ASSERT_FALSE(cycle.ok());
  EXPECT_NE(cycle.error().message().find("cycle through a"), std::string::npos) << cycle.error().message();
}

// With no tuned kernel in $MSB_HOME, a fetched Debian kernel is found with
// the guest's modules in load order; they land in the initramfs by position.
TEST_F(ModulesDir, FindGuestKernelFallsBackToAFetchedDebianKernel) {
  const std::string v = "6.1.0-99-cloud-amd64";
  const std::string root = dir_ + "/home/kernels/debian/" + v;
  std::filesystem::create_directories(root + "/boot");
  ASSERT_TRUE(WriteFileAtomic(root + "/boot/vmlinuz-" + v, "kernel").ok());
  const std::string mods = root + "/lib/modules/" + v + "/kernel";
  std::filesystem::create_directories(mods);
  for (const char* m : kGuestModules) {
    std::string dep = std::string(m) == "erofs" ? "libcrc32c" : "";
    std::filesystem::path p(mods + "/" + m + ".ko");
    ASSERT_TRUE(WriteFileAtomic(p.string(), FakeModule(Info(dep))).ok());
  }
  ASSERT_TRUE(WriteFileAtomic(mods + "/libcrc32c.ko", FakeModule(Info(""))).ok());
  ::setenv("MSB_HOME", (dir_ + "/home").c_str(), 1);
  ::unsetenv("MSB_KERNEL");
  auto k = FindGuestKernel();
  ::unsetenv("MSB_HOME");
  ASSERT_TRUE(k.ok()) << k.error().message();
  EXPECT_EQ(k->image, root + "/boot/vmlinuz-" + v);
  EXPECT_EQ(k->debian_version, v);
  ASSERT_EQ(k->modules.size(), std::size(kGuestModules) + 1);
  auto names = Names(k->modules);
  auto pos = [&](const std::string& n) { return std::find(names.begin(), names.end(), n) - names.begin(); };
  const auto absent = static_cast<ptrdiff_t>(names.size());
  ASSERT_NE(pos("erofs"), absent);  // else "before erofs" would hold of anything
  EXPECT_LT(pos("libcrc32c"), pos("erofs"));
}

}  // namespace
}  // namespace msb::vm
