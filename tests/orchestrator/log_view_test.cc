// Tests of the workload log view (orchestrator/log_view.h): records cut into
// lines per stream, --tail, the merge of several sandboxes by time, the
// prefix and its colour decision, and the guest's control bytes made visible.
#include "orchestrator/log_view.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <ostream>
#include <string>
#include <vector>

namespace msb::orchestrator {

// For gtest's messages: {time, stream, text, complete}.
void PrintTo(const LogLine& l, std::ostream* os) {
  *os << "{" << l.time << ", " << (l.stderr_stream ? "stderr" : "stdout") << ", \"" << l.text << "\""
      << (l.complete ? "" : ", incomplete") << "}";
}

namespace {

// One workload.log record as the supervisor writes it.
std::string Record(const std::string& t, const std::string& stream, const std::string& data) {
  return nlohmann::json{{"t", t}, {"stream", stream}, {"data", data}}.dump() + "\n";
}

LogLine Line(const std::string& t, const std::string& text, bool err = false, bool complete = true) {
  return LogLine{t, err, text, complete};
}

std::vector<LogLine> Split(const std::string& records, const std::string& since = "") {
  LogLineSplitter s(since);
  std::vector<LogLine> out;
  s.Feed(records, &out);
  s.Flush(&out);
  return out;
}

TEST(LogLineSplitterTest, OneRecordOfSeveralLines) {
  EXPECT_EQ(Split(Record("T1", "stdout", "a\nb\n")),
            (std::vector<LogLine>{Line("T1", "a"), Line("T1", "b")}));
}

TEST(LogLineSplitterTest, ALineAcrossRecordsTakesTheTimeOfItsLastByte) {
  LogLineSplitter s;
  std::vector<LogLine> out;
  s.Feed(Record("T1", "stdout", "hel"), &out);
  EXPECT_TRUE(out.empty());
  s.Feed(Record("T2", "stdout", "lo\nwor"), &out);
  EXPECT_EQ(out, (std::vector<LogLine>{Line("T2", "hello")}));
  s.Feed(Record("T3", "stdout", "ld\n"), &out);
  EXPECT_EQ(out, (std::vector<LogLine>{Line("T2", "hello"), Line("T3", "world")}));
}

TEST(LogLineSplitterTest, TheStreamsAreCutSeparately) {
  std::string records = Record("T1", "stdout", "out-") + Record("T2", "stderr", "err\n") +
                        Record("T3", "stdout", "line\n");
  EXPECT_EQ(Split(records),
            (std::vector<LogLine>{Line("T2", "err", true), Line("T3", "out-line")}));
}

TEST(LogLineSplitterTest, FlushGivesWhatWaitsAsIncompleteLines) {
  std::string records = Record("T1", "stderr", "prompt> ") + Record("T2", "stdout", "half");
  EXPECT_EQ(Split(records), (std::vector<LogLine>{Line("T2", "half", false, false),
                                                  Line("T1", "prompt> ", true, false)}));
  // Nothing waits after a flush.
  LogLineSplitter s;
  std::vector<LogLine> out;
  s.Feed(records, &out);
  s.Flush(&out);
  out.clear();
  s.Flush(&out);
  EXPECT_TRUE(out.empty());
}

TEST(LogLineSplitterTest, AnEmptyLineIsALine) {
  EXPECT_EQ(Split(Record("T1", "stdout", "\n\nx\n")),
            (std::vector<LogLine>{Line("T1", ""), Line("T1", ""), Line("T1", "x")}));
}

TEST(LogLineSplitterTest, ALineWithoutEndIsCutAtTheBound) {
  std::string big(kMaxLogLineBytes * 2 + 10, 'x');
  auto lines = Split(Record("T1", "stdout", big) + Record("T2", "stdout", "y\n"));
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0].text.size(), kMaxLogLineBytes);
  EXPECT_EQ(lines[1].text.size(), kMaxLogLineBytes);
  EXPECT_EQ(lines[2].text, std::string(10, 'x') + "y");
  EXPECT_EQ(lines[0].time, "T1");
  EXPECT_EQ(lines[2].time, "T2");
  for (const auto& l : lines) EXPECT_TRUE(l.complete);
}

TEST(LogLineSplitterTest, TheCutKeepsAMultibyteCharacterWhole) {
  // "é" (2 bytes) straddles the bound: it moves to the next line whole.
  std::string text = std::string(kMaxLogLineBytes - 1, 'x') + "\xc3\xa9" + "\n";
  auto lines = Split(Record("T1", "stdout", text));
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].text, std::string(kMaxLogLineBytes - 1, 'x'));
  EXPECT_EQ(lines[1].text, "\xc3\xa9");
}

TEST(LogLineSplitterTest, SkipsWhatIsNotARecordAndWhatIsOlderThanSince) {
  std::string records = "not json\n" + std::string("[1,2]\n") + "{\"t\":\"T1\",\"data\":5}\n" +
                        "{\"t\":7,\"stream\":[],\"data\":\"kept\\n\"}\n" +
                        Record("2026-01-01T00:00:00.000Z", "stdout", "old\n") +
                        Record("2026-01-01T00:10:00.000Z", "stdout", "new\n");
  auto lines = Split(records, "2026-01-01T00:05:00");
  // The record without a string "t" sorts before any `since`: dropped too.
  EXPECT_EQ(lines, (std::vector<LogLine>{Line("2026-01-01T00:10:00.000Z", "new")}));
  auto all = Split(records);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0], Line("", "kept"));
}

TEST(LogTailTest, ParseTail) {
  ASSERT_TRUE(ParseTail("all").ok());
  EXPECT_FALSE(ParseTail("all")->has_value());
  ASSERT_TRUE(ParseTail("0").ok() && ParseTail("0")->has_value());
  EXPECT_EQ(**ParseTail("0"), 0u);
  ASSERT_TRUE(ParseTail("25").ok() && ParseTail("25")->has_value());
  EXPECT_EQ(**ParseTail("25"), 25u);
  for (const char* bad : {"", "-1", "ten", "5x", " 5"}) {
    auto r = ParseTail(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().message(),
              "--tail " + std::string(bad) + ": expected a number of lines (0 or more) or all");
  }
}

TEST(LogTailTest, KeepLast) {
  std::vector<LogLine> lines = {Line("1", "a"), Line("2", "b"), Line("3", "c")};
  auto two = lines;
  KeepLast(&two, 2);
  EXPECT_EQ(two, (std::vector<LogLine>{Line("2", "b"), Line("3", "c")}));
  auto many = lines;
  KeepLast(&many, 10);
  EXPECT_EQ(many, lines);
  auto none = lines;
  KeepLast(&none, 0);
  EXPECT_TRUE(none.empty());
}

TEST(LogMergeTest, EarliestFirstEachSandboxInItsOwnOrderTiesToTheLowerIndex) {
  std::vector<std::vector<LogLine>> sources = {
      {Line("T1", "a1"), Line("T3", "a3"), Line("T3", "a3b")},
      {Line("T2", "b2"), Line("T3", "b3")},
      // Out of order within a source (a clock stepped back): its order stays.
      {Line("T4", "c4"), Line("T0", "c0")},
  };
  std::vector<std::string> got;
  for (const auto& l : MergeByTime(sources)) got.push_back(std::to_string(l.source) + ":" + l.line.text);
  EXPECT_EQ(got, (std::vector<std::string>{"0:a1", "1:b2", "0:a3", "0:a3b", "1:b3", "2:c4", "2:c0"}));
  EXPECT_TRUE(MergeByTime({}).empty());
}

TEST(LogColourTest, OnlyOnATerminalAndNotTurnedOff) {
  EXPECT_TRUE(UseColour(true, false, nullptr, "xterm-256color"));
  EXPECT_TRUE(UseColour(true, false, "", nullptr));
  EXPECT_FALSE(UseColour(false, false, nullptr, "xterm"));  // a pipe or a file
  EXPECT_FALSE(UseColour(true, true, nullptr, "xterm"));    // --no-color
  EXPECT_FALSE(UseColour(true, false, "1", "xterm"));       // NO_COLOR=1
  EXPECT_FALSE(UseColour(true, false, nullptr, "dumb"));
}

TEST(LogPrefixTest, PaddedLikeComposeAndColouredPerSandbox) {
  std::vector<std::string> names = {"web", "db", "worker"};
  size_t w = LogNameWidth(names);
  EXPECT_EQ(w, 6u);
  EXPECT_EQ(LogPrefix("web", w, 0, false), "web     | ");
  EXPECT_EQ(LogPrefix("worker", w, 2, false), "worker  | ");
  EXPECT_EQ(LogPrefix("web", 3, 0, false), "web  | ");
  EXPECT_EQ(LogPrefix("web", w, 0, true), "\x1b[36mweb     |\x1b[0m ");
  EXPECT_EQ(LogPrefix("db", w, 1, true), "\x1b[33mdb      |\x1b[0m ");
  // The palette cycles: two sandboxes ten apart share a colour, neighbours never.
  EXPECT_EQ(LogPrefix("a", 1, 10, true), LogPrefix("a", 1, 0, true));
  EXPECT_NE(LogPrefix("a", 1, 1, true), LogPrefix("a", 1, 0, true));
}

TEST(LogFormatTest, ControlBytesAreShownNotObeyed) {
  EXPECT_EQ(CleanLogText("plain\ttext é"), "plain\ttext é");
  EXPECT_EQ(CleanLogText("a\rb\x1b[2Kc\x7f"), "a^Mb^[[2Kc^?");
  EXPECT_EQ(CleanLogText(std::string("nul\0!", 5)), "nul^@!");
  EXPECT_EQ(CleanLogText("csi\xc2\x9b" "1G"), "csiM-^[1G");
  EXPECT_EQ(CleanLogText("latin \xc2\xa0 nbsp"), "latin \xc2\xa0 nbsp");
}

TEST(LogFormatTest, WholeLines) {
  LogFormat raw;
  EXPECT_EQ(FormatLogLine(raw, "web", 0, Line("T", "a\rb")), "a\rb\n");
  EXPECT_EQ(FormatLogLine(raw, "web", 0, Line("T", "prompt> ", false, false)), "prompt> ");

  LogFormat prefixed;
  prefixed.prefix = true;
  prefixed.name_width = 4;
  EXPECT_EQ(FormatLogLine(prefixed, "web", 0, Line("T", "a\rb")), "web   | a^Mb\n");
  // An incomplete last line still ends: the next prefix starts its own line.
  EXPECT_EQ(FormatLogLine(prefixed, "web", 0, Line("T", "prompt> ", false, false)), "web   | prompt> \n");

  LogFormat timed;
  timed.timestamps = true;
  EXPECT_EQ(FormatLogLine(timed, "web", 0, Line("2026-01-02T03:04:05.678Z", "hi")),
            "2026-01-02T03:04:05.678Z hi\n");
  EXPECT_EQ(FormatLogLine(timed, "web", 0, Line("", "hi")), "- hi\n");

  LogFormat both = prefixed;
  both.timestamps = true;
  both.colour = true;
  EXPECT_EQ(FormatLogLine(both, "db", 1, Line("2026-01-02T03:04:05.678Z", "up")),
            "\x1b[33mdb    |\x1b[0m 2026-01-02T03:04:05.678Z up\n");
}

}  // namespace
}  // namespace msb::orchestrator
