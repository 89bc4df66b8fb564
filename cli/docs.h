// msb's command tree as data, and what is generated from it: the bash and zsh
// completion scripts and the man page msb.1. Each is rendered from the CLI11
// definitions the binary itself parses with, so none can drift from them; the
// build writes them (`msb __complete bash|zsh`, `msb __man`, cli/CMakeLists.txt).
// Pure text in, text out: no I/O here.
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace msb::cli {

struct OptionDoc {
  std::vector<std::string> names;  // "-f", "--file": short names first
  std::string value;               // CLI11's type name ("TEXT", "INT"); empty for a flag
  std::string description;
  bool repeatable = false;
};

struct PositionalDoc {
  std::string name;  // as registered: "sandbox", "command"
  std::string description;
  bool required = false;
  bool repeatable = false;
};

// One command: the root (`msb`, empty path) or a visible subcommand. Hidden
// commands (an empty help group: `supervisor`, the generators) are left out.
struct CommandDoc {
  std::vector<std::string> path;  // {"kernel", "build"}
  std::string description;
  std::string group;  // the help group it is listed under ("Project", ...)
  std::vector<OptionDoc> options;
  std::vector<PositionalDoc> positionals;
  std::vector<CommandDoc> subcommands;  // in definition order
};

CommandDoc DescribeCommands(const CLI::App& app);

// "msb kernel build" for {"kernel", "build"}.
std::string CommandLine(const CommandDoc& cmd);

// The positional that names a sandbox: completed with the names
// `msb ps -q` prints, when `ps` has that option.
inline constexpr std::string_view kSandboxPositional = "sandbox";
bool HasQuietPs(const CommandDoc& root);

std::string BashCompletion(const CommandDoc& root);
std::string ZshCompletion(const CommandDoc& root);
// The man page, in groff's man macros; version goes in its header line.
std::string ManPage(const CommandDoc& root, std::string_view version);

}  // namespace msb::cli
