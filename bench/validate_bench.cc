// msb_validate_bench FILE [RUNS]: times msb's whole Sandboxfile pipeline
// (parse, validate, canonical JSON) against yaml-cpp's bare YAML::Load of the
// same text, interleaved in one process so both see the same machine load.
// Prints medians and, on the last line, "ratio R (target <= 2)". Not a test.
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/io.h"
#include "schema/sandboxfile.h"

namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <typename F>
double TimeMs(F&& f) {
  auto start = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s FILE [RUNS]\n", argv[0]);
    return 2;
  }
  std::string path = argv[1];
  int runs = argc > 2 ? std::atoi(argv[2]) : 30;
  auto text = msb::ReadFile(path);
  if (!text.ok()) {
    std::fprintf(stderr, "%s\n", text.error().message().c_str());
    return 1;
  }
  msb::schema::Env env;
  size_t sink = 0;
  auto bare = [&] {
    YAML::Node n = YAML::Load(*text);
    sink += n.size();
  };
  auto ours = [&] {
    auto project = msb::schema::ParseSandboxfile(*text, path, env);
    if (!project.ok()) {
      std::fprintf(stderr, "%s\n", project.error().message().c_str());
      std::exit(1);
    }
    sink += msb::schema::CanonicalJson(*project).size();
  };
  for (int i = 0; i < 3; ++i) {  // warm-up
    bare();
    ours();
  }
  std::vector<double> t_bare, t_ours, t_hash;
  auto project = msb::schema::ParseSandboxfile(*text, path, env);
  for (int i = 0; i < runs; ++i) {
    t_bare.push_back(TimeMs(bare));
    t_ours.push_back(TimeMs(ours));
    t_hash.push_back(TimeMs([&] {
      for (const auto& [name, sb] : project->sandboxes) sink += msb::schema::ConfigHash(sb).size();
    }));
  }
  double b = Median(t_bare), o = Median(t_ours);
  std::printf("sandboxes %zu, %zu bytes, %d runs (medians)\n", project->sandboxes.size(), text->size(), runs);
  std::printf("yaml-cpp YAML::Load           %8.3f ms\n", b);
  std::printf("msb parse+validate+canonical  %8.3f ms\n", o);
  std::printf("msb config hashes (extra)     %8.3f ms\n", Median(t_hash));
  std::printf("(checksum %zu)\n", sink);
  std::printf("ratio %.2f (target <= 2)\n", o / b);
  return 0;
}
