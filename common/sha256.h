// SHA-256 of bytes or of a file, as lowercase hex. Not a streaming API.
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"

namespace msb {

std::string Sha256Hex(std::string_view data);
Result<std::string> Sha256File(const std::string& path);

}  // namespace msb
