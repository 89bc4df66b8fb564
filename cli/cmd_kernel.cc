// msb kernel build / msb kernel path: the CLI face of vm/kernel.h. Not the
// build logic itself.
#include <cstdio>
#include <string>

#include "cli/cli.h"
#include "vm/kernel.h"

namespace msb::cli {

void RegisterKernelCommands(CLI::App& app) {
  CLI::App* kernel = app.add_subcommand("kernel", "Build or locate the guest kernel");
  kernel->require_subcommand(1);

  CLI::App* build = kernel->add_subcommand(
      "build", "Build the guest kernel from linux-source-6.1 (cached; a no-op when built)");
  auto jobs = std::make_shared<int>(0);
  build->add_option("-j,--jobs", *jobs, "Parallel compile jobs (default: number of CPUs)")
      ->check(CLI::NonNegativeNumber);
  OnRun(build, [jobs]() {
    vm::KernelBuildOptions opts;
    opts.jobs = *jobs;
    opts.progress = [](std::string_view line) {
      std::fprintf(stderr, "msb kernel: %.*s\n", static_cast<int>(line.size()), line.data());
    };
    auto path = vm::BuildKernel(opts);
    if (!path.ok()) return Fail(path.error().message());
    std::printf("%s\n", path->c_str());
    return 0;
  });

  CLI::App* path = kernel->add_subcommand(
      "path", "Print the guest kernel image msb boots ($MSB_KERNEL overrides)");
  OnRun(path, []() {
    auto p = vm::FindKernel();
    if (!p.ok()) {
      // The message is the whole answer here: no "msb:" prefix.
      std::fprintf(stderr, "%s\n", p.error().message().c_str());
      return 1;
    }
    std::printf("%s\n", p->c_str());
    return 0;
  });
}

}  // namespace msb::cli
