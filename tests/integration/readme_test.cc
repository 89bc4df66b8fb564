// README.md's commands as written. Every `msb ...` of its CLI table has a
// --help of its own that names each flag the table shows, and the quickstart
// block runs line by line against examples/quickstart on a real VM. The
// commands are read from README.md here, so a README naming a command or a
// flag msb does not have fails this test. Not a test of what each command
// does beyond the quickstart: the other tests in this folder do that.
#include <regex>
#include <sstream>

#include "common/child.h"
#include "common/io.h"
#include "tests/integration/harness.h"

namespace msb::testing {
namespace {

using ::testing::ContainsRegex;
using ::testing::HasSubstr;

std::string Readme() {
  auto text = ReadFile(SourceDir() + "/README.md");
  EXPECT_TRUE(text.ok()) << text.error().message();
  return text.ok() ? *text : "";
}

// The body of the section whose heading line is `heading`, up to the next
// "## " heading; "" when there is none.
std::string Section(const std::string& text, const std::string& heading) {
  size_t at = text.find("\n" + heading + "\n");
  if (at == std::string::npos) return "";
  at += heading.size() + 2;
  size_t end = text.find("\n## ", at);
  return text.substr(at, end == std::string::npos ? std::string::npos : end - at);
}

std::vector<std::string> Words(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

// One `msb ...` of the CLI table: "msb volume rm [-p PROJECT] NAME..." is the
// command {volume, rm} with the flag -p.
struct TableCommand {
  std::string text;
  std::vector<std::string> command;
  std::vector<std::string> flags;
};

// Every code span starting with `msb ` in the first cell of the CLI
// reference's table rows.
std::vector<TableCommand> TableCommands(const std::string& readme) {
  static const std::regex span("`(msb [^`]*)`");
  static const std::regex flag("(^|[ \\[])(--?[A-Za-z][A-Za-z0-9-]*)");
  static const std::regex word("[a-z][a-z0-9-]*");
  std::vector<TableCommand> out;
  std::istringstream lines(Section(readme, "## CLI reference"));
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("| `msb ", 0) != 0) continue;
    const std::string cell = line.substr(2, line.find(" | ", 2) - 2);
    for (std::sregex_iterator m(cell.begin(), cell.end(), span), end; m != end; ++m) {
      TableCommand c;
      c.text = (*m)[1];
      std::vector<std::string> words = Words(c.text);
      for (size_t i = 1; i < words.size() && std::regex_match(words[i], word); ++i) {
        c.command.push_back(words[i]);
      }
      for (std::sregex_iterator f(c.text.begin(), c.text.end(), flag); f != end; ++f) {
        c.flags.push_back((*f)[2]);
      }
      out.push_back(std::move(c));
    }
  }
  return out;
}

std::string Join(const std::vector<std::string>& words) {
  std::string s;
  for (const auto& w : words) s += (s.empty() ? "" : " ") + w;
  return s;
}

class ReadmeTest : public MsbTest {};

TEST_F(ReadmeTest, EveryCommandOfTheCliTableHasHelpNamingItsFlags) {
  auto commands = TableCommands(Readme());
  // The table was found and read: it lists far more than this.
  ASSERT_GE(commands.size(), 20u);
  for (const TableCommand& c : commands) {
    ASSERT_FALSE(c.command.empty()) << c.text;
    std::vector<std::string> args = c.command;
    args.push_back("--help");
    auto help = Msb(args, "", 30);
    EXPECT_EQ(help.code, 0) << c.text << "\n" << help.out << help.err;
    // CLI11 answers --help after an unknown word with msb's own help, and
    // exit 0: the usage line tells whose help it is.
    EXPECT_THAT(help.out, HasSubstr("Usage: msb " + Join(c.command) + " ")) << c.text << "\n" << help.out;
    for (const std::string& f : c.flags) {
      EXPECT_THAT(help.out, ContainsRegex("(^|[ ,])" + f + "([ ,=]|$)"))
          << c.text << ": msb " << Join(c.command) << " has no " << f << "\n" << help.out;
    }
  }
}

// The block under "## Quickstart", after what scripts/quickstart does
// (validate, up), each `$msb` line with the msb under test, in
// examples/quickstart as the block's `cd` says.
TEST_F(ReadmeTest, TheQuickstartBlockRunsAsWritten) {
  const std::string src = SourceDir();
  // The quickstart image scripts/setup makes; current already unless busybox
  // changed, and quick to make.
  auto mk = RunCapture({src + "/scripts/make-rootfs", src + "/examples/quickstart/rootfs"});
  ASSERT_TRUE(mk.ok() && mk->status.code == 0) << (mk.ok() ? mk->output : mk.error().message());

  const std::string section = Section(Readme(), "## Quickstart");
  size_t open = section.find("```sh\n");
  ASSERT_NE(open, std::string::npos) << "README.md's Quickstart section has no ```sh block";
  open += 6;
  size_t close = section.find("```", open);
  ASSERT_NE(close, std::string::npos);
  std::istringstream block(section.substr(open, close - open));

  cwd_ = src + "/examples/quickstart";
  auto validate = Msb({"validate"});
  EXPECT_EQ(validate.out, "ok\n") << validate.err;
  auto up = Msb({"up"});
  ASSERT_EQ(up.code, 0) << up.out << up.err;
  ASSERT_EQ(WaitForLogs("hello", "hello from msb"), "hello from msb\n");

  cwd_ = src;
  int ran = 0;
  bool down = false;
  for (std::string line; std::getline(block, line);) {
    const std::string text = line.substr(0, line.find(" #"));
    std::vector<std::string> words = Words(text);
    if (words.empty()) continue;
    if (words[0].rfind("msb=", 0) == 0) continue;  // this test runs the msb it was built with
    if (words[0] == "cd" && words.size() == 2) {
      cwd_ = src + "/" + words[1];
      continue;
    }
    if (words[0] != "$msb" || words.size() < 2) {
      ADD_FAILURE() << "README.md's quickstart block has a line this test cannot run: " << line;
      continue;
    }
    words.erase(words.begin());
    const std::string& sub = words[0];
    bool interactive = false;
    for (const auto& w : words) interactive |= w == "-i" || w == "-it" || w == "-ti";
    auto r = Msb(words, interactive ? "echo quickstart-$((6*7)); exit\n" : "", 60);
    EXPECT_EQ(r.code, 0) << line << "\n" << r.out << r.err;
    if (sub == "ps") {
      EXPECT_THAT(r.out, ContainsRegex("hello +running")) << line;
    } else if (sub == "logs") {
      EXPECT_EQ(r.out, "hello from msb\n") << line;
    } else if (interactive) {
      EXPECT_THAT(r.out, HasSubstr("quickstart-42")) << line;  // the guest's shell did the sum
    } else if (sub == "down") {
      EXPECT_EQ(r.out, "removed hello\n") << line;
      down = true;
    }
    ++ran;
  }
  EXPECT_GE(ran, 1) << "README.md's quickstart block runs no msb command";
  EXPECT_TRUE(down) << "README.md's quickstart block does not end with msb down";
  if (!down) Msb({"down", "-f", src + "/examples/quickstart/Sandboxfile"});
  EXPECT_TRUE(WaitNoProcess(Home(), 20));
}

}  // namespace
}  // namespace msb::testing
