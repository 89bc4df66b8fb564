// Variable substitution in Sandboxfile scalar values, and the `.env` file
// that supplies variables beside the process environment (docker compose
// semantics: the environment wins over .env). Not a shell: no commands, no
// word splitting. The loader applies it to every value but the text of
// `scripts` (docs/sandboxfile.md "Variables").
//
//   $VAR             as ${VAR}: VAR is the longest run of [A-Za-z0-9_] after
//                    the $, which starts with a letter or '_'
//   ${VAR}           value, or "" (with a warning) when unset
//   ${VAR:-default}  default when unset or empty   ${VAR-default} when unset
//   ${VAR:?message}  error when unset or empty     ${VAR?message} when unset
//   ${VAR:+other}    other when set and non-empty  ${VAR+other} when set
//   $$               a literal $
//   $ before anything else ("$1", "$ ", a trailing $) is kept as it is.
// Defaults, messages and alternatives may contain ${...} themselves.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "schema/diagnostics.h"

namespace msb::schema {

using Env = std::map<std::string, std::string, std::less<>>;

// Substitutes text. Variables used bare ($VAR, ${VAR}) but unset are
// appended to *unset (may be null) so the caller can warn. Errors:
// ${VAR:?msg} with VAR unset, and malformed ${...}.
Result<std::string> Interpolate(std::string_view text, const Env& env,
                                std::vector<std::string>* unset);

// Parses a .env file: KEY=VALUE lines, '#' comments, optional "export ",
// values optionally in '...' (literal) or "..." (\n \t \\ \" escapes);
// unquoted values end at " #". Bad lines go to diags under file's name.
Env ParseDotEnv(std::string_view text, const std::string& file, Diagnostics* diags);

// The variables of this process (environ).
Env ProcessEnv();

}  // namespace msb::schema
