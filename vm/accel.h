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

// "kvm" or "tcg". When auto settles on TCG (probed or cached), says so once
// per process on stderr, with the reason: the isolation then rests on QEMU's
// emulator, not on KVM.
Result<std::string> ChooseAccel(const std::string& kernel, const std::string& qemu);


}  // namespace msb::vm
