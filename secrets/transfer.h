// Secret values on their way from msb to a sandbox's supervisor: read from
// their host source (an environment variable of msb, or a file), encoded for
// one descriptor (the supervisor's inherited stdin at start, the control
// socket on `msb up`), decoded by the supervisor into SecretValues. Never a
// file, never argv, never another process's environment. Not the binding of
// values to hosts (secrets/substitute.h).
//
// The encoding: one line per secret, "NAME BASE64\n", names as the guest's
// variables (letters, digits, '_'), at most kMaxTransferSecrets lines and
// kMaxTransferBytes in all. Text without JSON, so no parser keeps hidden
// copies: the owner of an encoded buffer wipes it (WipeString) once sent or
// decoded.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"
#include "secrets/placeholder.h"

namespace msb::secrets {

inline constexpr size_t kMaxTransferSecrets = 256;
inline constexpr size_t kMaxTransferBytes = kMaxTransferSecrets * ((kMaxSecretBytes + 2) / 3 * 4 + 130);

// Reads one value from its source: source "env" reads msb's own variable
// `from`; "file" reads the file `from` (SecretValue::ReadFile). The error
// says what is wrong with the source (unset, missing, unreadable, empty)
// without the value; the caller names the sandbox and the variable.
Result<SecretValue> ReadSecretSource(std::string_view source, const std::string& from);

// (name, value) pairs to the transfer text. The result holds the values
// (encoded): wipe it after use.
std::string EncodeValues(const std::vector<std::pair<std::string, std::string_view>>& values);

// The transfer text to values by name; rejects anything malformed, a name
// twice, a value over kMaxSecretBytes or more than the limits above.
Result<std::map<std::string, SecretValue>> DecodeValues(std::string_view text);

}  // namespace msb::secrets
