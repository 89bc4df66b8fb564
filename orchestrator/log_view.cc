// Workload log lines for `msb logs`: see log_view.h.
#include "orchestrator/log_view.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>

namespace msb::orchestrator {
namespace {

// The prefix colours, cycled per sandbox: the normal then the bright
// variants of cyan, yellow, green, magenta and blue (no red: it reads as an
// error).
constexpr const char* kPalette[] = {"36", "33", "32", "35", "34", "96", "93", "92", "95", "94"};
constexpr size_t kPaletteSize = sizeof kPalette / sizeof kPalette[0];

bool IsContinuationByte(char c) { return (static_cast<unsigned char>(c) & 0xc0) == 0x80; }

std::string StringField(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

void LogLineSplitter::Feed(std::string_view records, std::vector<LogLine>* out) {
  size_t pos = 0;
  while (pos < records.size()) {
    size_t nl = records.find('\n', pos);
    std::string_view record = records.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    pos = nl == std::string_view::npos ? records.size() : nl + 1;
    auto j = nlohmann::json::parse(record, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) continue;
    auto data = j.find("data");
    if (data == j.end() || !data->is_string()) continue;
    std::string time = StringField(j, "t");
    if (!since_.empty() && time < since_) continue;
    Take(StringField(j, "stream") == "stderr", time, data->get_ref<const std::string&>(), out);
  }
}

void LogLineSplitter::Take(bool stderr_stream, const std::string& time, std::string_view data,
                           std::vector<LogLine>* out) {
  std::optional<LogLine>& pending = pending_[stderr_stream ? 1 : 0];
  size_t pos = 0;
  while (pos < data.size()) {
    size_t nl = data.find('\n', pos);
    std::string_view piece = data.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    pos = nl == std::string_view::npos ? data.size() : nl + 1;
    if (!pending) pending = LogLine{time, stderr_stream, {}, true};
    pending->text.append(piece);
    pending->time = time;
    // Past the bound: cut, on a character boundary when there is one near.
    while (pending->text.size() > kMaxLogLineBytes) {
      size_t cut = kMaxLogLineBytes;
      for (int back = 0; back < 3 && cut > 1 && IsContinuationByte(pending->text[cut]); ++back) --cut;
      out->push_back(LogLine{time, stderr_stream, pending->text.substr(0, cut), true});
      pending->text.erase(0, cut);
    }
    if (nl == std::string_view::npos) break;
    out->push_back(std::move(*pending));
    pending.reset();
  }
}

void LogLineSplitter::Flush(std::vector<LogLine>* out) {
  for (auto& pending : pending_) {
    if (!pending) continue;
    pending->complete = false;
    out->push_back(std::move(*pending));
    pending.reset();
  }
}

Result<std::optional<size_t>> ParseTail(std::string_view text) {
  if (text == "all") return std::optional<size_t>();
  size_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) {
    return Error(ErrorCode::kInvalidArgument,
                 "--tail " + std::string(text) + ": expected a number of lines (0 or more) or all");
  }
  return std::optional<size_t>(n);
}

void KeepLast(std::vector<LogLine>* lines, size_t n) {
  if (lines->size() <= n) return;
  lines->erase(lines->begin(), lines->end() - static_cast<std::ptrdiff_t>(n));
}

std::vector<SourcedLine> MergeByTime(std::vector<std::vector<LogLine>> sources) {
  std::vector<SourcedLine> merged;
  std::vector<size_t> next(sources.size(), 0);
  for (;;) {
    std::optional<size_t> pick;
    for (size_t s = 0; s < sources.size(); ++s) {
      if (next[s] >= sources[s].size()) continue;
      if (!pick || sources[s][next[s]].time < sources[*pick][next[*pick]].time) pick = s;
    }
    if (!pick) return merged;
    merged.push_back(SourcedLine{*pick, std::move(sources[*pick][next[*pick]++])});
  }
}

bool UseColour(bool stdout_is_tty, bool no_color_flag, const char* no_color_env, const char* term) {
  if (!stdout_is_tty || no_color_flag) return false;
  if (no_color_env != nullptr && *no_color_env != '\0') return false;
  return term == nullptr || std::string_view(term) != "dumb";
}

size_t LogNameWidth(const std::vector<std::string>& names) {
  size_t width = 0;
  for (const auto& n : names) width = std::max(width, n.size());
  return width;
}

std::string LogPrefix(const std::string& name, size_t width, size_t colour_index, bool colour) {
  // docker compose's "%-{width+1}s |": two spaces after the longest name.
  std::string label = name + std::string(width + 2 > name.size() ? width + 2 - name.size() : 2, ' ') + "|";
  if (!colour) return label + " ";
  return std::string("\x1b[") + kPalette[colour_index % kPaletteSize] + "m" + label + "\x1b[0m ";
}

std::string CleanLogText(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c == '\t') {
      out += '\t';
    } else if (c < 0x20) {
      out += '^';
      out += static_cast<char>(c + 0x40);
    } else if (c == 0x7f) {
      out += "^?";
    } else if (c == 0xc2 && i + 1 < text.size() && static_cast<unsigned char>(text[i + 1]) >= 0x80 &&
               static_cast<unsigned char>(text[i + 1]) <= 0x9f) {
      // U+0080-U+009F: the C1 controls in UTF-8 (a CSI among them).
      out += "M-^";
      out += static_cast<char>(static_cast<unsigned char>(text[i + 1]) - 0x80 + 0x40);
      ++i;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string FormatLogLine(const LogFormat& format, const std::string& name, size_t colour_index,
                          const LogLine& line) {
  const bool decorated = format.prefix || format.timestamps;
  std::string s;
  if (format.prefix) s += LogPrefix(name, format.name_width, colour_index, format.colour);
  if (format.timestamps) s += (line.time.empty() ? std::string("-") : CleanLogText(line.time)) + " ";
  s += decorated ? CleanLogText(line.text) : line.text;
  if (decorated || line.complete) s += '\n';
  return s;
}

}  // namespace msb::orchestrator
