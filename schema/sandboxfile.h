// Loading a Sandboxfile (docs/sandboxfile.md): find the file, substitute
// variables, parse, validate every rule at once, and produce the typed model
// (model.h), its canonical form and the per-sandbox config hash. Starting,
// replacing or stopping anything is the reconciler's job, not this.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "schema/diagnostics.h"
#include "schema/interpolate.h"
#include "schema/model.h"

namespace msb::schema {

inline constexpr const char* kDefaultFileNames[] = {"Sandboxfile", "msb.yaml"};

struct ParseOptions {
  // How messages name the file; empty: the path given to ParseSandboxfile.
  std::string display_name;
  // Whether a bind mount's host source exists. Empty: not checked (fuzzing,
  // property tests). LoadSandboxfile checks the real file system.
  std::function<bool(const std::string& abs_path)> path_exists;
  // Receives every error and warning, sorted by position. May be null.
  Diagnostics* diagnostics = nullptr;
};

// Parses and validates yaml as if read from path (relative host paths are
// resolved against path's directory; a relative path is taken from the
// current directory). env supplies ${VAR}s and HOME for "~/". On failure the
// Error (kInvalidArgument) holds every diagnostic, one per line.
Result<Project> ParseSandboxfile(std::string_view yaml, const std::string& path, const Env& env,
                                 const ParseOptions& options = {});

struct LoadOptions {
  std::string file;  // -f; empty: Sandboxfile, else msb.yaml, in dir
  std::string dir;   // where to look when file is empty; empty: the current directory
  // Variables; null: the process environment over the .env beside the file.
  const Env* env = nullptr;
  Diagnostics* diagnostics = nullptr;  // as in ParseOptions
};

// The file LoadSandboxfile would read (a directory given as file is
// searched like dir). kNotFound names what was tried.
Result<std::string> FindSandboxfile(const LoadOptions& options);

// Finds, reads and parses the Sandboxfile; bind-mount sources must exist.
Result<Project> LoadSandboxfile(const LoadOptions& options);

// The canonical form: sorted keys, every default filled, sizes in bytes,
// durations in milliseconds, host paths absolute. `security` appears only
// when it sets something (its level expanded, never named).
nlohmann::json CanonicalJson(const Project& project);
nlohmann::json CanonicalJson(const Sandbox& sandbox);

// The canonical form as a Sandboxfile that loads back to the same model
// (sizes and durations written with units, every string quoted, '$' as "$$").
std::string CanonicalYaml(const Project& project);

// sha256 (lower-case hex) of the canonical JSON of what shapes the VM: all
// of CanonicalJson(sandbox) but depends_on, restart and healthcheck (secret
// values are never in the model). image_digest, once the image store has
// resolved the reference, is mixed in; empty hashes the reference alone.
std::string ConfigHash(const Sandbox& sandbox, std::string_view image_digest = {});

// The JSON Schema (draft-07) of the file as written, before substitution,
// made from the loader's own key tables (`msb config --schema`,
// docs/sandboxfile.schema.json).
nlohmann::json JsonSchema();

// `msb run --secret`: "VAR=env:HOSTVAR@host1,host2" or "VAR=file:PATH@host"
// (hosts as in a secret's allow list; a relative PATH from cwd), checked as
// the Sandboxfile's secrets are, against the network the sandbox will have.
Result<std::pair<std::string, Secret>> ParseSecretFlag(std::string_view text, const Network& network,
                                                       const std::string& cwd, const std::string& home);

}  // namespace msb::schema
