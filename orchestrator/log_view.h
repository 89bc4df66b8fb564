// How `msb logs` shows a workload's output: the records of a sandbox's
// workload.log cut into lines, the last N of them kept, several sandboxes'
// lines merged in time order, and each line printed with the sandbox's name
// and the time it was recorded when asked. Pure: no files, no clock, no
// terminal; reading and following the logs is cli/cmd_logs.cc's.
//
// A record is one JSON object per line, written by the supervisor
// (vm/supervisor.cc FlushWorkloadOutput): "t", the host's UTC time when the
// supervisor wrote the guest's bytes ("2026-01-02T03:04:05.678Z"); "stream",
// "stdout" or "stderr"; "data", the bytes, JSON-escaped. The guest chooses
// only "data": the time and the stream are the supervisor's, and a line
// printed with a prefix or a time shows the guest's control bytes as visible
// text, so its output can neither end a line early nor move the cursor over
// the name or the time msb printed before it.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace msb::orchestrator {

// A line longer than this is cut into several: what waits for a line's end
// stays bounded however long the guest makes it.
inline constexpr size_t kMaxLogLineBytes = 64 << 10;

// One line of a workload's output, without its '\n'.
struct LogLine {
  // The "t" of the record holding its last byte (when the line was complete):
  // one sandbox's lines come in time order. "" when absent.
  std::string time;
  bool stderr_stream = false;
  std::string text;
  bool complete = true;  // false: the output ends here without a '\n' (Flush)
  bool operator==(const LogLine&) const = default;
};

// Cuts one sandbox's records into lines. The two streams are cut separately:
// a record that does not end its line leaves the rest waiting for the next
// record of the same stream (at most kMaxLogLineBytes). Records that are not
// JSON objects with a string "data", or older than `since` (compared with
// "t" as text: both are UTC ISO 8601), are skipped.
class LogLineSplitter {
 public:
  explicit LogLineSplitter(std::string since = "") : since_(std::move(since)) {}
  // `records`: complete lines of workload.log (vm::LogFollower::Read).
  // Appends the lines they end to *out.
  void Feed(std::string_view records, std::vector<LogLine>* out);
  // Appends what still waits for its line's end, stdout's first, each with
  // complete = false, and forgets it.
  void Flush(std::vector<LogLine>* out);

 private:
  void Take(bool stderr_stream, const std::string& time, std::string_view data, std::vector<LogLine>* out);
  std::string since_;
  std::optional<LogLine> pending_[2];  // stdout, stderr
};

// --tail: "all" (nullopt) or a number of lines, 0 included. Anything else is
// kInvalidArgument saying what is expected.
Result<std::optional<size_t>> ParseTail(std::string_view text);

// Keeps the last n lines (all of them when there are fewer).
void KeepLast(std::vector<LogLine>* lines, size_t n);

// One line and the index of the sandbox it came from.
struct SourcedLine {
  size_t source = 0;
  LogLine line;
};

// Merges the sandboxes' lines (each in the order it was written) into one
// sequence by time: each sandbox's own order is kept; among the next lines
// of all sandboxes the earliest "t" goes first, ties to the lower index.
std::vector<SourcedLine> MergeByTime(std::vector<std::vector<LogLine>> sources);

// The terminal colour decision: colour only when stdout is a terminal, not
// turned off by --no-color or a non-empty $NO_COLOR, and $TERM is not "dumb".
bool UseColour(bool stdout_is_tty, bool no_color_flag, const char* no_color_env, const char* term);

// How lines are printed. With neither prefix nor timestamps a line is the
// guest's text as it was written (and an incomplete last line stays without
// its '\n'); otherwise its control bytes are shown as text (CleanLogText).
struct LogFormat {
  bool prefix = false;      // "web  | " before each line
  bool timestamps = false;  // the line's time before its text
  bool colour = false;      // the prefix in its sandbox's colour
  size_t name_width = 0;    // the longest name (LogNameWidth)
};

// The longest of the names: the prefixes line up on it.
size_t LogNameWidth(const std::vector<std::string>& names);

// "web  | " as docker compose pads it: the name left-aligned in width + 2
// columns (two spaces after the longest), then "| ". With colour, the name and bar in the colour of
// colour_index (a small palette, cycled); uncoloured otherwise.
std::string LogPrefix(const std::string& name, size_t width, size_t colour_index, bool colour);

// The guest's text made safe to print after msb's own: tab kept; other C0
// control bytes and DEL in caret notation ("^M", "^[", "^?"), the C1 control
// characters (U+0080-U+009F) as "M-^@".."M-^_", as `cat -v` shows them.
std::string CleanLogText(std::string_view text);

// A whole printed line: prefix, time, text and its '\n' per `format`.
std::string FormatLogLine(const LogFormat& format, const std::string& name, size_t colour_index,
                          const LogLine& line);

}  // namespace msb::orchestrator
