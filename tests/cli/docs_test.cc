// msb --version, the grouped --help, and the completion scripts and man page
// the build writes (build/share/...). The commands and options expected in
// each are read from `msb ... --help`, CLI11's own rendering, not from the
// generator; the scripts are run by bash and parsed by zsh, the man page by
// groff. cli/version.cmake is run against a git checkout and a plain tree.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "common/child.h"
#include "common/io.h"

namespace msb {
namespace {

using ::testing::HasSubstr;

std::string BuildDir() {
  const char* b = std::getenv("MSB_BUILD_DIR");
  return b != nullptr ? b : MSB_TEST_BUILD_DIR;
}
std::string MsbBinary() { return BuildDir() + "/bin/msb"; }
std::string Generated(const std::string& rel) { return BuildDir() + "/share/" + rel; }

// Runs argv; its exit code and stdout with stderr.
RunResult RunCmd(const std::vector<std::string>& argv) {
  auto r = RunCapture(argv, true);
  EXPECT_TRUE(r.ok()) << argv[0] << ": " << (r.ok() ? "" : r.error().message());
  return r.ok() ? *r : RunResult{};
}

std::string Sh(const std::string& script) {
  auto r = RunCmd({"/bin/sh", "-c", script});
  EXPECT_EQ(r.status.code, 0) << script << "\n" << r.output;
  return r.output;
}

// A --help page cut into its sections: header line ("Options:") -> the
// first word of each entry (lines indented by exactly two spaces).
std::map<std::string, std::vector<std::string>> HelpSections(const std::string& help) {
  std::map<std::string, std::vector<std::string>> sections;
  std::string current;
  std::istringstream in(help);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line[0] != ' ' && line.back() == ':') {
      current = line.substr(0, line.size() - 1);
      sections[current];
    } else if (!current.empty() && line.size() > 2 && line.compare(0, 2, "  ") == 0 && line[2] != ' ') {
      sections[current].push_back(line.substr(2, line.find(' ', 2) - 2));
    }
  }
  return sections;
}

// Every command msb --help lists (recursively), as its words after "msb",
// with the option names its own --help lists.
struct Command {
  std::vector<std::string> path;
  std::vector<std::string> options;      // "-f", "--file"
  std::vector<std::string> subcommands;  // the next words
};

std::vector<Command> CommandTree() {
  std::vector<Command> out;
  std::vector<std::vector<std::string>> todo = {{}};
  while (!todo.empty()) {
    Command cmd;
    cmd.path = todo.back();
    todo.pop_back();
    std::vector<std::string> argv = {MsbBinary()};
    argv.insert(argv.end(), cmd.path.begin(), cmd.path.end());
    argv.push_back("--help");
    auto r = RunCmd(argv);
    EXPECT_EQ(r.status.code, 0) << r.output;
    for (const auto& [header, entries] : HelpSections(r.output)) {
      if (header == "Positionals" || header.rfind("Usage", 0) == 0) continue;
      for (const auto& e : entries) {
        if (e[0] == '-') {
          std::istringstream names(e);
          for (std::string n; std::getline(names, n, ',');) cmd.options.push_back(n);
        } else {
          cmd.subcommands.push_back(e);
          auto sub = cmd.path;
          sub.push_back(e);
          todo.push_back(sub);
        }
      }
    }
    out.push_back(std::move(cmd));
  }
  return out;
}

std::string Joined(const std::vector<std::string>& words, const std::string& sep = " ") {
  std::string s;
  for (const auto& w : words) s += (s.empty() ? "" : sep) + w;
  return s;
}

class DocsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { tree_ = new std::vector<Command>(CommandTree()); }
  static void TearDownTestSuite() { delete tree_; }
  // The tests below check each command of the tree in a loop: a walk that
  // found next to nothing would leave them nothing to fail on.
  void SetUp() override {
    ASSERT_GE(tree_->size(), 30u) << "the walk of msb --help found only " << tree_->size() << " commands";
  }
  static std::vector<Command>* tree_;
};
std::vector<Command>* DocsTest::tree_ = nullptr;

TEST_F(DocsTest, TheTreeIsWhatHelpLists) {
  // The walk itself found the nested commands and their options.
  std::set<std::string> paths;
  for (const auto& c : *tree_) paths.insert(Joined(c.path));
  for (const char* p : {"", "up", "run", "exec", "kernel", "kernel build", "image prune", "net check", "version"}) {
    EXPECT_TRUE(paths.count(p)) << p;
  }
  EXPECT_FALSE(paths.count("supervisor"));
  EXPECT_FALSE(paths.count("__complete"));
  EXPECT_FALSE(paths.count("__man"));
  for (const auto& c : *tree_) {
    if (Joined(c.path) == "up") {
      EXPECT_THAT(c.options, ::testing::Contains("--watch"));
    }
  }
}

TEST_F(DocsTest, VersionFlagAndCommandPrintTheProjectVersion) {
  auto flag = RunCmd({MsbBinary(), "--version"});
  auto cmd = RunCmd({MsbBinary(), "version"});
  EXPECT_EQ(flag.status.code, 0);
  EXPECT_EQ(cmd.status.code, 0);
  EXPECT_EQ(flag.output, cmd.output);
  const std::regex want("msb " + std::regex_replace(std::string(MSB_TEST_VERSION), std::regex("\\."), "\\.") +
                        "( \\([A-Za-z0-9._+/-]+\\))?\n");
  EXPECT_TRUE(std::regex_match(flag.output, want)) << flag.output;
}

TEST_F(DocsTest, HelpGroupsTheCommandsByPurpose) {
  auto r = RunCmd({MsbBinary(), "--help"});
  ASSERT_EQ(r.status.code, 0);
  const std::vector<std::pair<std::string, std::vector<std::string>>> want = {
      {"Project", {"plan", "up", "down", "start", "restart", "export", "sync"}},
      {"Sandboxes", {"run", "exec", "shell", "logs", "cp", "stop", "rm", "ps"}},
      {"Images", {"pull", "image", "snapshot", "login", "logout"}},
      {"Other", {"volume", "net", "kernel", "template", "config", "validate", "version"}},
  };
  size_t last = 0;
  auto sections = HelpSections(r.output);
  for (const auto& [group, commands] : want) {
    size_t at = r.output.find("\n" + group + ":\n");
    ASSERT_NE(at, std::string::npos) << group << "\n" << r.output;
    EXPECT_GT(at, last) << group << " is out of order:\n" << r.output;
    last = at;
    for (const auto& c : commands) EXPECT_THAT(sections[group], ::testing::Contains(c)) << group;
  }
  EXPECT_EQ(r.output.find("Subcommands:"), std::string::npos) << r.output;
}

// What _msb offers for `msb WORDS... CUR<TAB>`, one word a line.
std::string BashComplete(const std::vector<std::string>& words, const std::string& cur) {
  std::string script = "set -e; source '" + Generated("bash-completion/completions/msb") +
                       "'; COMP_WORDS=(msb";
  for (const auto& w : words) script += " '" + w + "'";
  script += " '" + cur + "'); COMP_CWORD=" + std::to_string(words.size() + 1) +
            "; _msb; printf '%s\\n' \"${COMPREPLY[@]}\"";
  auto r = RunCmd({"bash", "--norc", "-c", script});
  EXPECT_EQ(r.status.code, 0) << r.output;
  return r.output;
}

std::set<std::string> Lines(const std::string& text) {
  std::set<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) out.insert(l);
  return out;
}

TEST_F(DocsTest, BashCompletesEveryCommandAndOption) {
  const std::string file = Generated("bash-completion/completions/msb");
  auto n = RunCmd({"bash", "-n", file});
  EXPECT_EQ(n.status.code, 0) << n.output;
  EXPECT_EQ(n.output, "");
  for (const auto& c : *tree_) {
    const auto offered_opts = Lines(BashComplete(c.path, "-"));
    for (const auto& o : c.options) EXPECT_TRUE(offered_opts.count(o)) << "msb " << Joined(c.path) << " " << o;
    if (!c.subcommands.empty()) {
      const auto offered = Lines(BashComplete(c.path, ""));
      EXPECT_EQ(offered, std::set<std::string>(c.subcommands.begin(), c.subcommands.end())) << Joined(c.path);
    }
  }
  // Option values are skipped over, not taken for commands or arguments.
  EXPECT_EQ(Lines(BashComplete({}, "ru")), std::set<std::string>{"run"});
  const auto after_value = BashComplete({"up", "-f", "x", "--wait-timeout", "30"}, "--wa");
  EXPECT_EQ(Lines(after_value), (std::set<std::string>{"--wait", "--wait-timeout", "--watch"}));
}

// The body of the zsh function for a command: from "NAME() {" to its "}".
std::string ZshFunctionBody(const std::string& script, const std::vector<std::string>& path) {
  std::string name = "_msb";
  for (const auto& w : path) name += "_" + std::regex_replace(w, std::regex("-"), "_");
  size_t at = script.find("\n" + name + "() {\n");
  if (at == std::string::npos) return "";
  size_t end = script.find("\n}\n", at);
  return script.substr(at, end - at);
}

TEST_F(DocsTest, ZshScriptParsesAndNamesEveryCommandAndOption) {
  const std::string file = Generated("zsh/site-functions/_msb");
  auto n = RunCmd({"zsh", "-n", file});
  EXPECT_EQ(n.status.code, 0) << n.output;
  EXPECT_EQ(n.output, "");
  auto script = ReadFile(file);
  ASSERT_TRUE(script.ok());
  EXPECT_EQ(script->rfind("#compdef msb\n", 0), 0u);
  for (const auto& c : *tree_) {
    const std::string body = ZshFunctionBody(*script, c.path);
    ASSERT_FALSE(body.empty()) << "no zsh function for msb " << Joined(c.path);
    for (const auto& o : c.options) {
      EXPECT_TRUE(std::regex_search(body, std::regex("['(*)]" + o + "[=+]?\\[")))
          << "msb " << Joined(c.path) << " " << o;
    }
    for (const auto& s : c.subcommands) EXPECT_THAT(body, HasSubstr("'" + s + ":")) << Joined(c.path);
  }
}

TEST_F(DocsTest, ManPageRendersWithoutWarningsAndDocumentsEverything) {
  const std::string file = Generated("man/man1/msb.1");
  EXPECT_EQ(Sh("groff -man -Tascii -ww -z '" + file + "' 2>&1"), "");
  EXPECT_EQ(Sh("LC_ALL=C.UTF-8 MANWIDTH=100 man --warnings -l -Tascii '" + file + "' 2>&1 >/dev/null"), "");
  // Wide lines and no hyphenation: every name stays whole on its line.
  const std::string text = Sh("groff -man -Tascii -rLL=200n -rHY=0 -P-cbou '" + file + "'");
  EXPECT_THAT(text, HasSubstr("msb - run untrusted code"));
  // Each command's entry, and each of its options between it and the next.
  for (const auto& c : *tree_) {
    if (c.path.empty()) {
      for (const auto& o : c.options) EXPECT_THAT(text, HasSubstr(o));
      continue;
    }
    const std::regex entry("\n +msb " + Joined(c.path) + "( |\n)");
    std::smatch m;
    ASSERT_TRUE(std::regex_search(text, m, entry)) << "no entry for msb " << Joined(c.path);
    const size_t from = static_cast<size_t>(m.position(0));
    size_t to = text.find("\n       msb ", from + 1);
    const std::string section = text.substr(from, to == std::string::npos ? std::string::npos : to - from);
    for (const auto& o : c.options) {
      if (o == "-h" || o == "--help" || o == "--help-all") continue;  // once, under OPTIONS
      EXPECT_THAT(section, HasSubstr(o)) << "msb " << Joined(c.path);
    }
  }
}

// cli/version.cmake on a source tree: a git checkout gives git describe (and
// -dirty once a file changes); a tree without .git (a tarball) gives only the
// project version. The header is rewritten only when its text changes.
TEST(VersionScriptTest, DescribesAGitCheckoutAndNotAPlainTree) {
  char tmpl[] = "/tmp/msb-version-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const std::string script = std::string(MSB_TEST_SOURCE_DIR) + "/cli/version.cmake";
  auto generate = [&](const std::string& src) {
    Sh(std::string(MSB_TEST_CMAKE) + " -DSOURCE_DIR='" + src + "' -DOUTPUT='" + dir + "/version_info.h' -DVERSION=9.8.7 -P '" +
       script + "' 2>&1");
    auto h = ReadFile(dir + "/version_info.h");
    EXPECT_TRUE(h.ok());
    return h.ok() ? *h : std::string();
  };
  const std::string plain = dir + "/plain", repo = dir + "/repo";
  std::filesystem::create_directories(plain);
  std::filesystem::create_directories(repo);
  auto h = generate(plain);
  EXPECT_THAT(h, HasSubstr("#define MSB_VERSION \"9.8.7\""));
  EXPECT_THAT(h, HasSubstr("#define MSB_GIT_DESCRIBE \"\""));

  const std::string git = "git -C '" + repo + "' -c user.name=t -c user.email=t@example.invalid ";
  Sh(git + "init -q && echo a > '" + repo + "/f' && " + git + "add f && " + git + "commit -q -m one");
  const std::string head = Sh(git + "rev-parse --short HEAD");
  h = generate(repo);
  EXPECT_THAT(h, HasSubstr("#define MSB_GIT_DESCRIBE \"" + head.substr(0, head.size() - 1) + "\""));
  // Unchanged text: the file keeps its (back-dated) time, so nothing rebuilds.
  const auto old_time = std::filesystem::file_time_type::clock::now() - std::chrono::hours(1);
  std::filesystem::last_write_time(dir + "/version_info.h", old_time);
  generate(repo);
  EXPECT_EQ(std::filesystem::last_write_time(dir + "/version_info.h"), old_time);
  Sh("echo b > '" + repo + "/f'");
  h = generate(repo);
  EXPECT_THAT(h, HasSubstr("#define MSB_GIT_DESCRIBE \"" + head.substr(0, head.size() - 1) + "-dirty\""));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace msb
