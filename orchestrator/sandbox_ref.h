// How a per-sandbox command (exec, logs, stop, ...) finds the sandbox its
// argument names: "NAME" or "PROJECT/NAME". Pure: the records are given, the
// store is not read here, and the record is not observed.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "orchestrator/store.h"

namespace msb::orchestrator {

// "PROJECT/NAME" is that project's sandbox. "NAME" is, in order: the current
// project's sandbox of that name (current_project: the project of the
// current directory's Sandboxfile, or -p; empty for none), else the only
// sandbox of that name in any project (msb run's included). kNotFound when
// there is none; kInvalidArgument when several projects have one and none is
// the current project, listing each as the command to run
// ("msb <command> PROJECT/NAME").
Result<SandboxRecord> ResolveSandboxRef(const std::vector<SandboxRecord>& all, std::string_view ref,
                                        const std::string& current_project,
                                        const std::string& command);

// The shortest reference that ResolveSandboxRef resolves to `record` given
// `current_project`: "NAME" when that finds this very sandbox, else
// "PROJECT/NAME" (what `msb ps -q` prints, for `msb rm` and the others).
std::string ShortestSandboxRef(const std::vector<SandboxRecord>& all, const SandboxRecord& record,
                               const std::string& current_project);

}  // namespace msb::orchestrator
