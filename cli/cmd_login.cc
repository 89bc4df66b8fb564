// msb login REGISTRY / msb logout REGISTRY: credentials for pulling from a
// registry, checked against the registry before they are stored in
// $MSB_HOME/auth.json (mode 0600), or in the credential helper docker's
// config names for the registry. Not the pull itself (image/pull.h).
#include <termios.h>
#include <unistd.h>

#include <fcntl.h>

#include <cstdio>
#include <iostream>
#include <string>

#include "common/fd.h"
#include "image/registry.h"
#include "image/registry_config.h"
#include "cli/cli.h"

namespace msb::cli {
namespace {

// "https://reg.example/" -> "reg.example".
std::string NormaliseRegistry(std::string r) {
  for (const char* p : {"https://", "http://"}) {
    if (r.rfind(p, 0) == 0) r = r.substr(std::string(p).size());
  }
  while (!r.empty() && r.back() == '/') r.pop_back();
  return r;
}

void StripNewline(std::string& s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
}

// Reads one line from the terminal, without echo when asked.
bool PromptTty(const std::string& prompt, bool echo, std::string* out) {
  UniqueFd tty(::open("/dev/tty", O_RDWR | O_CLOEXEC));
  if (!tty) return false;
  (void)!::write(tty.get(), prompt.data(), prompt.size());
  termios old{};
  bool restore = false;
  if (!echo && ::tcgetattr(tty.get(), &old) == 0) {
    termios quiet = old;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    restore = ::tcsetattr(tty.get(), TCSAFLUSH, &quiet) == 0;
  }
  std::string line;
  char c;
  while (line.size() < 4096 && ::read(tty.get(), &c, 1) == 1 && c != '\n') line.push_back(c);
  if (restore) {
    ::tcsetattr(tty.get(), TCSAFLUSH, &old);
    (void)!::write(tty.get(), "\n", 1);
  }
  StripNewline(line);
  *out = line;
  return true;
}

int Login(const std::string& registry_arg, std::string username, bool password_stdin, const RegistryFlags& flags) {
  std::string registry = NormaliseRegistry(registry_arg);
  if (registry.empty() || registry.find('/') != std::string::npos) {
    return Fail("\"" + registry_arg + "\" is not a registry name (HOST or HOST:PORT)");
  }
  std::string password;
  if (password_stdin) {
    if (username.empty()) return Fail("--password-stdin needs --username");
    std::string all((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    StripNewline(all);
    password = all;
  } else {
    if (username.empty() && !PromptTty("Username: ", true, &username)) {
      return Fail("no terminal to ask for the username; pass --username and --password-stdin");
    }
    if (!PromptTty("Password: ", false, &password)) {
      return Fail("no terminal to ask for the password; pipe it with --password-stdin");
    }
  }
  if (username.empty()) return Fail("the username is empty");
  if (password.empty()) return Fail("the password is empty");

  auto config = image::RegistryConfig::LoadDefault();
  if (!config.ok()) return Fail(config.error().message());
  if (auto st = config->ApplyOverrides(flags.insecure, flags.cas); !st.ok()) return Fail(st.error().message());
  image::Credentials creds{username, password};
  image::RegistryClient client(registry, *config, creds);
  if (auto st = client.CheckLogin(); !st.ok()) {
    return Fail("login to " + registry + " failed: " + st.error().message());
  }
  image::CredentialStore store = image::CredentialStore::Default();
  auto where = store.Store(registry, creds);
  if (!where.ok()) return Fail(where.error().message());
  std::cout << "Login succeeded for " << registry << " (credentials in " << *where << ")\n";
  return 0;
}

int Logout(const std::string& registry_arg) {
  std::string registry = NormaliseRegistry(registry_arg);
  image::CredentialStore store = image::CredentialStore::Default();
  auto helper_r = store.HelperFor(registry);
  if (!helper_r.ok()) return Fail(helper_r.error().message());
  std::string helper = *helper_r;
  // Whether docker's auths still has the registry after msb's entry is gone;
  // a helper is erased instead and not asked.
  Result<std::optional<image::Credentials>> had = std::optional<image::Credentials>();
  if (helper.empty()) had = store.Lookup(registry);
  if (auto st = store.Remove(registry); !st.ok()) return Fail(st.error().message());
  std::cout << "Removed the credentials for " << registry << " from " << store.auth_file
            << (!helper.empty() ? " and docker-credential-" + helper : std::string()) << "\n";
  if (helper.empty() && had.ok() && had->has_value()) {
    auto still = store.Lookup(registry);
    if (still.ok() && still->has_value()) {
      std::cout << "Docker's config (" << store.docker_config << ") still has credentials for " << registry
                << "; msb only reads that file\n";
    }
  }
  return 0;
}

}  // namespace

void RegisterLoginCommands(CLI::App& app) {
  auto* login = app.add_subcommand("login", "Store credentials for a registry after checking them against it");
  auto registry = std::make_shared<std::string>();
  auto username = std::make_shared<std::string>();
  auto password_stdin = std::make_shared<bool>(false);
  auto flags = std::make_shared<RegistryFlags>();
  login->add_option("REGISTRY", *registry, "registry HOST or HOST:PORT, as in image references")->required();
  login->add_option("-u,--username", *username, "user name (asked on the terminal when absent)");
  login->add_flag("--password-stdin", *password_stdin, "read the password from standard input");
  AddRegistryFlags(login, flags.get());
  OnRun(login, [=]() { return Login(*registry, *username, *password_stdin, *flags); });

  auto* logout = app.add_subcommand("logout", "Remove msb's stored credentials for a registry");
  auto out_registry = std::make_shared<std::string>();
  logout->add_option("REGISTRY", *out_registry, "registry HOST or HOST:PORT")->required();
  OnRun(logout, [=]() { return Logout(*out_registry); });
}

}  // namespace msb::cli
