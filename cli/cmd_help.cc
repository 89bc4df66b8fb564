// How msb presents itself: the help groups of the top-level commands,
// --version and `msb version`, and the hidden generators `msb __complete
// bash|zsh` and `msb __man` that the build runs (cli/docs.h). Not the
// commands' own flags: each cmd_*.cc defines those.
#include <algorithm>
#include <array>
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>

#include "cli/cli.h"
#include "cli/docs.h"

namespace msb::cli {
namespace {

struct HelpGroup {
  std::string_view name;
  std::vector<std::string_view> commands;
};

// The groups of `msb --help`, in this order; a command in none is "Other".
const std::array<HelpGroup, 4>& HelpGroups() {
  static const std::array<HelpGroup, 4> groups = {{
      {"Project", {"plan", "up", "down", "start", "restart", "export", "sync"}},
      {"Sandboxes", {"run", "exec", "shell", "logs", "cp", "stop", "rm", "ps"}},
      {"Images", {"pull", "images", "rmi", "load", "image", "snapshot", "login", "logout"}},
      {"Other", {"volume", "net", "kernel", "template", "config", "validate", "version"}},
  }};
  return groups;
}
constexpr std::string_view kOtherGroup = "Other";

// CLI11's formatter, with the top-level command groups in HelpGroups' order
// (CLI11 orders them by the first command registered in each).
class GroupedFormatter : public CLI::Formatter {
 public:
  std::string make_subcommands(const CLI::App* app, CLI::AppFormatMode mode) const override {
    if (app->get_parent() != nullptr) return CLI::Formatter::make_subcommands(app, mode);
    std::vector<std::string> order;
    for (const auto& g : HelpGroups()) order.emplace_back(g.name);
    for (const CLI::App* sub : app->get_subcommands({})) {
      const std::string& g = sub->get_group();
      if (!sub->get_name().empty() && !g.empty() && std::find(order.begin(), order.end(), g) == order.end()) {
        order.push_back(g);
      }
    }
    std::ostringstream out;
    for (const auto& group : order) {
      auto members = app->get_subcommands(
          [&group](const CLI::App* sub) { return !sub->get_name().empty() && sub->get_group() == group; });
      if (members.empty()) continue;
      out << "\n" << group << ":\n";
      for (const CLI::App* sub : members) {
        if (mode == CLI::AppFormatMode::All) {
          out << sub->help(sub->get_name(), CLI::AppFormatMode::Sub) << "\n";
        } else {
          out << make_subcommand(sub);
        }
      }
    }
    return out.str();
  }
};

void AssignGroups(CLI::App& app) {
  for (CLI::App* sub : app.get_subcommands({})) {
    if (sub->get_name().empty() || sub->get_group().empty()) continue;  // option groups, hidden
    std::string_view group = kOtherGroup;
    for (const auto& g : HelpGroups()) {
      if (std::find(g.commands.begin(), g.commands.end(), sub->get_name()) != g.commands.end()) group = g.name;
    }
    sub->group(std::string(group));
  }
}

// The command tree for the generators, its top-level commands in help order.
CommandDoc DocumentedCommands(const CLI::App& app) {
  CommandDoc root = DescribeCommands(app);
  auto rank = [](const CommandDoc& cmd) {
    const auto& groups = HelpGroups();
    for (size_t i = 0; i < groups.size(); ++i) {
      if (groups[i].name == cmd.group) return i;
    }
    return groups.size();
  };
  std::stable_sort(root.subcommands.begin(), root.subcommands.end(),
                   [&rank](const CommandDoc& a, const CommandDoc& b) { return rank(a) < rank(b); });
  return root;
}

}  // namespace

void RegisterHelpCommands(CLI::App& app) {
  app.set_version_flag("--version", VersionLine(), "Print msb's version and exit");
  CLI::App* version = app.add_subcommand("version", "Print msb's version");
  OnRun(version, []() {
    std::printf("%s\n", VersionLine().c_str());
    return 0;
  });

  // Hidden (empty group): what the build writes into the completion files
  // and the man page.
  CLI::App* complete = app.add_subcommand("__complete", "");
  complete->group("");
  auto shell = std::make_shared<std::string>();
  complete->add_option("shell", *shell, "bash or zsh")->required()->check(CLI::IsMember({"bash", "zsh"}));
  OnRun(complete, [&app, shell]() {
    const CommandDoc root = DocumentedCommands(app);
    std::fputs((*shell == "bash" ? BashCompletion(root) : ZshCompletion(root)).c_str(), stdout);
    return 0;
  });
  CLI::App* man = app.add_subcommand("__man", "");
  man->group("");
  OnRun(man, [&app]() {
    std::fputs(ManPage(DocumentedCommands(app), VersionLine()).c_str(), stdout);
    return 0;
  });

  AssignGroups(app);
  app.formatter(std::make_shared<GroupedFormatter>());
}

}  // namespace msb::cli
