// A stand-in for QEMU in builder VM tests (tests/vm/builder_vm_test.cc): it
// writes its argv to $FAKE_QEMU_ARGV (one argument a line), then does what
// $FAKE_QEMU_MODE says. Not an emulator: no guest runs.
//   exit   complains on stderr and exits with code 3 without connecting;
//   hang   never connects the agent socket;
//   deaf   connects, sends a hello frame and ignores everything after;
//   agent  (default) connects, sends a hello frame, and exits 0 when a
//          shutdown frame arrives (as agentd's reset ends QEMU).
// With $FAKE_QEMU_REPORT set it first writes what it can see of itself to
// stderr: its ids, capabilities, no_new_privs, network namespace, every
// non-directory its root holds outside /proc, /usr and /dev, and whether it
// may write the disks QEMU was given read-only.
// The agent socket is found the way QEMU finds it: the path= value of the
// chardev with id=agent, ",," read as one comma.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "agent/frame.h"
#include "agent/messages.h"

namespace {

std::string AgentSocket(int argc, char** argv) {
  const std::string key = "socket,id=agent,path=";
  for (int i = 1; i + 1 < argc; ++i) {
    std::string v = argv[i + 1];
    if (std::strcmp(argv[i], "-chardev") != 0 || v.rfind(key, 0) != 0) continue;
    std::string path;
    for (size_t j = key.size(); j < v.size(); ++j) {
      if (v[j] == ',') {
        if (j + 1 < v.size() && v[j + 1] == ',') {
          path += ',';
          ++j;
          continue;
        }
        break;  // the next option
      }
      path += v[j];
    }
    return path;
  }
  return "";
}

bool WriteAll(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::write(fd, s.data() + off, s.size() - off);
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

void Report(int argc, char** argv) {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    for (const char* k : {"Uid:", "Gid:", "CapEff:", "CapPrm:", "CapBnd:", "NoNewPrivs:"}) {
      if (line.rfind(k, 0) == 0) std::fprintf(stderr, "%s\n", line.c_str());
    }
  }
  char ns[256] = {};
  if (::readlink("/proc/self/ns/net", ns, sizeof ns - 1) > 0) std::fprintf(stderr, "net %s\n", ns);
  namespace fs = std::filesystem;
  std::error_code ec;
  for (fs::recursive_directory_iterator it("/", fs::directory_options::skip_permission_denied, ec), end;
       !ec && it != end; it.increment(ec)) {
    const std::string p = it->path().string();
    if (p == "/proc" || p == "/usr" || p == "/dev") {
      it.disable_recursion_pending();
      continue;
    }
    std::error_code e2;
    if (!it->is_directory(e2) && !it->is_symlink(e2)) std::fprintf(stderr, "file %s\n", p.c_str());
  }
  for (int i = 1; i + 1 < argc; ++i) {
    std::string v = argv[i + 1];
    if (std::strcmp(argv[i], "-drive") != 0 || v.find(",readonly=on") == std::string::npos) continue;
    std::string file;
    for (size_t j = v.find("file=") + 5; j < v.size() && (v[j] != ',' || v[j + 1] == ','); ++j) {
      file += v[j];
      if (v[j] == ',') ++j;  // ",," is one comma
    }
    int fd = ::open(file.c_str(), O_WRONLY);
    std::fprintf(stderr, "write %s %s\n", file.c_str(), fd >= 0 ? "allowed" : std::strerror(errno));
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (const char* out = std::getenv("FAKE_QEMU_ARGV")) {
    if (FILE* f = std::fopen(out, "w")) {
      for (int i = 0; i < argc; ++i) std::fprintf(f, "%s\n", argv[i]);
      std::fclose(f);
    }
  }
  if (std::getenv("FAKE_QEMU_REPORT") != nullptr) Report(argc, argv);
  const char* m = std::getenv("FAKE_QEMU_MODE");
  const std::string mode = m != nullptr ? m : "agent";
  if (mode == "exit") {
    std::fprintf(stderr, "fake qemu: refusing to start\n");
    return 3;
  }
  if (mode == "hang") {
    for (;;) ::pause();
  }
  const std::string path = AgentSocket(argc, argv);
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (fd < 0 || path.empty() || path.size() >= sizeof addr.sun_path) return 4;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    std::fprintf(stderr, "fake qemu: cannot connect %s\n", path.c_str());
    return 5;
  }
  using msb::agent::FrameKind;
  if (!WriteAll(fd, msb::agent::EncodeFrame({msb::agent::kChannelId, FrameKind::kHello,
                                             msb::agent::Encode(msb::agent::Hello{1, "fake"})})))
    return 6;
  msb::agent::FrameReader reader;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return 7;  // the host closed the channel first
    if (mode == "deaf") continue;
    reader.Feed(std::string_view(buf, static_cast<size_t>(n)));
    for (;;) {
      auto f = reader.Next();
      if (!f.ok()) return 8;
      if (!f->has_value()) break;
      if ((*f)->kind == FrameKind::kShutdown) return 0;
    }
  }
}
