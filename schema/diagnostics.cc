// Diagnostic formatting, ordering and typo suggestions.
#include "schema/diagnostics.h"

#include <algorithm>
#include <tuple>

namespace msb::schema {

std::string Diagnostic::ToString() const {
  std::string out = file;
  if (pos.line > 0) {
    out += ':' + std::to_string(pos.line) + ':' + std::to_string(pos.column);
  }
  out += ": ";
  if (!path.empty()) out += path + ": ";
  if (severity == Severity::kWarning) out += "warning: ";
  out += message;
  return out;
}

void Diagnostics::Error(const std::string& file, Pos pos, std::string path, std::string message) {
  items_.push_back({Diagnostic::Severity::kError, file, pos, std::move(path), std::move(message)});
}

void Diagnostics::Warning(const std::string& file, Pos pos, std::string path,
                          std::string message) {
  items_.push_back(
      {Diagnostic::Severity::kWarning, file, pos, std::move(path), std::move(message)});
}

size_t Diagnostics::ErrorCount() const {
  return static_cast<size_t>(std::count_if(items_.begin(), items_.end(), [](const Diagnostic& d) {
    return d.severity == Diagnostic::Severity::kError;
  }));
}

void Diagnostics::Sort() {
  std::stable_sort(items_.begin(), items_.end(), [](const Diagnostic& a, const Diagnostic& b) {
    return std::tie(a.file, a.pos.line, a.pos.column) < std::tie(b.file, b.pos.line, b.pos.column);
  });
}

std::string Diagnostics::ToString() const {
  std::string out;
  for (const Diagnostic& d : items_) {
    out += d.ToString();
    out += '\n';
  }
  return out;
}

int EditDistance(std::string_view a, std::string_view b) {
  const size_t n = a.size(), m = b.size();
  // Three rows suffice for the transposition case.
  std::vector<int> prev2(m + 1), prev(m + 1), cur(m + 1);
  for (size_t j = 0; j <= m; ++j) prev[j] = static_cast<int>(j);
  for (size_t i = 1; i <= n; ++i) {
    cur[0] = static_cast<int>(i);
    for (size_t j = 1; j <= m; ++j) {
      int cost = a[i - 1] == b[j - 1] ? 0 : 1;
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        cur[j] = std::min(cur[j], prev2[j - 2] + 1);
      }
    }
    std::swap(prev2, prev);
    std::swap(prev, cur);
  }
  return prev[m];
}

std::string Suggest(std::string_view word, const std::vector<std::string_view>& candidates) {
  if (word.size() > 64) return "";
  int best = 3;
  std::string_view pick;
  for (std::string_view c : candidates) {
    int d = EditDistance(word, c);
    if (d < best && static_cast<size_t>(d) * 2 < std::max(word.size(), c.size())) {
      best = d;
      pick = c;
    }
  }
  return std::string(pick);
}

std::string DidYouMean(std::string_view word, const std::vector<std::string_view>& candidates) {
  std::string s = Suggest(word, candidates);
  if (s.empty()) return "";
  return "; did you mean \"" + s + "\"?";
}

}  // namespace msb::schema
