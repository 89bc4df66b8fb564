// The accelerator choice: MSB_ACCEL=kvm|tcg|auto, and for auto a real boot
// probe under KVM with a deadline whose verdict is cached in
// $MSB_HOME/accel.json (keyed by kernel path and QEMU binary). Opening
// /dev/kvm proves nothing on these machines (docs/design.md "Decisions and
// facts").
#pragma once

#include <cstdint>
#include <string>

#include "common/result.h"

namespace msb::vm {

// "kvm" or "tcg".
Result<std::string> ChooseAccel(const std::string& kernel, const std::string& qemu);


}  // namespace msb::vm
