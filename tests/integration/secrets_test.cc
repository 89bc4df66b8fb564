// Secrets end to end: a Debian guest (curl, python3) under TCG holds only a
// placeholder; HTTPS servers on test hosts in a network namespace (api.test,
// other.test, certificates from a test CA the supervisor trusts through
// network.tls.ca, names answered by a dnsmasq on 127.0.0.1) record every
// request they receive, so where the value went, and where it did not, is
// observed on the wire. The value is then searched for everywhere on the
// host it must not be. Needs root (ip netns).
#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <atomic>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>

#include "common/base64.h"
#include "secrets/ca.h"
#include "tests/integration/harness.h"
#include "tests/integration/test_hosts.h"

namespace msb::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// An HTTPS server on one listening socket: one connection at a time,
// keep-alive requests with Content-Length bodies, each answered 200 with
// "hello from NAME". Everything it decrypted is kept.
class HttpsServer {
 public:
  HttpsServer(std::string name, UniqueFd listener, const secrets::Leaf& leaf)
      : name_(std::move(name)), listener_(std::move(listener)) {
    ctx_.reset(SSL_CTX_new(TLS_server_method()));
    SSL_CTX_use_certificate(ctx_.get(), leaf.certificate.get());
    SSL_CTX_use_PrivateKey(ctx_.get(), leaf.key.get());
    int p[2];
    EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
    stop_r_ = UniqueFd(p[0]);
    stop_w_ = UniqueFd(p[1]);
    thread_ = std::thread([this] { Loop(); });
  }
  ~HttpsServer() {
    (void)!::write(stop_w_.get(), "x", 1);
    thread_.join();
  }
  std::string Received() {
    std::lock_guard<std::mutex> lock(mu_);
    return received_;
  }

 private:
  void Loop() {
    for (;;) {
      pollfd p[2] = {{listener_.get(), POLLIN, 0}, {stop_r_.get(), POLLIN, 0}};
      if (::poll(p, 2, -1) < 0) continue;
      if (p[1].revents) return;
      UniqueFd c(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (c) Serve(c.get());
    }
  }
  void Serve(int fd) {
    timeval tv{20, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    SslPtr ssl(SSL_new(ctx_.get()));
    SSL_set_fd(ssl.get(), fd);
    if (SSL_accept(ssl.get()) != 1) return;
    std::string buf;
    char chunk[8192];
    for (;;) {
      size_t head = buf.find("\r\n\r\n");
      if (head != std::string::npos) {
        size_t cl = 0;
        size_t at = buf.find("\r\nContent-Length: ");
        if (at == std::string::npos) at = buf.find("\r\ncontent-length: ");
        if (at != std::string::npos && at < head) cl = std::stoul(buf.substr(at + 18));
        if (buf.size() >= head + 4 + cl) {
          {
            std::lock_guard<std::mutex> lock(mu_);
            received_ += buf.substr(0, head + 4 + cl) + "\n--\n";
          }
          buf.erase(0, head + 4 + cl);
          std::string body = "hello from " + name_ + "\n";
          std::string resp = "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
          SSL_write(ssl.get(), resp.data(), static_cast<int>(resp.size()));
          continue;
        }
      }
      int n = SSL_read(ssl.get(), chunk, sizeof(chunk));
      if (n <= 0) break;
      buf.append(chunk, static_cast<size_t>(n));
    }
    if (!buf.empty()) {
      std::lock_guard<std::mutex> lock(mu_);
      received_ += buf + "\n--\n";
    }
  }

  std::string name_;
  UniqueFd listener_;
  SslCtxPtr ctx_;
  UniqueFd stop_r_, stop_w_;
  std::mutex mu_;
  std::string received_;
  std::thread thread_;
};

size_t Count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

std::string RandomToken(const std::string& prefix) {
  std::mt19937_64 rng(std::random_device{}());
  return prefix + std::to_string(rng()) + std::to_string(rng());
}

// Every file under dir whose bytes contain needle.
std::vector<std::string> FilesContaining(const std::string& dir, const std::string& needle) {
  std::vector<std::string> found;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    if (!it->is_regular_file(ec)) continue;
    auto data = ReadFile(it->path().string());
    if (data.ok() && data->find(needle) != std::string::npos) found.push_back(it->path().string());
  }
  return found;
}

class SecretsTest : public ProjectTest {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root for network namespaces";
    ProjectTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    auto rootfs = DebianRootfs();
    ASSERT_TRUE(rootfs.ok()) << rootfs.error().message();
    debian_ = *rootfs;
    std::string why;
    ASSERT_TRUE(hosts_.Create(&why)) << why;
    ASSERT_TRUE(dns_.Start({"api.test," + hosts_.Ip(2), "other.test," + hosts_.Ip(3)}, &why)) << why;
    secrets::CertificateAuthority::Options o;
    o.common_name = "msb test upstream CA";
    auto ca = secrets::CertificateAuthority::Create(o, std::chrono::system_clock::now());
    ASSERT_TRUE(ca.ok());
    ca_.emplace(std::move(*ca));
    ca_file_ = project_ + "/upstream-ca.pem";
    ASSERT_TRUE(WriteFileAtomic(ca_file_, ca_->CertificatePem()).ok());
    for (auto [name, ip, server] : {std::tuple{"api.test", hosts_.Ip(2), &api_}, std::tuple{"other.test", hosts_.Ip(3), &other_}}) {
      auto leaf = ca_->LeafFor(name, std::chrono::system_clock::now());
      ASSERT_TRUE(leaf.ok());
      UniqueFd fd = hosts_.Listen(ip, 443, &why);
      ASSERT_TRUE(fd) << why;
      server->emplace(name, std::move(fd), **leaf);
    }
    value_ = RandomToken("tok-VALUE-");
    query_value_ = RandomToken("qv-VALUE-");
    env_["MSB_TEST_API_TOKEN"] = value_;
    query_file_ = project_ + "/query-key.txt";
    ASSERT_TRUE(WriteFileAtomic(query_file_, query_value_ + "\n").ok());
  }

  std::string Sandboxfile() {
    return "name: sec\nsandboxes:\n  box:\n    image: " + debian_ +
           "\n    memory: 256M\n    command: " + std::string(kKeepAliveCommand) + "\n"
           "    network:\n      rules:\n        - allow@api.test:tcp:443\n        - allow@other.test:tcp:443\n"
           // The test hosts are private: their DNS answers pass the rebinding
           // defence only with rules naming their addresses.
           "        - allow@" + hosts_.Ip(2) + ":tcp:443\n        - allow@" + hosts_.Ip(3) + ":tcp:443\n"
           "      dns:\n        servers: [\"127.0.0.1:" + std::to_string(dns_.port()) + "\"]\n"
           "      tls:\n        ca: " + ca_file_ + "\n"
           "    secrets:\n"
           "      API_TOKEN:\n        from_env: MSB_TEST_API_TOKEN\n        allow: [api.test]\n"
           "      QUERY_KEY:\n        from_file: " + query_file_ + "\n        allow: [api.test]\n"
           "        inject: { headers: false, basic_auth: false, query: true, body: true }\n";
  }

  // Runs a shell script in the guest; its stdout and stderr.
  std::string Guest(const std::string& script) {
    auto r = Msb({"exec", "box", "--", "sh", "-c", "{ " + script + "\n} 2>&1"});
    return r.out + r.err;
  }

  std::string debian_, ca_file_, value_, query_value_, query_file_;
  NamespaceHosts hosts_;
  Dnsmasq dns_;
  std::optional<secrets::CertificateAuthority> ca_;
  std::optional<HttpsServer> api_, other_;
};

TEST_F(SecretsTest, TheValueReachesOnlyTheAllowedHostInAllowedPlacesAndNeverTheGuestOrTheDisk) {
  WriteSandboxfile(Sandboxfile());
  auto up = InProject({"up"});
  ASSERT_EQ(up.code, 0) << up.out << up.err;

  // The guest holds placeholders; its environment, files and /proc hold no value.
  std::string env = Guest("echo \"A=$API_TOKEN Q=$QUERY_KEY\"; echo CA=$SSL_CERT_FILE");
  EXPECT_THAT(env, HasSubstr("A=msb-secret-")) << env;
  EXPECT_THAT(env, HasSubstr("Q=msb-secret-")) << env;
  EXPECT_THAT(env, HasSubstr("CA=/etc/ssl/msb-ca-bundle.pem")) << env;
  std::string placeholder = env.substr(env.find("A=") + 2, env.find(' ', env.find("A=")) - env.find("A=") - 2);
  ASSERT_THAT(placeholder, StartsWith("msb-secret-"));

  // Headers (curl), basic auth (python3's urllib), query (opted in).
  std::string curl = "curl -sS --max-time 30 ";
  std::string out = Guest(curl + "-H \"Authorization: Bearer $API_TOKEN\" https://api.test/bearer; " +
                          "python3 -c \"import os,urllib.request,base64;"
                          "r=urllib.request.Request('https://api.test/basic');"
                          "r.add_header('Authorization','Basic '+base64.b64encode(('u:'+os.environ['API_TOKEN']).encode()).decode());"
                          "print(urllib.request.urlopen(r).read().decode())\"; " +
                          curl + "\"https://api.test/query?key=$QUERY_KEY\"");
  EXPECT_EQ(Count(out, "hello from api.test"), 3u) << out;
  std::string api_got = api_->Received();
  EXPECT_THAT(api_got, HasSubstr("Authorization: Bearer " + value_ + "\r\n")) << api_got;
  EXPECT_THAT(api_got, HasSubstr("Authorization: Basic " + Base64Encode("u:" + value_) + "\r\n")) << api_got;
  EXPECT_THAT(api_got, HasSubstr("GET /query?key=" + query_value_ + " ")) << api_got;
  EXPECT_THAT(api_got, Not(HasSubstr("msb-secret-"))) << api_got;

  // The guest saw the sandbox CA's leaf for api.test, and other.test's own.
  std::string chains = Guest(
      "openssl s_client -connect api.test:443 -servername api.test -showcerts </dev/null | grep -E '^ *i:';"
      "openssl s_client -connect other.test:443 -servername other.test -showcerts </dev/null | grep -E '^ *i:'");
  EXPECT_THAT(chains, HasSubstr("msb sandbox CA")) << chains;
  EXPECT_THAT(chains, HasSubstr("msb test upstream CA")) << chains;

  // Blocked, and nothing of the request upstream: a placeholder where its
  // inject forbids it (API_TOKEN in a query), a Host that is not the SNI, a
  // QUERY_KEY in a header.
  size_t before = api_->Received().size();
  std::string blocked = Guest(curl + "\"https://api.test/nope?t=$API_TOKEN\"; echo; " + curl +
                              "-H 'Host: other.test' -H \"X-K: $API_TOKEN\" https://api.test/host; echo; " + curl +
                              "-H \"X-Q: $QUERY_KEY\" https://api.test/qh");
  EXPECT_EQ(Count(blocked, "msb: "), 3u) << blocked;
  EXPECT_THAT(blocked, Not(HasSubstr("hello from"))) << blocked;
  EXPECT_EQ(api_->Received().size(), before) << api_->Received();

  // Another host is not intercepted: it sees the placeholder, never the value.
  std::string other = Guest("cat > /tmp/upstream-ca.pem <<'EOF'\n" + ca_->CertificatePem() + "EOF\n" + curl +
                            "--cacert /tmp/upstream-ca.pem -H \"Authorization: Bearer $API_TOKEN\" https://other.test/");
  EXPECT_THAT(other, HasSubstr("hello from other.test")) << other;
  EXPECT_THAT(other_->Received(), HasSubstr("Bearer " + placeholder)) << other_->Received();

  // The guest points api.test at other.test's address: not pinned, so the
  // value never goes there (the request is blocked or the handshake fails).
  std::string moved = Guest("cp /etc/hosts /tmp/hosts; echo '" + hosts_.Ip(3) + " api.test' >> /etc/hosts; " +
                            curl + "-H \"Authorization: Bearer $API_TOKEN\" https://api.test/moved; echo rc=$?; " +
                            "cp /tmp/hosts /etc/hosts");
  EXPECT_THAT(moved, Not(HasSubstr("hello from"))) << moved;
  EXPECT_THAT(other_->Received(), Not(HasSubstr(value_)));
  EXPECT_THAT(other_->Received(), Not(HasSubstr("/moved")));

  // Counted per secret in ps --json.
  auto ps = Msb({"ps", "--json"});
  auto j = nlohmann::json::parse(ps.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << ps.out;
  nlohmann::json counts;
  for (const auto& e : j) {
    if (e.value("name", "") == "box") counts = e["net"]["secrets"];
  }
  EXPECT_GE(counts["API_TOKEN"]["substituted"].get<int>(), 2) << counts;
  EXPECT_GE(counts["API_TOKEN"]["blocked"].get<int>(), 2) << counts;
  EXPECT_EQ(counts["QUERY_KEY"]["substituted"], 1) << counts;
  EXPECT_EQ(ps.out.find(value_), std::string::npos);

  // Nowhere in the guest's environment or the files it could reach.
  std::string guest_search = Guest("grep -rl -e '" + value_ + "' -e '" + query_value_ +
                                   "' /etc /root /tmp /var /proc/1/environ /proc/self/environ; echo grep=$?");
  EXPECT_THAT(guest_search, HasSubstr("grep=1")) << guest_search;

  // Nowhere under $MSB_HOME (but the user's own source file in the project
  // directory), nor in the command line or environment of the supervisor,
  // QEMU or virtiofsd.
  for (const std::string& v : {value_, query_value_}) {
    std::vector<std::string> found = FilesContaining(Home(), v);
    std::erase(found, query_file_);
    EXPECT_THAT(found, ::testing::IsEmpty());
    // The sandbox has a supervisor and a QEMU to look into (and no mount,
    // so no virtiofsd); a process that could not be read is no clean one.
    size_t looked_into = 0;
    for (const std::string& what : {"supervisor", "qemu-system", "virtiofsd"}) {
      for (int pid : Mine(what)) {
        ++looked_into;
        for (const std::string& f : {"cmdline", "environ"}) {
          auto data = ReadFile("/proc/" + std::to_string(pid) + "/" + f);
          EXPECT_TRUE(data.ok()) << what << " " << pid << " " << f;
          if (data.ok()) EXPECT_EQ(data->find(v), std::string::npos) << what << " " << f;
        }
      }
    }
    EXPECT_EQ(looked_into, 2u) << "the sandbox's supervisor and QEMU";
  }

  // A new value applies in place: no new VM.
  std::vector<int> qemus = MyQemus();
  std::string value2 = RandomToken("tok2-VALUE-");
  env_["MSB_TEST_API_TOKEN"] = value2;
  auto again = InProject({"up"});
  ASSERT_EQ(again.code, 0) << again.out << again.err;
  EXPECT_THAT(again.out + again.err, HasSubstr("nothing to do"));
  EXPECT_EQ(MyQemus(), qemus);
  std::string fresh = Guest(curl + "-H \"Authorization: Bearer $API_TOKEN\" https://api.test/fresh");
  EXPECT_THAT(fresh, HasSubstr("hello from api.test")) << fresh;
  EXPECT_THAT(api_->Received(), HasSubstr("Authorization: Bearer " + value2 + "\r\n"));
  EXPECT_THAT(FilesContaining(Home(), value2), ::testing::IsEmpty());
}

TEST_F(SecretsTest, AnUnsetSourceFailsUpBeforeAnythingStarts) {
  env_.erase("MSB_TEST_API_TOKEN");
  WriteSandboxfile(Sandboxfile());
  auto up = InProject({"up"});
  EXPECT_NE(up.code, 0);
  EXPECT_THAT(up.err, HasSubstr("sandbox box: secret API_TOKEN: from_env MSB_TEST_API_TOKEN is not set")) << up.err;
  EXPECT_TRUE(MyQemus().empty());
  auto ps = Msb({"ps", "--json"});
  EXPECT_EQ(ps.out.find("\"box\""), std::string::npos) << ps.out;
}

}  // namespace
}  // namespace msb::testing
