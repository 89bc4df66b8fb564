// libFuzzer target for the Sandboxfile loader (schema/sandboxfile.h): any
// input either loads or yields diagnostics, never a crash; and whatever loads
// survives the round trip through its canonical YAML with the same canonical
// JSON and config hashes. Not a test of which inputs are accepted.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "schema/sandboxfile.h"

namespace {

[[noreturn]] void Die(const char* what, const std::string& detail) {
  std::fprintf(stderr, "sandboxfile_fuzz: %s\n%s\n", what, detail.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace msb::schema;
  if (size > 64 * 1024) return 0;
  static const Env env = {{"HOME", "/home/fuzz"}, {"TAG", "v1"}, {"EMPTY", ""}};
  std::string_view text(reinterpret_cast<const char*>(data), size);
  Diagnostics diags;
  ParseOptions options;
  options.diagnostics = &diags;
  auto project = ParseSandboxfile(text, "/fuzz/Sandboxfile", env, options);
  if (!project.ok()) {
    if (diags.ErrorCount() == 0) Die("failed without an error diagnostic", project.error().message());
    return 0;
  }
  std::string yaml = CanonicalYaml(*project);
  auto again = ParseSandboxfile(yaml, "/elsewhere/Sandboxfile", env);
  if (!again.ok()) Die("canonical YAML does not load", yaml + "\n" + again.error().message());
  if (CanonicalJson(*again) != CanonicalJson(*project)) {
    Die("canonical YAML loads to another model", yaml);
  }
  for (const auto& [name, sb] : project->sandboxes) {
    if (ConfigHash(again->sandboxes.at(name)) != ConfigHash(sb)) Die("config hash changed", yaml);
  }
  return 0;
}
