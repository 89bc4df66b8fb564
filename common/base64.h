// Base64 (RFC 4648): the encoding of HTTP Basic credentials and of docker's
// config.json "auth" fields. Not streaming.
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"

namespace msb {

// The standard alphabet, with padding.
std::string Base64Encode(std::string_view bytes);
// Lenient, as credentials files are written: the standard or the URL-safe
// alphabet, padding optional; kInvalidArgument on any other byte, data after
// padding or a length no encoder writes.
Result<std::string> Base64Decode(std::string_view text);

}  // namespace msb
