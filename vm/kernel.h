// The guest kernel: built once from Debian's linux-source-6.1 with the
// checked-in fragment vm/kernel.config (embedded in msb at build time) and
// cached by content under $MSB_HOME/kernels/<key>/. Not the VM launcher: how
// the image is booted is the supervisor's business.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace msb::vm {

inline constexpr char kKernelSourcePackage[] = "linux-source-6.1";
inline constexpr char kKernelSourceTarball[] = "/usr/src/linux-source-6.1.tar.xz";
// Environment variable naming a user's own kernel image; overrides the cache.
inline constexpr char kKernelEnv[] = "MSB_KERNEL";
// With kKernelEnv: the modules directory of that kernel (lib/modules/VERSION)
// when it is modular; the modules the guest needs go into the initramfs.
inline constexpr char kKernelModulesEnv[] = "MSB_KERNEL_MODULES";
// What FindKernel reports when nothing is built (and `msb kernel path` prints).
inline constexpr char kNoKernelMessage[] =
    "no guest kernel found; build it with: msb kernel build";

// The config fragment compiled into this binary (the bytes of vm/kernel.config).
std::string_view KernelConfigFragment();

// The cache key: sha256 (hex) over the source package version and the
// fragment's bytes. Any change of either gives a new key.
std::string KernelCacheKey(std::string_view source_version, std::string_view fragment);

// The installed version of linux-source-6.1 (dpkg-query), e.g. "6.1.192-2".
Result<std::string> KernelSourceVersion();

// $MSB_HOME/kernels.
std::string KernelsDir();

// Checks that every `CONFIG_X=v` and `# CONFIG_X is not set` line of fragment
// holds in dot_config (a .config after olddefconfig). The error names each
// option that Kconfig dropped or changed, usually an unmet dependency.
Status CheckKernelConfig(std::string_view fragment, std::string_view dot_config);

// The kernel image to boot: $MSB_KERNEL when set (it must exist), else the
// cached build for the current key. The error says to run `msb kernel build`.
Result<std::string> FindKernel();

// A kernel Debian ships, fetched (never installed on the host) by
// scripts/fetch-debian-kernel into $MSB_HOME/kernels/debian/<version>/ as the
// package's boot/vmlinuz-<version> and lib/modules/<version>/. It boots the
// first sandboxes while the tuned kernel builds (about 1 s slower per boot).
std::string DebianKernelsDir();

// The kernel a VM boots and the modules it needs loaded before agentd
// mounts anything (empty for the tuned kernel and for $MSB_KERNEL).
struct GuestKernel {
  std::string image;
  std::vector<std::string> modules;  // host paths, dependencies first
  std::string debian_version;        // set when it is Debian's kernel
};

// FindKernel's kernel (with the modules under $MSB_KERNEL_MODULES when that
// and $MSB_KERNEL are set) when there is one, else Debian's kernel from
// DebianKernelsDir() with the modules of kGuestModules (vm/kernel_modules.h),
// else FindKernel's error.
Result<GuestKernel> FindGuestKernel();

// The host's TSC frequency in kHz, measured against CLOCK_MONOTONIC_RAW over
// ~20 ms (x86-64 only).
Result<long> HostTscKhz();

// "tsc_early_khz=<host TSC kHz>" for the guest's command line, or "" when it
// cannot be measured. Under TCG the guest TSC ticks at the host's rate, but the
// guest's own calibration against the emulated PIT fails when the host is busy
// and the boot then hangs after "tsc: Marking TSC unstable"; giving the
// frequency skips that calibration. Harmless under KVM (same rate, kvmclock).
std::string TscKernelArg();

using ProgressFn = std::function<void(std::string_view line)>;

struct KernelBuildOptions {
  int jobs = 0;           // make -j; 0 means the number of CPUs
  ProgressFn progress;    // one line per step; may be empty
};

// Builds (or finds cached) the kernel and returns the image path. Idempotent
// and atomic: the build happens in $MSB_HOME/kernels/.build-<key>-*/ and is
// renamed into place only when complete; concurrent callers serialise on a
// lock file. Build output goes to $MSB_HOME/kernels/build-<key>.log; on
// failure the error carries its last lines.
Result<std::string> BuildKernel(const KernelBuildOptions& options = {});

}  // namespace msb::vm
