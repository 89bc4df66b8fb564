// $VAR and ${VAR} substitution and .env parsing (interpolate.h).
#include "schema/interpolate.h"

#include <cctype>

extern char** environ;

namespace msb::schema {
namespace {

constexpr int kMaxDepth = 8;  // nesting of ${...} inside defaults

Error Invalid(std::string message) { return Error(ErrorCode::kInvalidArgument, std::move(message)); }

bool IsNameStart(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool IsNameChar(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

// Index of the '}' closing the "${" that starts at open, or npos.
size_t FindClose(std::string_view text, size_t open) {
  int depth = 0;
  for (size_t i = open; i < text.size(); ++i) {
    if (text[i] == '$' && i + 1 < text.size() && text[i + 1] == '$') {
      ++i;
    } else if (text[i] == '$' && i + 1 < text.size() && text[i + 1] == '{') {
      ++depth;
      ++i;
    } else if (text[i] == '}') {
      if (--depth == 0) return i;
    }
  }
  return std::string_view::npos;
}

Result<std::string> Expand(std::string_view text, const Env& env, std::vector<std::string>* unset,
                           int depth) {
  if (depth > kMaxDepth) return Invalid("${...} nested more than 8 deep");
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    size_t dollar = text.find('$', i);
    if (dollar == std::string_view::npos) {
      out.append(text.substr(i));
      break;
    }
    out.append(text.substr(i, dollar - i));
    char next = dollar + 1 < text.size() ? text[dollar + 1] : '\0';
    if (next == '$') {
      out += '$';
      i = dollar + 2;
      continue;
    }
    if (IsNameStart(next)) {  // $NAME: the longest run of name characters, as ${NAME}
      size_t end = dollar + 1;
      while (end < text.size() && IsNameChar(text[end])) ++end;
      std::string_view name = text.substr(dollar + 1, end - dollar - 1);
      auto it = env.find(name);
      if (it != env.end()) out += it->second;
      else if (unset) unset->push_back(std::string(name));
      i = end;
      continue;
    }
    if (next != '{') {
      out += '$';
      i = dollar + 1;
      continue;
    }
    size_t close = FindClose(text, dollar);
    if (close == std::string_view::npos) {
      return Invalid("unterminated ${ (write $$ for a literal $)");
    }
    std::string_view inner = text.substr(dollar + 2, close - dollar - 2);
    size_t n = 0;
    while (n < inner.size() && IsNameChar(inner[n])) ++n;
    std::string_view name = inner.substr(0, n);
    if (name.empty() || !IsNameStart(name[0])) {
      return Invalid("invalid variable name in ${" + std::string(inner) +
                     "} (expected letters, digits and '_', not starting with a digit)");
    }
    std::string_view op = inner.substr(n);
    bool colon = !op.empty() && op[0] == ':';
    if (colon) op.remove_prefix(1);
    char kind = op.empty() ? '\0' : op[0];
    if (kind != '\0' && kind != '-' && kind != '?' && kind != '+') {
      return Invalid("invalid ${" + std::string(inner) +
                     "}: after the name expected }, :-, -, :?, ?, :+ or +");
    }
    if (colon && kind == '\0') {
      return Invalid("invalid ${" + std::string(inner) + "}: expected -, ? or + after ':'");
    }
    std::string_view word = kind == '\0' ? std::string_view() : op.substr(1);
    auto it = env.find(name);
    bool set = it != env.end();
    bool usable = set && (!colon || !it->second.empty());
    switch (kind) {
      case '\0':
        if (set) out += it->second;
        else if (unset) unset->push_back(std::string(name));
        break;
      case '-':
        if (usable) {
          out += it->second;
        } else {
          auto w = Expand(word, env, unset, depth + 1);
          if (!w.ok()) return w.error();
          out += *w;
        }
        break;
      case '?':
        if (usable) {
          out += it->second;
        } else {
          auto w = Expand(word, env, unset, depth + 1);
          if (!w.ok()) return w.error();
          std::string why = set ? "is empty" : "is not set";
          return Invalid("variable " + std::string(name) + " " + why + (w->empty() ? "" : ": " + *w));
        }
        break;
      case '+':
        if (usable) {
          auto w = Expand(word, env, unset, depth + 1);
          if (!w.ok()) return w.error();
          out += *w;
        }
        break;
    }
    i = close + 1;
  }
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

}  // namespace

Result<std::string> Interpolate(std::string_view text, const Env& env, std::vector<std::string>* unset) {
  if (text.find('$') == std::string_view::npos) return std::string(text);
  return Expand(text, env, unset, 0);
}

Env ParseDotEnv(std::string_view text, const std::string& file, Diagnostics* diags) {
  Env env;
  int line_no = 0;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t nl = text.find('\n', pos);
    std::string_view line = text.substr(pos, nl == std::string_view::npos ? nl : nl - pos);
    pos = nl == std::string_view::npos ? text.size() + 1 : nl + 1;
    ++line_no;
    std::string_view s = Trim(line);
    if (s.empty() || s[0] == '#') continue;
    if (s.substr(0, 7) == "export ") s = Trim(s.substr(7));
    size_t eq = s.find('=');
    std::string_view key = Trim(s.substr(0, eq));
    auto error = [&](const std::string& message) {
      if (diags) diags->Error(file, Pos{line_no, 1}, "", message);
    };
    bool valid_key = !key.empty() && IsNameStart(key[0]);
    for (char c : key) valid_key = valid_key && IsNameChar(c);
    if (eq == std::string_view::npos || !valid_key) {
      error("expected KEY=VALUE with KEY made of letters, digits and '_'");
      continue;
    }
    std::string_view raw = Trim(s.substr(eq + 1));
    std::string value;
    if (!raw.empty() && (raw[0] == '"' || raw[0] == '\'')) {
      char q = raw[0];
      size_t i = 1;
      bool closed = false;
      for (; i < raw.size(); ++i) {
        char c = raw[i];
        if (c == q) {
          closed = true;
          break;
        }
        if (q == '"' && c == '\\' && i + 1 < raw.size()) {
          char e = raw[++i];
          value += e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e;
          continue;
        }
        value += c;
      }
      std::string_view after = Trim(raw.substr(closed ? i + 1 : raw.size()));
      if (!closed || (!after.empty() && after[0] != '#')) {
        error(std::string("value of ") + std::string(key) + ": unterminated or trailing text after quote " + q);
        continue;
      }
    } else {
      size_t hash = raw.find(" #");
      value = std::string(Trim(raw.substr(0, hash)));
    }
    env[std::string(key)] = std::move(value);
  }
  return env;
}

Env ProcessEnv() {
  Env env;
  for (char** e = environ; e && *e; ++e) {
    std::string_view kv(*e);
    size_t eq = kv.find('=');
    if (eq == std::string_view::npos || eq == 0) continue;
    env.emplace(std::string(kv.substr(0, eq)), std::string(kv.substr(eq + 1)));
  }
  return env;
}

}  // namespace msb::schema
