// Errors and warnings about a Sandboxfile, each with file:line:column and the
// key path, collected so that all of them are reported at once; and the
// "did you mean" suggestion for a misspelt word. Not a logging facility.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "schema/model.h"

namespace msb::schema {

struct Diagnostic {
  enum class Severity : int { kError = 0, kWarning = 1 };
  Severity severity = Severity::kError;
  std::string file;  // as the user named it
  Pos pos;           // line 0: no position
  std::string path;  // key path, "sandboxes.web.memory"; may be empty
  std::string message;

  // "Sandboxfile:7:5: sandboxes.web.memroy: unknown key; did you mean \"memory\"?"
  // Warnings put "warning: " before the message.
  std::string ToString() const;
};

class Diagnostics {
 public:
  void Add(Diagnostic d) { items_.push_back(std::move(d)); }
  void Error(const std::string& file, Pos pos, std::string path, std::string message);
  void Warning(const std::string& file, Pos pos, std::string path, std::string message);

  const std::vector<Diagnostic>& items() const { return items_; }
  size_t ErrorCount() const;
  bool HasErrors() const { return ErrorCount() > 0; }
  // Stable order by file, then line and column (file-less positions first).
  void Sort();
  // One diagnostic per line, each line ending in '\n'.
  std::string ToString() const;

 private:
  std::vector<Diagnostic> items_;
};

// Optimal-string-alignment distance (Levenshtein plus adjacent swaps), so
// "memroy" is 1 away from "memory".
int EditDistance(std::string_view a, std::string_view b);

// The candidate closest to word, if close enough to be a likely typo
// (distance <= 2, and less than half the word); empty otherwise.
std::string Suggest(std::string_view word, const std::vector<std::string_view>& candidates);

// "; did you mean \"x\"?" or "" when there is no suggestion.
std::string DidYouMean(std::string_view word, const std::vector<std::string_view>& candidates);

}  // namespace msb::schema
