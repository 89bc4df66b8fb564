// Registries as docker users have them, through the real `msb pull` and
// `msb login` against a real docker-registry on 127.0.0.1: credential helpers
// (shell scripts on PATH) named by credHelpers and credsStore, a certs.d
// directory with the registry's CA and a client certificate, HTTP proxies
// (tests/support/recording_proxy.py) for TLS and plain HTTP, NO_PROXY, and
// a name with a silent IPv6 address beside a working IPv4 one. Names resolve
// through a hosts file named by CARES_HOSTS, to loopback addresses only.
// Every run has MSB_LOG=debug; no secret may show in its output or under
// MSB_HOME.
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <map>

#include "common/base64.h"
#include "common/child.h"
#include "common/fd.h"
#include "common/io.h"
#include "tests/support/registry_server.h"

namespace msb::image {
namespace {

using msb::testing::RegistryMode;
using msb::testing::RegistryServer;
using msb::testing::RegistryServerOptions;

constexpr char kProxySecret[] = "proxy-pass-7x9";

struct MsbRun {
  int code = -1;
  std::string out;
  std::string err;
};

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

class DockerWaysTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/msb-docker-ways-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    home_ = dir_ + "/msb-home";
    bin_ = dir_ + "/bin";
    certs_d_ = dir_ + "/certs.d";
    docker_dir_ = dir_ + "/docker";
    for (const auto& d : {home_, bin_, certs_d_, docker_dir_}) ASSERT_TRUE(MakeDirs(d).ok());
    auto layout = msb::testing::CachedTestLayout("1.0");
    ASSERT_TRUE(layout.ok()) << layout.error().message();
    layout_ = *layout;
    ASSERT_TRUE(WriteFileAtomic(dir_ + "/hosts", "").ok());
  }
  void TearDown() override {
    proxy_.reset();
    registries_.clear();
    std::filesystem::remove_all(dir_);
  }

  RegistryServer& StartRegistry(RegistryMode mode, const RegistryServerOptions& options = {}) {
    auto r = RegistryServer::Start(mode, dir_ + "/reg" + std::to_string(registries_.size()), options);
    MSB_CHECK(r.ok(), r.error().message());
    auto pushed = (*r)->Push(layout_, "1.0", "team/api:1.0");
    MSB_CHECK(pushed.ok(), pushed.error().message());
    registries_.push_back(std::move(*r));
    return *registries_.back();
  }

  void DockerConfig(const std::string& json) { ASSERT_TRUE(WriteFileAtomic(docker_dir_ + "/config.json", json).ok()); }
  static std::string AuthEntry(const std::string& user, const std::string& pass) {
    return R"({"auth": ")" + Base64Encode(user + ":" + pass) + R"("})";
  }
  void Hosts(const std::string& text) { ASSERT_TRUE(WriteFileAtomic(dir_ + "/hosts", text).ok()); }
  void Script(const std::string& name, const std::string& body) {
    ASSERT_TRUE(WriteFileAtomic(bin_ + "/" + name, "#!/bin/sh\n" + body + "\n", 0755).ok());
  }
  std::string Text(const std::string& path) {
    auto t = ReadFile(path);
    return t.ok() ? *t : "";
  }

  // Starts the recording proxy; with auth, it demands puser:kProxySecret.
  int StartProxy(bool auth) {
    std::vector<std::string> argv = {"python3", std::string(MSB_TEST_SOURCE_DIR) + "/tests/support/recording_proxy.py",
                                     "--log", dir_ + "/proxy.log"};
    if (auth) {
      MSB_CHECK(WriteFileAtomic(dir_ + "/proxy.auth", "Basic " + Base64Encode(std::string("puser:") + kProxySecret))
                    .ok(),
                "proxy.auth");
      argv.push_back("--auth");
      argv.push_back(dir_ + "/proxy.auth");
    }
    int p[2];
    MSB_CHECK(::pipe2(p, O_CLOEXEC) == 0, "pipe2");
    UniqueFd rd(p[0]), wr(p[1]);
    SpawnOptions so;
    so.argv = argv;
    so.stdout_fd = wr.get();
    so.parent_death_signal = SIGKILL;
    auto child = ChildProcess::Spawn(so);
    MSB_CHECK(child.ok(), "python3 recording_proxy.py");
    proxy_ = std::make_unique<ChildProcess>(std::move(*child));
    wr.Reset();
    std::string line;
    while (line.find('\n') == std::string::npos) {
      pollfd pf{rd.get(), POLLIN, 0};
      MSB_CHECK(::poll(&pf, 1, 20000) == 1, "the proxy did not say its port within 20 s");
      char buf[64];
      ssize_t n = ::read(rd.get(), buf, sizeof buf);
      MSB_CHECK(n > 0, "the proxy exited before saying its port");
      line.append(buf, static_cast<size_t>(n));
    }
    return std::stoi(line.substr(5));
  }
  std::string ProxyLog() { return Text(dir_ + "/proxy.log"); }

  // Runs build/bin/msb with a fresh environment: this test's PATH entry
  // first, its homes, certs.d, hosts file, MSB_LOG=debug, plus extra.
  MsbRun Msb(const std::vector<std::string>& args, const std::map<std::string, std::string>& extra = {},
             const std::string& stdin_text = "") {
    std::map<std::string, std::string> env = {
        {"PATH", bin_ + ":" + std::string(std::getenv("PATH") ? std::getenv("PATH") : "/usr/bin:/bin")},
        {"HOME", dir_},
        {"MSB_HOME", home_},
        {"DOCKER_CONFIG", docker_dir_},
        {"MSB_DOCKER_CERTS_D", certs_d_},
        {"CARES_HOSTS", dir_ + "/hosts"},
        {"MSB_LOG", "debug"}};
    for (const auto& [k, v] : extra) env[k] = v;
    SpawnOptions so;
    so.argv = {std::string(MSB_TEST_BUILD_DIR) + "/bin/msb"};
    so.argv.insert(so.argv.end(), args.begin(), args.end());
    so.env = std::vector<std::string>();
    for (const auto& [k, v] : env) so.env->push_back(k + "=" + v);
    MSB_CHECK(WriteFileAtomic(dir_ + "/stdin", stdin_text).ok(), "stdin");
    UniqueFd in(::open((dir_ + "/stdin").c_str(), O_RDONLY | O_CLOEXEC));
    UniqueFd out(::open((dir_ + "/out").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    UniqueFd err(::open((dir_ + "/err").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    so.stdin_fd = in.get();
    so.stdout_fd = out.get();
    so.stderr_fd = err.get();
    so.parent_death_signal = SIGKILL;
    auto child = ChildProcess::Spawn(so);
    MSB_CHECK(child.ok(), "spawning msb");
    UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, child->pid(), 0)));
    pollfd pf{pidfd.get(), POLLIN, 0};
    int ready = ::poll(&pf, 1, 120000);
    EXPECT_EQ(ready, 1) << "msb did not finish within 120 s";
    MsbRun r;
    r.code = child->Wait().ShellCode();
    r.out = Text(dir_ + "/out");
    r.err = Text(dir_ + "/err");
    return r;
  }

  // No secret in a run's output or in any file under MSB_HOME. The runs
  // checked this way are not -q: progress output is output too.
  void ExpectNoSecret(const MsbRun& r, const std::string& secret) {
    EXPECT_EQ(r.out.find(secret), std::string::npos) << r.out;
    EXPECT_EQ(r.err.find(secret), std::string::npos) << r.err;
    size_t searched = 0;
    for (const auto& e : std::filesystem::recursive_directory_iterator(home_)) {
      if (!e.is_regular_file() || e.file_size() > (64 << 20)) continue;
      EXPECT_EQ(Text(e.path().string()).find(secret), std::string::npos) << e.path();
      ++searched;
    }
    EXPECT_GT(searched, 0u) << "no file under " << home_ << " to search";
  }

  std::string Ca(const RegistryServer& r, const std::string& name = "") {
    return "--registry-ca=" + (name.empty() ? r.host_port() : name) + "=" + r.ca_file();
  }

  std::string dir_, home_, bin_, certs_d_, docker_dir_, layout_;
  std::vector<std::unique_ptr<RegistryServer>> registries_;
  std::unique_ptr<ChildProcess> proxy_;
};

TEST_F(DockerWaysTest, CredentialHelpersFeedPullsAndLoginStoresThroughThem) {
  RegistryServer& reg = StartRegistry(RegistryMode::kTlsBasic);
  const std::string hp = reg.host_port(), ref = hp + "/team/api:1.0", secret = reg.password();
  // The per-host helper knows this registry; the store helper keeps what
  // `store` gave it; the broken one fails the way a locked keychain does.
  Script("docker-credential-msbtest-host",
         "in=$(cat)\nprintf '%s|%s\\n' \"$*\" \"$in\" >> " + dir_ + "/host.calls\n"
         "if [ \"$1\" = get ] && [ \"$in\" = '" + hp + "' ]; then\n"
         "  printf '{\"ServerURL\":\"%s\",\"Username\":\"" + reg.username() + "\",\"Secret\":\"" + secret +
             "\"}' \"$in\"; exit 0\nfi\n"
         "echo 'credentials not found in native keychain'; exit 1");
  Script("docker-credential-msbtest-store",
         "in=$(cat)\ncase \"$1\" in\n"
         "  store) printf 'store|\\n' >> " + dir_ + "/store.calls; printf '%s' \"$in\" > " + dir_ + "/store.json ;;\n"
         "  get) printf 'get|%s\\n' \"$in\" >> " + dir_ + "/store.calls\n"
         "       if [ -f " + dir_ + "/store.json ]; then cat " + dir_ + "/store.json; exit 0; fi\n"
         "       echo 'credentials not found in native keychain'; exit 1 ;;\n"
         "  erase) printf 'erase|%s\\n' \"$in\" >> " + dir_ + "/store.calls; rm -f " + dir_ + "/store.json ;;\n"
         "esac");
  Script("docker-credential-msbtest-broken", "cat >/dev/null; echo 'the keychain is locked' >&2; exit 2");

  // credHelpers for the host wins over credsStore.
  DockerConfig(R"({"credsStore": "msbtest-store", "credHelpers": {")" + hp + R"(": "msbtest-host"}})");
  auto pulled = Msb({"pull", "--no-unpack", Ca(reg), ref});
  EXPECT_EQ(pulled.code, 0) << pulled.err;
  EXPECT_EQ(Text(dir_ + "/host.calls"), "get|" + hp + "\n");  // argv: the verb; stdin: the server
  EXPECT_EQ(Text(dir_ + "/store.calls"), "");
  ExpectNoSecret(pulled, secret);

  // credsStore without an entry: anonymous, which this registry refuses.
  DockerConfig(R"({"credsStore": "msbtest-store", "auths": {")" + hp + R"(": )" + AuthEntry("x", "not-used") + "}}");
  auto anonymous = Msb({"pull", "-q", "--no-unpack", Ca(reg), ref});
  EXPECT_EQ(anonymous.code, 1);
  EXPECT_NE(anonymous.err.find("requires credentials"), std::string::npos) << anonymous.err;
  EXPECT_NE(anonymous.err.find("msb login " + hp), std::string::npos) << anonymous.err;
  EXPECT_EQ(Text(dir_ + "/store.calls"), "get|" + hp + "\n");

  // msb login stores through the helper, as docker login does; pulls get it back.
  auto login = Msb({"login", hp, "-u", reg.username(), "--password-stdin", Ca(reg)}, {}, secret + "\n");
  ASSERT_EQ(login.code, 0) << login.err;
  EXPECT_NE(login.out.find("credentials in docker-credential-msbtest-store"), std::string::npos) << login.out;
  EXPECT_EQ(Text(dir_ + "/store.json"),
            R"({"Secret":")" + secret + R"(","ServerURL":")" + hp + R"(","Username":")" + reg.username() + R"("})");
  ExpectNoSecret(login, secret);
  auto again = Msb({"pull", "--no-unpack", Ca(reg), ref});
  EXPECT_EQ(again.code, 0) << again.err;
  ExpectNoSecret(again, secret);
  auto logout = Msb({"logout", hp});
  EXPECT_EQ(logout.code, 0) << logout.err;
  EXPECT_NE(::access((dir_ + "/store.json").c_str(), F_OK), 0);
  EXPECT_EQ(Text(dir_ + "/store.calls"), "get|" + hp + "\nstore|\nget|" + hp + "\nerase|" + hp + "\n");

  // A failing helper: the error names it and the registry, and says what to do.
  DockerConfig(R"({"credsStore": "msbtest-broken"})");
  auto broken = Msb({"pull", "-q", "--no-unpack", Ca(reg), ref});
  EXPECT_EQ(broken.code, 1);
  EXPECT_NE(broken.err.find("docker-credential-msbtest-broken"), std::string::npos) << broken.err;
  EXPECT_NE(broken.err.find("registry " + hp), std::string::npos) << broken.err;
  EXPECT_NE(broken.err.find("the keychain is locked"), std::string::npos) << broken.err;
}

TEST_F(DockerWaysTest, CertsDirectoryTrustsTheRegistrysCaAndHoldsTheClientCertificate) {
  RegistryServer& reg = StartRegistry(RegistryMode::kTlsBasic);
  RegistryServer& mtls = StartRegistry(RegistryMode::kTlsBasic, RegistryServerOptions{{}, true});
  DockerConfig(R"({"auths": {")" + reg.host_port() + R"(": )" + AuthEntry(reg.username(), reg.password()) + R"(, ")" +
               mtls.host_port() + R"(": )" + AuthEntry(mtls.username(), mtls.password()) + "}}");
  std::string ref = reg.host_port() + "/team/api:1.0";

  auto untrusted = Msb({"pull", "-q", "--no-unpack", ref});
  EXPECT_EQ(untrusted.code, 1);
  EXPECT_NE(untrusted.err.find("TLS verification of " + reg.host_port() + " failed"), std::string::npos)
      << untrusted.err;
  EXPECT_NE(untrusted.err.find(certs_d_ + "/" + reg.host_port() + "/ca.crt"), std::string::npos) << untrusted.err;

  std::string dir = certs_d_ + "/" + reg.host_port();
  ASSERT_TRUE(MakeDirs(dir).ok());
  std::filesystem::copy_file(reg.ca_file(), dir + "/ca.crt");
  auto trusted = Msb({"pull", "-q", "--no-unpack", ref});
  EXPECT_EQ(trusted.code, 0) << trusted.err;

  // The registry that wants a client certificate: the CA alone is not enough.
  std::string mref = mtls.host_port() + "/team/api:1.0";
  std::string mdir = certs_d_ + "/" + mtls.host_port();
  ASSERT_TRUE(MakeDirs(mdir).ok());
  std::filesystem::copy_file(mtls.ca_file(), mdir + "/ca.crt");
  auto no_client = Msb({"pull", "-q", "--no-unpack", mref});
  EXPECT_EQ(no_client.code, 1);
  EXPECT_NE(no_client.err.find(mtls.host_port()), std::string::npos) << no_client.err;
  std::filesystem::copy_file(mtls.cert_dir() + "/client.key", mdir + "/client.key");
  auto key_only = Msb({"pull", "-q", "--no-unpack", mref});
  EXPECT_EQ(key_only.code, 1);
  EXPECT_NE(key_only.err.find(mdir + "/client.key has no client.cert beside it"), std::string::npos) << key_only.err;
  std::filesystem::copy_file(mtls.cert_dir() + "/client.cert", mdir + "/client.cert");
  auto with_client = Msb({"pull", "-q", "--no-unpack", mref});
  EXPECT_EQ(with_client.code, 0) << with_client.err;
}

TEST_F(DockerWaysTest, ProxiesCarryTlsThroughConnectAndPlainHttpInAbsoluteForm) {
  RegistryServer& reg = StartRegistry(RegistryMode::kTlsBasic, RegistryServerOptions{{"registry.msb.test"}, false});
  RegistryServer& plain = StartRegistry(RegistryMode::kPlain);
  Hosts("127.0.0.1 registry.msb.test\n");
  const std::string name = "registry.msb.test:" + std::to_string(reg.port());
  const std::string plain_name = "registry.msb.test:" + std::to_string(plain.port());
  DockerConfig(R"({"auths": {")" + name + R"(": )" + AuthEntry(reg.username(), reg.password()) + R"(, ")" +
               reg.host_port() + R"(": )" + AuthEntry(reg.username(), reg.password()) + "}}");
  int port = StartProxy(true);
  std::string proxy = "http://puser:" + std::string(kProxySecret) + "@127.0.0.1:" + std::to_string(port);
  std::string ref = name + "/team/api:1.0";

  // TLS: one CONNECT per connection, each with the proxy's credentials; the
  // proxy sees no request inside the tunnel.
  auto tunnelled = Msb({"pull", "--no-unpack", Ca(reg, name), ref}, {{"HTTPS_PROXY", proxy}});
  EXPECT_EQ(tunnelled.code, 0) << tunnelled.err;
  std::string log = ProxyLog();
  EXPECT_GE(Count(log, "CONNECT " + name + " auth=ok\n"), 1u) << log;
  EXPECT_EQ(Count(log, "\n"), Count(log, "CONNECT " + name + " auth=ok\n")) << log;
  ExpectNoSecret(tunnelled, kProxySecret);
  ExpectNoSecret(tunnelled, reg.password());

  // Wrong proxy credentials: the proxy's refusal, without the password.
  std::string wrong = "http://puser:wrong-pass-3q@127.0.0.1:" + std::to_string(port);
  auto refused = Msb({"pull", "--no-unpack", Ca(reg, name), ref}, {{"https_proxy", wrong}});
  EXPECT_EQ(refused.code, 1);
  EXPECT_NE(refused.err.find("refused the credentials in https_proxy (HTTP 407)"), std::string::npos) << refused.err;
  ExpectNoSecret(refused, "wrong-pass-3q");
  EXPECT_NE(ProxyLog().find("auth=bad"), std::string::npos);

  // NO_PROXY by domain suffix, and a loopback literal as docker treats it:
  // straight to the registry, nothing through the proxy.
  size_t lines = Count(ProxyLog(), "\n");
  auto direct = Msb({"pull", "-q", "--no-unpack", Ca(reg, name), ref}, {{"HTTPS_PROXY", proxy}, {"NO_PROXY", ".msb.test"}});
  EXPECT_EQ(direct.code, 0) << direct.err;
  auto loopback = Msb({"pull", "-q", "--no-unpack", Ca(reg), reg.host_port() + "/team/api:1.0"},
                      {{"HTTPS_PROXY", proxy}});
  EXPECT_EQ(loopback.code, 0) << loopback.err;
  EXPECT_EQ(Count(ProxyLog(), "\n"), lines) << ProxyLog();
  // Not silently: the debug log says why each went direct.
  EXPECT_NE(direct.err.find("https://" + name + " directly, not through the proxy: NO_PROXY lists it"),
            std::string::npos)
      << direct.err;
  EXPECT_NE(loopback.err.find("https://" + reg.host_port() + " directly, not through the proxy: a loopback host"),
            std::string::npos)
      << loopback.err;

  // Plain HTTP: absolute-form requests for the manifest and the blobs (into
  // an empty image store, so that every blob is fetched).
  auto http = Msb({"pull", "--no-unpack", "--insecure-registry", plain_name, plain_name + "/team/api:1.0"},
                  {{"HTTP_PROXY", proxy}, {"MSB_HOME", dir_ + "/msb-home-plain"}});
  EXPECT_EQ(http.code, 0) << http.err;
  log = ProxyLog();
  EXPECT_NE(log.find("GET http://" + plain_name + "/v2/team/api/manifests/1.0 auth=ok\n"), std::string::npos) << log;
  EXPECT_GE(Count(log, "GET http://" + plain_name + "/v2/team/api/blobs/sha256:"), 4u) << log;  // config, 3 layers
  EXPECT_EQ(Count(log, "CONNECT"), Count(log, "CONNECT " + name));
  ExpectNoSecret(http, kProxySecret);
}

// A listener on [::1]:port that never completes a handshake: backlog 0 and
// one connection queued, so the kernel drops further SYNs.
struct SilentIpv6 {
  UniqueFd listener, filler;
  explicit SilentIpv6(int port) {
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(static_cast<uint16_t>(port));
    a.sin6_addr = in6addr_loopback;
    listener.Reset(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
    int one = 1;
    setsockopt(listener.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    MSB_CHECK(::bind(listener.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0, "bind [::1]");
    MSB_CHECK(::listen(listener.get(), 0) == 0, "listen");
    filler.Reset(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
    MSB_CHECK(::connect(filler.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0, "connect [::1]");
  }
};

TEST_F(DockerWaysTest, ANameWithASilentIpv6AddressIsPulledThroughItsIpv4One) {
  RegistryServer& reg = StartRegistry(RegistryMode::kTlsBasic, RegistryServerOptions{{"dual.msb.test"}, false});
  SilentIpv6 silent(reg.port());
  Hosts("::1 dual.msb.test\n127.0.0.1 dual.msb.test\n");
  const std::string name = "dual.msb.test:" + std::to_string(reg.port());
  DockerConfig(R"({"auths": {")" + name + R"(": )" + AuthEntry(reg.username(), reg.password()) + "}}");
  auto pulled = Msb({"pull", "--no-unpack", Ca(reg, name), name + "/team/api:1.0"});
  ASSERT_EQ(pulled.code, 0) << pulled.err;
  // Every connection: IPv6 first, IPv4 started while it is still pending,
  // IPv4 wins, the IPv6 attempt is closed.
  const std::string& e = pulled.err;
  std::string v6 = "connect " + name + " via ::1: ", v4 = "connect " + name + " via 127.0.0.1: ";
  size_t a6 = e.find(v6 + "attempt"), a4 = e.find(v4 + "attempt"), c4 = e.find(v4 + "connected"),
         x6 = e.find(v6 + "abandoned");
  ASSERT_NE(a6, std::string::npos) << e;
  ASSERT_NE(a4, std::string::npos) << e;
  ASSERT_NE(c4, std::string::npos) << e;
  ASSERT_NE(x6, std::string::npos) << e;
  EXPECT_LT(a6, a4);
  EXPECT_LT(a4, c4);
  EXPECT_LT(c4, x6);
  EXPECT_EQ(Count(e, v6 + "connected"), 0u) << e;
  EXPECT_EQ(Count(e, v6 + "failed"), 0u) << e;
  EXPECT_GE(Count(e, v4 + "connected"), 1u);
  EXPECT_EQ(Count(e, v6 + "attempt"), Count(e, v6 + "abandoned")) << e;
}

}  // namespace
}  // namespace msb::image
